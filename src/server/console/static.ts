import { existsSync, readdirSync, readFileSync } from "node:fs";
import { extname, join, relative, sep } from "node:path";

/** One file of the built console, with its precompressed forms where the build made them. */
export interface Asset {
  body: Buffer;
  gzip?: Buffer;
  br?: Buffer;
  type: string;
  /** Hashed file names never change content: cached for a year; index.html is checked each time. */
  immutable: boolean;
}

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".json": "application/json",
  ".txt": "text/plain; charset=utf-8",
};

/**
 * The console's security headers: scripts and styles only from this origin (no inline script;
 * React sets styles through the CSSOM, which CSP allows), no framing, no referrer.
 */
export const SECURITY_HEADERS: Record<string, string> = {
  "content-security-policy":
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
    "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
  "x-frame-options": "DENY",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "cross-origin-opener-policy": "same-origin",
};

/**
 * Reads the built console (dist/console: index.html and assets/, with .gz and .br beside each
 * compressible file) into memory, keyed by URL path. Empty when it was not built.
 */
export function loadAssets(dir: string): Map<string, Asset> {
  const out = new Map<string, Asset>();
  if (!existsSync(dir)) return out;
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const path = join(d, e.name);
      if (e.isDirectory()) walk(path);
      else if (!e.name.endsWith(".gz") && !e.name.endsWith(".br")) {
        const url = `/${relative(dir, path).split(sep).join("/")}`;
        const asset: Asset = {
          body: readFileSync(path),
          type: TYPES[extname(e.name)] ?? "application/octet-stream",
          immutable: url.startsWith("/assets/"),
        };
        if (existsSync(`${path}.gz`)) asset.gzip = readFileSync(`${path}.gz`);
        if (existsSync(`${path}.br`)) asset.br = readFileSync(`${path}.br`);
        out.set(url, asset);
      }
    }
  };
  walk(dir);
  return out;
}

/** The best encoding of an asset the client accepts: brotli, then gzip, then none. */
export function pickEncoding(asset: Asset, accept: string | undefined): { body: Buffer; encoding?: string } {
  const accepts = (name: string) =>
    (accept ?? "")
      .split(",")
      .map((s) => s.trim().split(";"))
      .some(([n, ...params]) => n === name && !params.some((p) => p.trim() === "q=0"));
  if (asset.br && accepts("br")) return { body: asset.br, encoding: "br" };
  if (asset.gzip && accepts("gzip")) return { body: asset.gzip, encoding: "gzip" };
  return { body: asset.body };
}

/** What / serves when the console was not built (a checkout run from source without npm run build). */
export const NOT_BUILT =
  "<!doctype html><title>Loom</title><p>The web console is not built: run <code>npm run build</code> " +
  "in Loom's checkout, then restart <code>loom up</code>. The API is up.</p>";
