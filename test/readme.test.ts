/** The README's code is the examples that the type check covers, not copies that can drift. */
import { assert, describe, it } from "@effect/vitest"
import { readFileSync } from "node:fs"

const read = (path: string) => readFileSync(new URL(`../${path}`, import.meta.url), "utf8")

describe("README", () => {
  for (const example of [
    "quickstart.ts",
    "echoServer.ts",
    "shutdown.ts",
    "proxy.ts",
    "mux.ts",
    "subprocess.ts",
    "property.ts",
    "conformance.ts",
    "leakCheck.ts"
  ]) {
    it(`shows examples/${example} verbatim`, () => {
      const source = read(`examples/${example}`)
      const code = source.slice(source.indexOf("import ")).trimEnd()
      assert.include(read("README.md"), "```ts\n" + code + "\n```")
    })
  }

  it("gives the set-up commands that .ci/run runs", () => {
    const readme = read("README.md")
    assert.include(readme, "npm ci && npm test")
    assert.include(readme, "npm ci && npm run demo")
    assert.match(read(".ci/run"), /\nnpm ci && npm test\n/)
  })
})
