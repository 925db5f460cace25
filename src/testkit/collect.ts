/**
 * Reading a duplex to the end, for tests.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Sink from "effect/Sink"
import * as Stream from "effect/Stream"
import type { Duplex, DuplexError } from "fullduplex"
import { concatBytes } from "./random.js"

/**
 * A sink that gathers every chunk into one buffer.
 *
 * **Example** (The whole reply of an exchange, in one buffer)
 *
 * ```ts
 * import { Stream } from "effect"
 * import { Duplex } from "fullduplex"
 * import { collectBytes } from "fullduplex/testkit"
 *
 * const roundTrip = (conn: Duplex.Duplex, request: Uint8Array) =>
 *   Duplex.exchange(conn, Stream.make(request), collectBytes)
 * ```
 *
 * @category sinks
 * @since 0.1.0
 */
export const collectBytes: Sink.Sink<Uint8Array, Uint8Array> = Sink.map(Sink.collect<Uint8Array>(), concatBytes)

/**
 * Reads `duplex` to its EOF and returns every byte in one buffer.
 *
 * **Gotchas**
 *
 * It waits for the peer's half-close: run it concurrently with the writes it answers, never after them.
 *
 * **Example** (What the peer sent, once it has ended)
 *
 * ```ts
 * import { Effect, Fiber } from "effect"
 * import { Duplex } from "fullduplex"
 * import { readAll } from "fullduplex/testkit"
 *
 * const program = Effect.scoped(
 *   Effect.gen(function* () {
 *     const [a, b] = yield* Duplex.pair()
 *     const reading = yield* Effect.forkScoped(readAll(b))
 *     yield* a.write(new TextEncoder().encode("hello"))
 *     yield* a.end
 *     return yield* Fiber.join(reading) // the bytes "hello"
 *   })
 * )
 * ```
 *
 * @category combinators
 * @since 0.1.0
 */
export const readAll = (duplex: Duplex.Duplex): Effect.Effect<Uint8Array, DuplexError.DuplexError> =>
  Stream.run(duplex.readable, collectBytes)
