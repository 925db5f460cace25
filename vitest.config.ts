import { fileURLToPath } from "node:url"
import { defineConfig } from "vitest/config"

const src = fileURLToPath(new URL("./src/", import.meta.url))

export default defineConfig({
  resolve: {
    // The package's own name resolves to its sources, as tsconfig's `paths` does for the type check.
    alias: [
      { find: /^fullduplex\/(.+)$/, replacement: `${src}$1.ts` },
      { find: /^fullduplex$/, replacement: `${src}index.ts` }
    ]
  },
  test: {
    include: ["test/**/*.test.ts"],
    reporters: ["default", "./test/summaryReporter.ts"],
    testTimeout: 60_000,
    hookTimeout: 30_000
  }
})
