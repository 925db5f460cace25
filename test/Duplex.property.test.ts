/**
 * Property tests of the central promise: with reads and writes running concurrently, bytes arrive
 * byte-exact through bounded buffers of any size, whatever the chunking and the consumer's pace — and a
 * program that breaks the rule is caught as deadlocked.
 *
 * Seeds: every run uses `FC_SEED` if set, else a fresh one; a failure prints `{ seed, path }` (replay
 * with `FC_SEED=<seed>`). `FC_RUNS` overrides the number of runs (default 100).
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Stream } from "effect"
import fc from "fast-check"
import { Duplex, DuplexError } from "fullduplex"
import {
  assertDeadlockFree,
  capacity,
  chunkedPayload,
  collectBytes,
  concatBytes,
  firstDifference,
  paced,
  pacing,
  payload,
  randomChunks,
  readAll
} from "fullduplex/testkit"

const seed = Number(process.env["FC_SEED"] ?? Math.floor(Math.random() * 2 ** 31))
const numRuns = Number(process.env["FC_RUNS"] ?? 100)
const params = { seed, numRuns }

const MiB = 1024 * 1024

/**
 * A write larger than the capacity moves in pieces of at most `capacity` bytes, one reader wake-up each:
 * 4 MiB through a 1-byte pipe is four million of them, seconds per run. So the payload is drawn after the
 * capacity, up to 65536 pieces (and always up to 64 KiB); capacity 0 hands writes over whole.
 */
const maxBytesFor = (capacity: number, max: number) =>
  capacity === 0 ? max : Math.min(max, Math.max(64 * 1024, capacity * 65536))

/** Runs a fast-check property whose predicate is an Effect, each run in its own scope. */
const property = <T>(arb: fc.Arbitrary<T>, predicate: (value: T) => Effect.Effect<void, unknown, never>) =>
  Effect.promise(() =>
    fc.assert(
      fc.asyncProperty(arb, (value) => Effect.runPromise(predicate(value))),
      params
    )
  )

const sameBytes = (got: Uint8Array, want: Uint8Array, what: string) => {
  const at = firstDifference(got, want)
  assert.strictEqual(at, -1, `${what}: got ${got.length} bytes, want ${want.length}, first difference at ${at}`)
}

describe(`Duplex properties (seed ${seed}, ${numRuns} runs)`, () => {
  it.live(
    "an echo peer over a pair driven by exchange returns the payload byte-exact",
    () =>
      property(
        capacity().chain((cap) =>
          fc.record({
            capacity: fc.constant(cap),
            input: chunkedPayload({ maxBytes: maxBytesFor(cap, 4 * MiB) }),
            pace: pacing()
          })
        ),
        ({ input, capacity, pace }) =>
          assertDeadlockFree(
            (watch) =>
              Effect.scoped(
                Effect.gen(function* () {
                  const [client, server] = yield* Duplex.pair({ capacity })
                  watch(client, server)
                  // The echo peer answers as it reads, at a random pace.
                  yield* Effect.forkScoped(
                    Effect.andThen(Stream.run(server.readable.pipe(paced(pace)), server.sink), server.end)
                  )
                  const got = yield* Duplex.exchange(client, Stream.fromIterable(input.chunks), collectBytes)
                  sameBytes(got, input.payload, "echo")
                })
              ),
            { stallTimeout: "5 seconds" }
          )
      ),
    120_000
  )

  it.live(
    "splice of two pairs delivers both directions byte-exact and propagates half-close",
    () =>
      property(
        fc.tuple(capacity({ maxBytes: 256 * 1024 }), capacity({ maxBytes: 256 * 1024 })).chain(([front, back]) => {
          const maxBytes = Math.min(maxBytesFor(front, MiB), maxBytesFor(back, MiB))
          return fc.record({
            up: payload({ maxBytes }),
            down: payload({ maxBytes }),
            front: fc.constant(front),
            back: fc.constant(back),
            chunkSeed: fc.integer(),
            pace: pacing()
          })
        }),
        ({ up, down, front, back, chunkSeed, pace }) =>
          assertDeadlockFree(
            (watch) =>
              Effect.scoped(
                Effect.gen(function* () {
                  const [client, relayIn] = yield* Duplex.pair({ capacity: front, label: "front" })
                  const [relayOut, origin] = yield* Duplex.pair({ capacity: back, label: "back" })
                  watch(client, relayIn, relayOut, origin)
                  const relay = yield* Effect.forkScoped(Duplex.splice(relayIn, relayOut))
                  // The origin answers only after the client's half-close has reached it through the relay:
                  // if half-close were not propagated, it would wait forever and the watchdog would fire.
                  const origin_ = Effect.gen(function* () {
                    const got = concatBytes(yield* Stream.runCollect(origin.readable.pipe(paced(pace))))
                    yield* origin.writeAll(randomChunks(down, 64 * 1024, chunkSeed))
                    yield* origin.end
                    return got
                  })
                  const [gotDown, gotUp] = yield* Effect.all(
                    [
                      Duplex.exchange(
                        client,
                        Stream.fromIterable(randomChunks(up, 64 * 1024, chunkSeed)),
                        collectBytes
                      ),
                      origin_
                    ],
                    { concurrency: 2 }
                  )
                  sameBytes(gotUp, up, "client → origin")
                  sameBytes(gotDown, down, "origin → client")
                  assert.deepStrictEqual(yield* Fiber.join(relay), { aToB: up.length, bToA: down.length })
                })
              ),
            { stallTimeout: "5 seconds" }
          )
      ),
    120_000
  )

  it.live(
    "buffered bytes never exceed the capacity, as read from stats",
    () =>
      property(
        capacity().chain((cap) =>
          fc.record({
            capacity: fc.constant(cap),
            input: chunkedPayload({ maxBytes: maxBytesFor(cap, MiB) }),
            pace: pacing()
          })
        ),
        ({ input, capacity, pace }) =>
          Effect.scoped(
            Effect.gen(function* () {
              const [a, b] = yield* Duplex.pair({ capacity })
              let seen = 0
              const sample = Effect.gen(function* () {
                const [sa, sb] = [yield* a.stats, yield* b.stats]
                seen = Math.max(seen, sa.outbound.buffered, sb.inbound.buffered)
              })
              const writer = Effect.andThen(a.writeAll(input.chunks), a.end)
              const reader = Stream.runCollect(
                b.readable.pipe(
                  paced(pace),
                  Stream.tap(() => sample)
                )
              )
              const [, chunks] = yield* Effect.all([writer, reader], { concurrency: 2 })
              sameBytes(concatBytes(chunks), input.payload, "transfer")
              const peak = (yield* a.stats).outbound.peakBuffered
              assert.isAtMost(seen, capacity, "sampled buffered bytes")
              assert.isAtMost(peak, capacity, "peak buffered bytes")
            })
          )
      ),
    120_000
  )
})

