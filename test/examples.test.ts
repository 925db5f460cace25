/**
 * Every program in examples/ runs to its end: it exits 0 within its bound and prints what it claims. Each
 * example has its line below, so a new example without one fails here. Programs run as the README says,
 * with tsx; the examples that are vitest files (conformance.ts, leakCheck.ts) run under a consumer's
 * vitest with every default setting, 5 s test timeout included (test/fixtures/vitest.consumer.config.ts).
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { execa } from "execa"
import { readdirSync, readFileSync } from "node:fs"
import { join } from "node:path"
import { fileURLToPath } from "node:url"

const root = fileURLToPath(new URL("..", import.meta.url))

/** What each example must print (stdout and stderr together). */
const expected: Record<string, RegExp> = {
  "quickstart.ts": /echoed 1048576 bytes; at most \d+ bytes were buffered/,
  "echoServer.ts": /33554432 bytes echoed; \d+ went through a temporary file/,
  "shutdown.ts": /(\d+) requests answered, then: .* not processed[\s\S]*client: \1 sent, \1 answered, 1 not processed/,
  "proxy.ts": /upstream read 1048576 bytes, then answered/,
  "mux.ts": /echoed 4194304, 4194304, 4194304 bytes while one stream stood still/,
  "subprocess.ts": /33554432 bytes back from cat, exit code 0/,
  "subprocessOutput.ts": /first lines of seq: 1, 2, 3/,
  "property.ts": /100 runs: every echo was byte-exact/,
  "conformance.ts": /Tests\s+10 passed \(10\)/,
  "leakCheck.ts": /Tests\s+1 passed \(1\)/,
  "framing.ts": /received 4 frames: Data 5 B, Control 5 B, Data 102400 B, Data 3 B[\s\S]*over maxFrameBytes/,
  "watchdog.ts": /zero window[\s\S]*no byte moved for \d+ ms[\s\S]*BLOCKED[\s\S]*BLOCKED/,
  "close.ts":
    /uploader: 1048576 bytes of answer, whole; the server's close: eof, \d+ unread[\s\S]*talker: halfClose eof after discarding 1048576 bytes; the server's close: eof/,
  "pipeline.ts": /100000 APPLE, 100000 FIG, 100000 PEAR[\s\S]*yes \| head -n 3: "y\\ny\\ny\\n"/,
  "nodeStreams.ts":
    /4224000 bytes through a Node Transform, starting "FULLDUPLEX FULLDUPLEX"[\s\S]*second line[\s\S]*262144 bytes went into the Writable/,
  "gzip.ts": /16777216 bytes gzipped to \d+ \(zlib.gunzipSync: identical; gzip \| gunzip: identical\)/
}

/** How long an example may take, start-up included. */
const BOUND_MILLIS = 30_000

const examples = readdirSync(join(root, "examples"))
  .filter((name) => name.endsWith(".ts"))
  .sort()

/** The environment without the variables of the vitest running this file, so a nested one starts afresh. */
const cleanEnv = () =>
  Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith("VITEST") && key !== "TEST"))

const isVitestFile = (name: string) => readFileSync(join(root, "examples", name), "utf8").includes('"@effect/vitest"')

const command = (name: string): [string, ReadonlyArray<string>] =>
  isVitestFile(name)
    ? [
        process.execPath,
        [
          join(root, "node_modules", "vitest", "vitest.mjs"),
          "run",
          "--config",
          "test/fixtures/vitest.consumer.config.ts",
          `examples/${name}`
        ]
      ]
    : [process.execPath, [join(root, "node_modules", "tsx", "dist", "cli.mjs"), `examples/${name}`]]

describe("examples", () => {
  it("every example has its expected output here", () => {
    assert.deepStrictEqual(examples, Object.keys(expected).sort())
  })

  for (const name of examples) {
    it.live(
      `examples/${name} exits 0 within ${BOUND_MILLIS / 1000} s and prints what it shows`,
      () =>
        Effect.gen(function* () {
          const [file, args] = command(name)
          const run = yield* Effect.promise(() =>
            execa(file, args, {
              cwd: root,
              env: { ...cleanEnv(), NO_COLOR: "1" },
              extendEnv: false,
              reject: false,
              all: true,
              timeout: BOUND_MILLIS,
              stdin: "ignore"
            })
          )
          assert.isFalse(run.timedOut, `examples/${name} still ran after ${BOUND_MILLIS} ms:\n${run.all}`)
          assert.strictEqual(run.exitCode, 0, `examples/${name} failed:\n${run.all}`)
          const pattern = expected[name] ?? /(?!)/
          assert.match(run.all, pattern, `examples/${name} printed something else:\n${run.all}`)
        }),
      BOUND_MILLIS + 10_000
    )
  }
})
