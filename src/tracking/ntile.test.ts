import Database from "better-sqlite3";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ntileFirsts } from "./metrics.js";

/** ntileFirsts picks exactly the rows the SQL (NTILE) form of get-history-bulk-interval picked. */
describe("ntileFirsts", () => {
  it("matches SQLite's NTILE for any number of values and buckets", () => {
    const db = new Database(":memory:");
    db.exec("create table t (pos integer)");
    const insert = db.prepare("insert into t values (?)");
    const pick = db.prepare(`select pos from (
        select b.*, row_number() over (partition by b.bucket order by b.pos) as rn from (
          select pos, count(*) over () as n, ntile(?) over (order by pos) as bucket from t) b) s
      where s.pos = s.n or (s.rn = 1 and s.bucket < s.n and s.bucket < ?) order by pos`);
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 600 }), fc.integer({ min: 1, max: 120 }), (n, max) => {
        db.exec("delete from t");
        for (let i = 1; i <= n; i++) insert.run(i);
        const sql = (pick.all(max, max) as { pos: number }[]).map((r) => r.pos);
        const js = ntileFirsts(
          Array.from({ length: n }, (_, i) => i + 1),
          max,
        );
        expect(js).toEqual(sql);
      }),
      { numRuns: 200 },
    );
    db.close();
  });
});
