/**
 * The published shape of the package: what `npm pack` puts in it (the sources once, source maps that point
 * at them), the build's ESM and CJS entries load in plain Node, the testkit shares the main entry's classes,
 * a consumer's compiler can emit declarations for inferred types, loading the root entry loads neither
 * execa nor the Mux session until they are used, and the `fullduplex` bin runs from the installed package
 * without being loaded by its main entry.
 */
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { execa } from "execa"
import {
  copyFileSync,
  existsSync,
  mkdtempSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync
} from "node:fs"
import * as nodeModule from "node:module"
import { tmpdir } from "node:os"
import { dirname, join, relative } from "node:path"
import { fileURLToPath } from "node:url"

const root = fileURLToPath(new URL("..", import.meta.url))
const run = (file: string, args: ReadonlyArray<string>, cwd: string) =>
  Effect.promise(() => execa(file, args, { cwd, reject: false, all: true }))

/** Every file under `dir`, as paths relative to it. */
const filesUnder = (dir: string): Array<string> =>
  readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((entry) => entry.isFile())
    .map((entry) => relative(dir, join(entry.parentPath, entry.name)))

// A consumer project, made once for the file: the packed package unpacked into its node_modules, as npm
// installs it, and the peer dependencies linked from ours.
let dir = ""
let pkg = ""
beforeAll(async () => {
  const build = await execa("npm", ["run", "build"], { cwd: root, reject: false, all: true })
  assert.strictEqual(build.exitCode, 0, build.all)
  dir = mkdtempSync(join(tmpdir(), "fullduplex-consumer-"))
  pkg = join(dir, "node_modules", "fullduplex")
  mkdirSync(pkg, { recursive: true })
  const pack = await execa("npm", ["pack", "--silent", "--pack-destination", dir], {
    cwd: root,
    reject: false,
    all: true
  })
  assert.strictEqual(pack.exitCode, 0, pack.all)
  const tarball = join(dir, pack.stdout.trim().split("\n").pop()!)
  const untar = await execa("tar", ["-xzf", tarball, "-C", pkg, "--strip-components=1"], { reject: false, all: true })
  assert.strictEqual(untar.exitCode, 0, untar.all)
  // The peers, and execa (a dependency that npm would install with the package).
  for (const peer of ["effect", "fast-check", "@types", "execa"]) {
    symlinkSync(join(root, "node_modules", peer), join(dir, "node_modules", peer))
  }
  writeFileSync(join(dir, "package.json"), JSON.stringify({ name: "consumer", private: true, type: "module" }))
}, 180_000)
afterAll(() => {
  if (dir !== "") rmSync(dir, { recursive: true, force: true })
})

/** The package's source files (relative to it) that the loaded files among `urls` were built from, read from their source maps. */
const sourcesLoaded = (urls: ReadonlyArray<string>): Set<string> => {
  const sources = new Set<string>()
  for (const url of urls) {
    if (!url.startsWith("file:")) continue
    const file = fileURLToPath(url)
    if (!file.startsWith(join(pkg, "dist"))) continue
    const map = JSON.parse(readFileSync(`${file}.map`, "utf8")) as { sources: Array<string> }
    for (const source of map.sources) sources.add(relative(pkg, join(dirname(file), source)))
  }
  return sources
}

