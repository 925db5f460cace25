/**
 * The API reference is complete and cannot drift from the API: every export of every entry point in
 * package.json's `exports` has a summary and an example in its JSDoc, and every `ts` example in the JSDoc of
 * `src/` compiles against the package's public entry points. Examples are written to `.doc-examples/`
 * (ignored by git), one module each, and type-checked with the repository's strict settings (unused names
 * allowed).
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { execa } from "execa"
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { join, relative } from "node:path"
import { fileURLToPath } from "node:url"
import ts from "typescript"

const root = fileURLToPath(new URL("..", import.meta.url))

/** The source file of each entry point in package.json's `exports` (`./dist/Duplex.js` is `src/Duplex.ts`). */
const entryPoints = (): Array<string> => {
  const { exports } = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as {
    exports: Record<string, string | { import: string }>
  }
  return Object.values(exports).flatMap((target) =>
    typeof target === "string" ? [] : [join(root, target.import.replace(/^\.\/dist\//, "src/").replace(/\.js$/, ".ts"))]
  )
}

/**
 * The exports of the entry points whose JSDoc lacks a summary or a ```ts example, as `entry: name (what is
 * missing)`. The root's `export * as X` namespaces are entry points of their own (`fullduplex/X`), checked
 * there; they need a summary only.
 */
const undocumented = (): Array<string> => {
  const entries = entryPoints()
  const program = ts.createProgram(entries, {
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    target: ts.ScriptTarget.ES2022,
    strict: true,
    skipLibCheck: true,
    noEmit: true,
    types: ["node"]
  })
  const checker = program.getTypeChecker()
  const missing: Array<string> = []
  for (const entry of entries) {
    const moduleSymbol = checker.getSymbolAtLocation(program.getSourceFile(entry)!)!
    for (const exported of checker.getExportsOfModule(moduleSymbol)) {
      const isNamespace = (exported.declarations ?? []).some(ts.isNamespaceExport)
      const symbol =
        exported.flags & ts.SymbolFlags.Alias && !isNamespace ? checker.getAliasedSymbol(exported) : exported
      // The JSDoc of `export * as X from` belongs to the export declaration, not to its `* as X`.
      const documented = (declaration: ts.Declaration): ts.Node =>
        ts.isNamespaceExport(declaration) ? declaration.parent : declaration
      const docs = (symbol.declarations ?? []).flatMap((declaration) =>
        ts
          .getJSDocCommentsAndTags(documented(declaration))
          .filter(ts.isJSDoc)
          .map((doc) => ({ doc, text: declaration.getSourceFile().text.slice(doc.pos, doc.end) }))
      )
      const summary = docs.some(({ doc }) => (ts.getTextOfJSDocComment(doc.comment) ?? "").trim().length > 0)
      const example = docs.some(({ text }) => text.includes("```ts"))
      const lacks = [summary ? [] : ["summary"], example || isNamespace ? [] : ["example"]].flat()
      if (lacks.length > 0) missing.push(`${relative(root, entry)}: ${exported.name} (${lacks.join(", ")})`)
    }
  }
  return missing
}

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
  it("typedoc documents exactly the entry points of package.json's exports", () => {
    const { entryPoints: documented } = JSON.parse(readFileSync(join(root, "typedoc.json"), "utf8")) as {
      entryPoints: Array<string>
    }
    assert.deepStrictEqual(documented.map((path) => join(root, path)).sort(), entryPoints().sort())
  })

  it.live(
    "the API reference builds with typedoc's validation on and no warning",
    () =>
      Effect.gen(function* () {
        const typedoc = yield* Effect.promise(() =>
          execa("node", [join(root, "node_modules", "typedoc", "bin", "typedoc"), "--emit", "none"], {
            cwd: root,
            reject: false,
            all: true
          })
        )
        assert.strictEqual(typedoc.exitCode, 0, typedoc.all)
      }),
    120_000
  )

  it("every export of every entry point has a summary and an example", () => {
    const missing = undocumented()
    assert.deepStrictEqual(missing, [], `${missing.length} exports lack docs:\n${missing.join("\n")}`)
  }, 60_000)

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
