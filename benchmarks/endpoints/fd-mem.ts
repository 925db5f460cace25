/**
 * fullduplex in memory, matched to `mem-node.ts`: `Duplex.pair()` with its default capacity (64 KiB per
 * direction), one process, every write the same 64 KiB chunk.
 *
 * - `--mode=oneway --bytes=N`: `for (…) yield* a.write(chunk)`, `a.end`, while
 *   `Stream.run(b.readable, sink)` counts and checks in a second fiber (`Effect.all`, concurrency 2).
 * - `--mode=echo --bytes=N`: the peer runs `Stream.run(server.readable, server.sink)` then `server.end`
 *   in a scoped fiber; the client runs `Duplex.exchange(client, Stream.fromIterable(chunks), sink)`.
 *
 * Timed from before the pipes are made until the reader has seen the end.
 */
import { Effect, Stream } from "effect"
import { Duplex } from "fullduplex"
import { Meter, mibPerSecond, options, patternChunk, payloadBytes, required, WRITE_BYTES } from "../lib/common.js"
import { checkSink, chunksOf, fullduplexUrl } from "../lib/fd.js"

const meter = new Meter("client")
const opts = options()
const mode = required(opts, "mode")
const bytes = payloadBytes(opts)
const chunks = chunksOf(patternChunk(), bytes)

const program =
  mode === "oneway"
    ? Effect.gen(function* () {
        const [a, b] = yield* Duplex.pair()
        const writer = Effect.gen(function* () {
          for (const c of chunks) yield* a.write(c)
          yield* a.end
        })
        const [, check] = yield* Effect.all([writer, Stream.run(b.readable, checkSink)], { concurrency: 2 })
        return check
      })
    : mode === "echo"
      ? Effect.gen(function* () {
          const [client, server] = yield* Duplex.pair()
          yield* Effect.forkScoped(Stream.run(server.readable, server.sink).pipe(Effect.andThen(server.end)))
          return yield* Duplex.exchange(client, Stream.fromIterable(chunks), checkSink)
        })
      : Effect.die(new Error(`unknown --mode=${mode}`))

meter.start()
// Timed until the reader has seen the end, as the anchors; closing the scope (the pair) is not.
const [check, ms] = await Effect.runPromise(
  Effect.scoped(Effect.map(program, (check) => [check, meter.elapsedMs()] as const))
)
check.verify(`Duplex.pair ${mode}`, bytes)
meter.finish({
  fullduplex: fullduplexUrl,
  bytes,
  ms,
  mibps: mibPerSecond(bytes, ms),
  usPerWrite: (ms * 1000) / (bytes / WRITE_BYTES)
})