describe("package", () => {
  it("publishes dist, the sources once, and source maps that point at them", () => {
    const files = filesUnder(pkg)
    const top = new Set(files.map((file) => file.split("/")[0]))
    assert.deepStrictEqual([...top].sort(), ["CHANGELOG.md", "LICENSE", "README.md", "dist", "package.json", "src"])
    assert.include(readFileSync(join(pkg, "LICENSE"), "utf8"), "MIT License")
    const maps = files.filter((file) => file.endsWith(".map"))
    assert.isAbove(maps.filter((file) => file.endsWith(".js.map")).length, 20)
    assert.isAbove(maps.filter((file) => file.endsWith(".d.ts.map")).length, 10)
    for (const file of maps) {
      const map = JSON.parse(readFileSync(join(pkg, file), "utf8")) as {
        sources: Array<string>
        sourcesContent?: Array<string | null>
      }
      // The sources are shipped in src/: a map that embedded them too would ship them a second time.
      assert.isTrue(
        (map.sourcesContent ?? []).every((content) => content == null),
        `${file} embeds its sources`
      )
      for (const source of map.sources) {
        const path = join(pkg, dirname(file), source)
        assert.isTrue(path.startsWith(join(pkg, "src")) && existsSync(path), `${file}: ${source} is not in src/`)
      }
    }
  })

  it.live(
    "loads as ESM and CJS, with per-module declarations that a consumer can use",
    () =>
      Effect.gen(function* () {
        writeFileSync(
          join(dir, "esm.mjs"),
          [
            'import { Effect } from "effect"',
            'import { Duplex, DuplexError } from "fullduplex"',
            'import { conformance } from "fullduplex/testkit"',
            'import * as D from "fullduplex/Duplex"',
            "const exit = await Effect.runPromiseExit(Effect.scoped(Duplex.pair({ capacity: -1 })))",
            "const error = exit.cause.reasons[0].error",
            'if (!(error instanceof DuplexError.DuplexError)) throw new Error("error class differs")',
            'if (D.pair !== Duplex.pair) throw new Error("subpath and namespace differ")',
            'import * as T from "fullduplex/Tcp"',
            'import { Close, Echo, Framing, Mux, Proxy, Shutdown, Subprocess, Tcp, Watchdog } from "fullduplex"',
            'for (const [name, sub, ns] of [["Tcp", T, Tcp], ["Close", await import("fullduplex/Close"), Close], ["Echo", await import("fullduplex/Echo"), Echo], ["Watchdog", await import("fullduplex/Watchdog"), Watchdog], ["Subprocess", await import("fullduplex/Subprocess"), Subprocess], ["Framing", await import("fullduplex/Framing"), Framing], ["Shutdown", await import("fullduplex/Shutdown"), Shutdown], ["Proxy", await import("fullduplex/Proxy"), Proxy], ["Mux", await import("fullduplex/Mux"), Mux]]) {',
            "  if (Object.keys(sub).length === 0 || Object.keys(sub).some((k) => sub[k] !== ns[k])) throw new Error(`${name}: subpath and namespace differ`)",
            "}",
            'console.log("esm", conformance("x", Duplex.pair()).length)'
          ].join("\n")
        )
        const esm = yield* run("node", ["esm.mjs"], dir)
        assert.strictEqual(esm.exitCode, 0, esm.all)
        assert.match(esm.stdout, /^esm \d+$/)

        writeFileSync(
          join(dir, "cjs.cjs"),
          [
            'const { Duplex } = require("fullduplex")',
            'const { randomBytes } = require("fullduplex/testkit")',
            'const { Tcp } = require("fullduplex")',
            'const Echo = require("fullduplex/Echo")',
            'const Shutdown = require("fullduplex/Shutdown")',
            'console.log("cjs", typeof Duplex.pair, randomBytes(4, 1).length, typeof Tcp.serve, typeof Echo.serve, typeof Shutdown.client)'
          ].join("\n")
        )
        const cjs = yield* run("node", ["cjs.cjs"], dir)
        assert.strictEqual(cjs.exitCode, 0, cjs.all)
        assert.strictEqual(cjs.stdout, "cjs function 4 function function function")

        // Inferred types that mention DuplexError, with no import of it in the consumer: the compiler must
        // be able to name them (TS2883 / TS4023 otherwise).
        writeFileSync(
          join(dir, "use.ts"),
          [
            'import { Duplex } from "fullduplex"',
            'import { assertDeadlockFree, conformance } from "fullduplex/testkit"',
            'export const cases = conformance("x", Duplex.pair())',
            "export const guarded = assertDeadlockFree(Duplex.pair())",
            'import { Framing, Mux, Proxy, Shutdown } from "fullduplex"',
            "export const framed = (d: Duplex.Duplex) => Framing.make(d)",
            "export const client = (d: Duplex.Duplex) => Shutdown.client(d)",
            "export const session = (d: Duplex.Duplex) => Mux.client(d)",
            'export const proxy = Proxy.serve({ listen: {}, target: { host: "127.0.0.1", port: 1 } })'
          ].join("\n")
        )
        writeFileSync(
          join(dir, "tsconfig.json"),
          JSON.stringify({
            compilerOptions: {
              module: "NodeNext",
              moduleResolution: "NodeNext",
              strict: true,
              declaration: true,
              emitDeclarationOnly: true,
              outDir: "out",
              types: ["node"]
            },
            include: ["use.ts"]
          })
        )
        const tsc = yield* run("node", [join(root, "node_modules", "typescript", "bin", "tsc"), "-p", "."], dir)
        assert.strictEqual(tsc.exitCode, 0, tsc.all)

        // The `fullduplex` bin: declared, a Node script, and it runs from the installed package.
        const manifest = JSON.parse(readFileSync(join(pkg, "package.json"), "utf8")) as { bin?: Record<string, string> }
        assert.deepStrictEqual(manifest.bin, { fullduplex: "./dist/cli.js" })
        assert.isTrue(readFileSync(join(pkg, "dist", "cli.js"), "utf8").startsWith("#!/usr/bin/env node\n"))
        const help = yield* run("node", [join(pkg, "dist", "cli.js"), "--help"], dir)
        assert.strictEqual(help.exitCode, 0, help.all)
        for (const command of ["echo", "connect", "proxy", "serve", "demo"]) assert.include(help.stdout, command)
        // The CLI is an entry of its own: nothing that `import "fullduplex"` loads refers to it or to effect/cli.
        for (const file of readdirSync(join(pkg, "dist")).filter((f) => /\.c?js$/.test(f) && !f.startsWith("cli."))) {
          const code = readFileSync(join(pkg, "dist", file), "utf8")
          assert.notInclude(code, "effect/cli", `dist/${file} loads effect/cli`)
          assert.notMatch(code, /["']\.\/cli\.js["']/, `dist/${file} imports the CLI`)
        }
      }),
    120_000
  )

  /** A trace fixture's output: one JSON line per phase, the URLs loaded by then. */
  const phasesOf = (stdout: string): Map<string, Array<string>> =>
    new Map(
      stdout
        .trim()
        .split("\n")
        .map((line) => JSON.parse(line) as { phase: string; urls: Array<string> })
        .map(({ phase, urls }) => [phase, urls])
    )

  // The trace's load hook is `module.registerHooks`, Node 22.15 and 23.5 on; on the Node 22.12 to 22.14 that
  // the package supports too, this test does not run (the development machine and CI run Node 24).
  const canTrace = typeof nodeModule.registerHooks === "function"
  for (const format of ["esm", "cjs"] as const) {
    it.live.runIf(canTrace)(
      `${format}: loading the root entry loads neither execa nor the Mux session until they are used`,
      () =>
        Effect.gen(function* () {
          copyFileSync(join(root, "test", "fixtures", "load-trace.mjs"), join(dir, "load-trace.mjs"))
          const trace = yield* run("node", ["load-trace.mjs", format], dir)
          assert.strictEqual(trace.exitCode, 0, trace.all)
          const phases = phasesOf(trace.stdout)
          const execaLoaded = (phase: string) => phases.get(phase)!.some((url) => url.includes("/node_modules/execa/"))
          const yamuxLoaded = (phase: string) =>
            [...sourcesLoaded(phases.get(phase)!)].filter((source) => source.startsWith("src/internal/yamux/"))

          const atLoad = sourcesLoaded(phases.get("load")!)
          assert.isTrue(atLoad.has("src/Mux.ts") && atLoad.has("src/Subprocess.ts"), "the namespaces were loaded")
          assert.deepStrictEqual(yamuxLoaded("load"), [], "the root entry loaded the Mux session")
          assert.isFalse(execaLoaded("load"), "the root entry loaded execa")
          // The trace sees them once they are used: a session loads the yamux files, a child execa.
          assert.include(yamuxLoaded("mux"), "src/internal/yamux/session.ts")
          assert.isFalse(execaLoaded("mux"), "a Mux session loaded execa")
          assert.isTrue(execaLoaded("subprocess"), "a child ran without execa being loaded")
        }),
      60_000
    )
    it.live.runIf(canTrace)(
      `${format}: Echo.serve serves a connection without loading effect's Stream stack; a duplex's readable loads it`,
      () =>
        Effect.gen(function* () {
          copyFileSync(join(root, "test", "fixtures", "echo-trace.mjs"), join(dir, "echo-trace.mjs"))
          const trace = yield* run("node", ["echo-trace.mjs", format], dir)
          assert.strictEqual(trace.exitCode, 0, trace.all)
          const phases = phasesOf(trace.stdout)
          const effectModules = (phase: string) =>
            phases
              .get(phase)!
              .filter((url) => url.includes("/node_modules/effect/dist/"))
              .map((url) => url.slice(url.indexOf("/node_modules/effect/dist/") + "/node_modules/effect/dist/".length))
          // About 6 MiB of RSS: a server whose connections are pumps never builds a Stream.
          for (const module of ["Stream.js", "Channel.js", "Sink.js"]) {
            assert.notInclude(effectModules("served"), module, `Echo.serve loaded effect's ${module}`)
            assert.include(effectModules("readable"), module, `a readable did not load effect's ${module}`)
          }
        }),
      60_000
    )
  }
})
