/**
 * A property test of your own pipe, with fast-check and the testkit: whatever the payload, its chunking
 * and the buffer capacity, an echo peer returns the payload byte-exact, and a deadlock fails fast with a
 * diagnostic instead of hanging. fast-check prints its seed and path when a run fails.
 *
 * Run: npx tsx examples/property.ts
 */
import { Effect, Sink, Stream } from "effect"
import fc from "fast-check"
import { Duplex } from "fullduplex"
import { assertDeadlockFree, capacity, chunkedPayload, firstDifference } from "fullduplex/testkit"

const echoIsExact = fc.asyncProperty(chunkedPayload({ maxBytes: 256 * 1024 }), capacity(), (input, cap) =>
  Effect.runPromise(
    assertDeadlockFree((watch) =>
      Effect.scoped(
        Effect.gen(function* () {
          const [client, server] = yield* Duplex.pair({ capacity: cap })
          watch(client, server)
          yield* Effect.forkScoped(Stream.run(server.readable, server.sink).pipe(Effect.andThen(server.end)))
          const reply = yield* Duplex.exchange(client, Stream.fromIterable(input.chunks), Sink.collect())
          return firstDifference(Buffer.concat(reply), input.payload) === -1
        })
      )
    )
  )
)

await fc.assert(echoIsExact, { numRuns: 100 })
console.log("100 runs: every echo was byte-exact")
