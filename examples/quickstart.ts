/**
 * Quick start: a client and an echo peer on an in-memory pair whose buffers hold 64 KiB each way. The
 * client sends 1 MiB — far more than both buffers — and gets it back, because `Duplex.exchange` writes
 * and reads at the same time.
 *
 * Run: npx tsx examples/quickstart.ts
 */
import { Effect, Sink, Stream } from "effect"
import { Duplex } from "fullduplex"

const program = Effect.scoped(
  Effect.gen(function* () {
    const [client, server] = yield* Duplex.pair({ capacity: 64 * 1024 })

    // The peer echoes what it reads, then half-closes when the client has.
    yield* Effect.forkScoped(Stream.run(server.readable, server.sink).pipe(Effect.andThen(server.end)))

    const request = new Uint8Array(1024 * 1024).fill(42)
    const reply = yield* Duplex.exchange(
      client,
      Stream.make(request),
      Sink.reduce(
        () => 0,
        (n, chunk: Uint8Array) => n + chunk.length
      )
    )
    const { outbound } = yield* client.stats
    yield* Effect.log(`echoed ${reply} bytes; at most ${outbound.peakBuffered} bytes were buffered client → server`)
  })
)

Effect.runPromise(program)
