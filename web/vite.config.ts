import { defineConfig } from "vite";

// The gateway serves dist/ at / (index.html) and /assets/ (hashed files). The page's CSP
// allows this origin's scripts and styles only, so nothing may be inlined.
export default defineConfig({
  base: "/",
  build: {
    outDir: "dist",
    assetsDir: "assets",
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    sourcemap: false,
    emptyOutDir: true,
  },
});
