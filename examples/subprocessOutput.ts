/**
 * The one-liners: a command run to its end with its outputs captured (bounded), and a command's stdout
 * as lines. Run with `npx tsx examples/subprocessOutput.ts`.
 */
import { Effect, Stream } from "effect"
import { Subprocess } from "fullduplex"

const program = Effect.gen(function* () {
  // execa: `const { stdout } = await execa("sort", { input: "pear\napple\n", maxBuffer: 1024 })`
  const sorted = yield* Subprocess.output("sort", [], { input: "pear\napple\n", maxBuffer: 1024 })
  yield* Effect.log(
    `sort: ${JSON.stringify(new TextDecoder().decode(sorted.stdout))} in ${sorted.durationMillis.toFixed(1)} ms`
  )

  // A failing command fails, with its exit code and the end of its stderr; `reject: false` reports it.
  const failed = yield* Subprocess.output("sh", ["-c", "echo no such widget >&2; exit 3"], { reject: false })
  yield* Effect.log(`exit code ${failed.exitCode}, stderr ${JSON.stringify(new TextDecoder().decode(failed.stderr))}`)

  // Lines as the child writes them, with backpressure.
  const first = yield* Subprocess.lines("seq", ["1", "1000000"]).pipe(Stream.take(3), Stream.runCollect)
  yield* Effect.log(`first lines of seq: ${first.join(", ")}`)
})

Effect.runPromise(program)
