/**
 * Every `ts` example in the JSDoc of `src/` compiles against the package's public entry points, so the
 * documentation cannot drift from the API. Examples are written to `.doc-examples/` (ignored by git),
 * one module each, and type-checked with the repository's strict settings (unused names allowed).
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { execa } from "execa"
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { join, relative } from "node:path"
import { fileURLToPath } from "node:url"

const root = fileURLToPath(new URL("..", import.meta.url))

const sources = (dir: string): Array<string> =>
  readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name)
    return entry.isDirectory() ? sources(path) : path.endsWith(".ts") ? [path] : []
  })

/** The ```ts blocks inside the JSDoc comments of one file, with the comment's ` * ` margin removed. */
const examples = (file: string): Array<string> => {
  const blocks: Array<string> = []
  let current: Array<string> | undefined
  for (const line of readFileSync(file, "utf8").split("\n")) {
    const text = line.replace(/^\s*\* ?/, "")
    if (current === undefined && /^\s*\*\s*```ts\s*$/.test(line)) current = []
    else if (current !== undefined && /^\s*\*\s*```\s*$/.test(line)) {
      blocks.push(current.join("\n"))
      current = undefined
    } else current?.push(text)
  }
  return blocks
}

describe("documentation", () => {
  it.live(
    "every JSDoc example in src/ type-checks",
    () =>
      Effect.gen(function* () {
        const out = join(root, ".doc-examples")
        rmSync(out, { recursive: true, force: true })
        mkdirSync(out)
        yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(out, { recursive: true, force: true })))
        let count = 0
        for (const file of sources(join(root, "src"))) {
          examples(file).forEach((code, i) => {
            const name = `${relative(join(root, "src"), file).replace(/[/.]/g, "_")}_${i}.ts`
            writeFileSync(join(out, name), `// from ${relative(root, file)}\n${code}\nexport {}\n`)
            count++
          })
        }
        assert.isAbove(count, 20, "the extraction found too few examples")
        writeFileSync(
          join(out, "tsconfig.json"),
          JSON.stringify({
            extends: "../tsconfig.json",
            compilerOptions: { noUnusedLocals: false, noUnusedParameters: false },
            include: ["*.ts"]
          })
        )
        const tsc = yield* Effect.promise(() =>
          execa("node", [join(root, "node_modules", "typescript", "bin", "tsc"), "-p", out], {
            reject: false,
            all: true
          })
        )
        assert.strictEqual(tsc.exitCode, 0, tsc.all)
      }),
    120_000
  )
})
