import { resolve } from "node:path";
import { defineConfig } from "vite";

// The console is built into dist/console, which `loom up` serves at / (src/server/console/).
export default defineConfig({
  root: import.meta.dirname,
  base: "/",
  // No CDN, no inline code: everything comes from the control origin under a strict CSP.
  build: {
    outDir: resolve(import.meta.dirname, "../dist/console"),
    emptyOutDir: true,
    modulePreload: { polyfill: false },
    sourcemap: false,
    assetsInlineLimit: 0,
    reportCompressedSize: false,
  },
});
