import { defineConfig } from "tsup"

/**
 * Source maps point into the package's own `src/` (shipped beside `dist/`) and do not embed it again: the
 * sources are in the package once, not three times (src/, the ESM maps, the CJS maps).
 */
const mapsWithoutSources = (options: { sourcesContent?: boolean | undefined }): void => {
  options.sourcesContent = false
}

// JavaScript only: declarations come from `tsc -p tsconfig.build.json`, one file per module, so that a
// user's compiler can name every public type through the package's subpath exports.
export default defineConfig([
  {
    entry: {
      index: "src/index.ts",
      Duplex: "src/Duplex.ts",
      DuplexError: "src/DuplexError.ts",
      Close: "src/Close.ts",
      Echo: "src/Echo.ts",
      Framing: "src/Framing.ts",
      Mux: "src/Mux.ts",
      Proxy: "src/Proxy.ts",
      Shutdown: "src/Shutdown.ts",
      Subprocess: "src/Subprocess.ts",
      Tcp: "src/Tcp.ts",
      Watchdog: "src/Watchdog.ts",
      testkit: "src/testkit.ts"
    },
    format: ["esm", "cjs"],
    dts: false,
    sourcemap: true,
    esbuildOptions: mapsWithoutSources,
    // The command-line tool is built beside, at the same time: leave its files alone.
    clean: ["!cli.js", "!cli.js.map"],
    target: "node22",
    splitting: true,
    treeshake: true,
    // The testkit imports the main entry by the package's own name, so both share one copy of it.
    external: ["fullduplex"]
  },
  {
    // The `fullduplex` bin: ESM only, its `#!/usr/bin/env node` kept from src/cli.ts (and made executable).
    // It imports the library by the package's name too, so it runs on the one copy of it in dist/.
    entry: { cli: "src/cli.ts" },
    format: ["esm"],
    dts: false,
    sourcemap: true,
    esbuildOptions: mapsWithoutSources,
    clean: false,
    target: "node22",
    splitting: false,
    treeshake: true,
    external: ["fullduplex"]
  }
])
