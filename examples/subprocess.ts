/**
 * A child process as a duplex: 32 MiB through `cat` and back, far more than the pipes between the two
 * processes hold, written and read at once; then the exit status. Written first and read after, the same
 * transfer hangs forever: the parent waits for `cat` to read, `cat` waits for the parent to read.
 *
 * Run it with `npx tsx examples/subprocess.ts`.
 */
import { Effect, Sink, Stream } from "effect"
import { Duplex, Subprocess } from "fullduplex"

const program = Effect.scoped(
  Effect.gen(function* () {
    const cat = yield* Subprocess.spawn("cat")
    const chunk = new Uint8Array(64 * 1024).fill(7)
    const input = Stream.range(1, 512).pipe(Stream.map(() => chunk)) // 32 MiB
    const echoed = yield* Duplex.exchange(
      cat,
      input,
      Sink.reduce(
        () => 0,
        (n, bytes: Uint8Array) => n + bytes.length
      )
    )
    const { exitCode } = yield* cat.exit
    yield* Effect.log(`${echoed} bytes back from cat, exit code ${exitCode}`)

    // Or in one call: the input written while the output is read, the output bounded by maxBuffer.
    const sorted = yield* Subprocess.communicate(
      yield* Subprocess.spawn("sort"),
      Stream.make(new TextEncoder().encode("pear\napple\n"))
    )
    yield* Effect.log(new TextDecoder().decode(sorted.stdout))
  })
)

Effect.runPromise(program)
