import { spawnSync } from "node:child_process";
import {
  cpSync,
  mkdirSync,
  mkdtempSync,
  rmSync,
  statSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, describe, expect, it } from "vitest";

/**
 * Start-up never compiles: bin/loom.js runs dist/ as it is, and package.json's prepare (which npx
 * runs again when it links a clone into its cache, the first `npx loom` there) compiles only at
 * install and only when dist/ is missing or older than src/. Each case runs in a scratch package
 * with the real bin/ scripts and a one-file "CLI", so nothing here touches the worktree's dist/.
 */

const repo = resolve(import.meta.dirname, "..");
const scratch = mkdtempSync(join(tmpdir(), "loom-startup-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** A package named loom whose prepare is the real one; its "CLI" prints its argv. */
function makePackage(name: string): string {
  const root = join(scratch, name);
  mkdirSync(join(root, "src", "cli"), { recursive: true });
  cpSync(join(repo, "bin"), join(root, "bin"), { recursive: true });
  symlinkSync(join(repo, "node_modules"), join(root, "node_modules"));
  writeFileSync(
    join(root, "package.json"),
    JSON.stringify({
      name: "loom",
      version: "0.0.0",
      type: "module",
      private: true,
      bin: { loom: "bin/loom.js" },
      scripts: { prepare: "node bin/prepare.js" },
    }),
  );
  writeFileSync(
    join(root, "tsconfig.json"),
    JSON.stringify({
      compilerOptions: { module: "NodeNext", target: "ES2022", outDir: "dist", rootDir: "src", types: [] },
      include: ["src/**/*.ts"],
    }),
  );
  writeFileSync(
    join(root, "src", "cli", "main.ts"),
    'export async function main(argv: string[]): Promise<void> {\n  console.log("cli", argv.slice(2).join(" "));\n}\n',
  );
  return root;
}

function run(root: string, cmd: string, args: string[], env: Record<string, string> = {}) {
  const r = spawnSync(cmd, args, {
    cwd: root,
    encoding: "utf8",
    timeout: 240_000,
    env: { ...process.env, npm_command: "", ...env },
  });
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

const built = (root: string) => statSync(join(root, "dist", "cli", "main.js")).mtimeMs;

/** Makes dist/ older than src/, as a git pull or an edit would. */
function ageDist(root: string): void {
  const past = new Date(Date.now() - 3600_000);
  utimesSync(join(root, "dist", "cli", "main.js"), past, past);
}

describe("start-up never compiles what install compiled", () => {
  const root = makePackage("pkg");

  it("bin/loom.js without dist/ exits saying how to build, instead of compiling", () => {
    const r = run(root, process.execPath, ["bin/loom.js", "version"]);
    expect(r.code).toBe(1);
    expect(r.out).toContain(`loom: not built yet (${join(root, "dist", "cli", "main.js")} is missing)`);
    expect(r.out).toContain(`cd ${root} && npm run build`);
  });

  it("prepare at install compiles once, saying so; again only when a source changed", () => {
    const first = run(root, process.execPath, ["bin/prepare.js"], { npm_command: "ci" });
    expect(first.code, first.out).toBe(0);
    expect(first.out).toMatch(/^loom: compiling TypeScript \(src\/ -> dist\/\) with tsc; about a minute/);
    expect(run(root, process.execPath, ["bin/loom.js", "version"])).toEqual({
      code: 0,
      out: "cli version\n",
    });
    const at = built(root);
    const again = run(root, process.execPath, ["bin/prepare.js"], { npm_command: "install" });
    expect(again.out).toBe(
      "loom: dist/ is up to date with src/; not compiling again (npm run build forces it)\n",
    );
    expect(built(root)).toBe(at);
  }, 240_000);

  it("a stale dist/ runs as it is, with a warning; npx's prepare (npm exec) leaves it alone", () => {
    ageDist(root);
    const at = built(root);
    const r = run(root, process.execPath, ["bin/loom.js", "up"]);
    expect(r.code).toBe(0);
    expect(r.out).toContain("cli up\n");
    expect(r.out).toContain(
      "loom: warning: src/ changed since dist/ was built; running the old build (npm run build updates it)\n",
    );
    expect(run(root, process.execPath, ["bin/prepare.js"], { npm_command: "exec" })).toEqual({
      code: 0,
      out: "",
    });
    expect(built(root)).toBe(at);
  });

  it("the first `npx loom` in a clone (npx links it into a fresh cache and runs prepare) does not compile", () => {
    const at = built(root);
    const cache = join(scratch, "npm-cache");
    const r = run(root, "npx", ["--yes", "loom", "status"], {
      npm_config_cache: cache,
      npm_config_foreground_scripts: "true",
      npm_config_update_notifier: "false",
    });
    expect(r.out).toContain("cli status");
    expect(r.out).not.toContain("compiling");
    expect(built(root)).toBe(at);
  }, 240_000);
});