describe("assertDeadlockFree", () => {
  // The control: the detector must catch a real deadlock, not only pass good programs.
  it.live("reports a naive client (write everything, then read) against an echo peer as deadlocked", () =>
    Effect.gen(function* () {
      for (const [cap, oneWrite] of [
        [0, false],
        [1024, false],
        [64 * 1024, false],
        [1024, true],
        [64 * 1024, true]
      ] as const) {
        // More than both buffers plus what the echo peer holds in hand. With `oneWrite`, the request is a
        // single write: it must be held back piece by piece as over TCP, not handed over whole.
        const size = Math.max(4 * cap, 64 * 1024)
        const exit = yield* Effect.exit(
          assertDeadlockFree(
            (watch) =>
              Effect.scoped(
                Effect.gen(function* () {
                  const [client, server] = yield* Duplex.pair({ capacity: cap })
                  watch(client, server)
                  yield* Effect.forkScoped(Effect.andThen(Stream.run(server.readable, server.sink), server.end))
                  const chunks = oneWrite ? [new Uint8Array(size)] : randomChunks(new Uint8Array(size), 4096, 1)
                  yield* client.writeAll(chunks) // the bug: nobody reads while this waits
                  yield* client.end
                  return yield* readAll(client)
                })
              ),
            { stallTimeout: "300 millis", label: `naive client, capacity ${cap}, one write: ${oneWrite}` }
          )
        )
        assert.isTrue(Exit.isFailure(exit), `capacity ${cap}, one write ${oneWrite}: the naive client must be reported`)
        const fail = Exit.isFailure(exit) ? exit.cause.reasons.find((r) => r._tag === "Fail") : undefined
        const error = fail?._tag === "Fail" ? fail.error : undefined
        assert.isTrue(DuplexError.isDuplexError(error))
        const reason = (error as DuplexError.DuplexError).reason
        assert.strictEqual(reason._tag, "StallDetected")
        assert.include(reason.message, "pair.a outbound: BLOCKED")
        assert.include(reason.message, "pair.b outbound: BLOCKED")
      }
    })
  )

  it.live("passes the same exchange when reads and writes run concurrently", () =>
    assertDeadlockFree(
      (watch) =>
        Effect.scoped(
          Effect.gen(function* () {
            const [client, server] = yield* Duplex.pair({ capacity: 1024 })
            watch(client, server)
            yield* Effect.forkScoped(Effect.andThen(Stream.run(server.readable, server.sink), server.end))
            const chunks = randomChunks(new Uint8Array(64 * 1024), 4096, 1)
            const got = yield* Duplex.exchange(client, Stream.fromIterable(chunks), collectBytes)
            assert.strictEqual(got.length, 64 * 1024)
          })
        ),
      { stallTimeout: "300 millis" }
    )
  )

  it.live("fails with Timeout when the whole run exceeds its overall bound", () =>
    Effect.gen(function* () {
      const exit = yield* Effect.exit(
        assertDeadlockFree(Effect.never, { stallTimeout: "10 seconds", timeout: "50 millis" })
      )
      const fail = Exit.isFailure(exit) ? exit.cause.reasons.find((r) => r._tag === "Fail") : undefined
      const error = fail?._tag === "Fail" ? fail.error : undefined
      assert.strictEqual(DuplexError.isDuplexError(error) ? error.reason._tag : "", "Timeout")
    })
  )
})
