// Builds the web console into dist/console (npm run build, and bin/prepare.js at install): Vite
// bundles web/ (React, hashed file names), then .gz and .br are written beside every compressible
// file (the server sends them as they are, src/server/console/static.ts) and the compressed
// JavaScript's size is printed, failing the build over the budget issue 21 sets (400 KB).
import { readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { brotliCompressSync, constants, gzipSync } from "node:zlib";
import { build } from "vite";

const DIR = join(import.meta.dirname, "..", "dist", "console");
const BUDGET = 400 * 1024;

await build({ configFile: join(import.meta.dirname, "vite.config.ts"), logLevel: "warn" });

let jsGzip = 0;
let jsBrotli = 0;
const walk = (d) => {
  for (const e of readdirSync(d)) {
    const path = join(d, e);
    if (statSync(path).isDirectory()) walk(path);
    else if (/\.(js|css|html|svg|json)$/.test(e)) {
      const body = readFileSync(path);
      const gz = gzipSync(body, { level: 9 });
      const br = brotliCompressSync(body, { params: { [constants.BROTLI_PARAM_QUALITY]: 11 } });
      writeFileSync(`${path}.gz`, gz);
      writeFileSync(`${path}.br`, br);
      if (e.endsWith(".js")) {
        jsGzip += gz.length;
        jsBrotli += br.length;
      }
    }
  }
};
walk(DIR);
const kb = (n) => `${(n / 1024).toFixed(1)} KB`;
console.log(
  `loom: web console built in dist/console: JavaScript ${kb(jsGzip)} gzip, ${kb(jsBrotli)} brotli (budget ${kb(BUDGET)})`,
);
if (jsGzip > BUDGET) {
  console.error(
    "loom: the console's compressed JavaScript is over its 400 KB budget: split or drop a dependency",
  );
  process.exit(1);
}
