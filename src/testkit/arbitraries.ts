/**
 * fast-check arbitraries for the things deadlocks depend on: payload sizes, chunk boundaries, buffer
 * capacities and how fast a consumer reads.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import fc from "fast-check"
import { randomBytes } from "./random.js"

const KiB = 1024
const MiB = 1024 * KiB

const label = <T extends object>(value: T, text: string): T =>
  Object.defineProperty(value, fc.toStringMethod, { value: () => text, enumerable: false })

/**
 * Options of {@link payload}.
 *
 * **Example** (Payloads of at least one byte and at most 1 MiB)
 *
 * ```ts
 * import fc from "fast-check"
 * import { payload, type PayloadOptions } from "fullduplex/testkit"
 *
 * const options: PayloadOptions = { minBytes: 1, maxBytes: 1024 * 1024 }
 * fc.assert(fc.property(payload(options), (bytes) => bytes.length >= 1))
 * ```
 *
 * @category arbitraries
 * @since 0.1.0
 */
export interface PayloadOptions {
  /** Smallest payload in bytes. Default 0. */
  readonly minBytes?: number | undefined
  /** Largest payload in bytes. Default 4 MiB. */
  readonly maxBytes?: number | undefined
}

/**
 * Payloads of pseudo-random bytes, sizes spread over tiny (≤ 1 KiB), small (≤ 64 KiB), medium (≤ 1 MiB)
 * and large (≤ `maxBytes`) so that every size class is hit in a hundred runs.
 *
 * **Details**
 *
 * A payload is generated from a size and a seed, so a 4 MiB payload costs milliseconds, shrinks by size,
 * and prints as `payload(<size> B, seed <seed>)` in a counterexample instead of four million numbers.
 *
 * **Example** (A property over payloads)
 *
 * ```ts
 * import fc from "fast-check"
 * import { payload } from "fullduplex/testkit"
 *
 * fc.assert(fc.property(payload({ maxBytes: 64 * 1024 }), (bytes) => bytes.length <= 64 * 1024))
 * ```
 *
 * @category arbitraries
 * @since 0.1.0
 */
export const payload = (options: PayloadOptions = {}): fc.Arbitrary<Uint8Array> => {
  const min = options.minBytes ?? 0
  const max = Math.max(min, options.maxBytes ?? 4 * MiB)
  const upTo = (limit: number) => fc.integer({ min, max: Math.max(min, Math.min(max, limit)) })
  const size = fc.oneof(upTo(KiB), upTo(64 * KiB), upTo(MiB), upTo(max))
  return fc.tuple(size, fc.integer()).map(([n, seed]) => label(randomBytes(n, seed), `payload(${n} B, seed ${seed})`))
}

/**
 * Options of {@link chunking}.
 *
 * **Example** (At most eight pieces)
 *
 * ```ts
 * import fc from "fast-check"
 * import { chunking, type ChunkingOptions, randomBytes } from "fullduplex/testkit"
 *
 * const options: ChunkingOptions = { maxChunks: 8 }
 * fc.assert(fc.property(chunking(randomBytes(100, 7), options), (chunks) => chunks.length <= 8))
 * ```
 *
 * @category arbitraries
 * @since 0.1.0
 */
export interface ChunkingOptions {
  /** Most pieces to cut the payload into. Default 64. */
  readonly maxChunks?: number | undefined
}

/**
 * Ways to cut `payload` into consecutive non-empty pieces (views into it, no copy): from one piece to
 * `maxChunks`, at random boundaries.
 *
 * **Example** (Every chunking puts the payload back together)
 *
 * ```ts
 * import fc from "fast-check"
 * import { chunking, concatBytes, firstDifference, randomBytes } from "fullduplex/testkit"
 *
 * const bytes = randomBytes(4096, 1)
 * fc.assert(fc.property(chunking(bytes), (chunks) => firstDifference(concatBytes(chunks), bytes) === -1))
 * ```
 *
 * @category arbitraries
 * @since 0.1.0
 */
export const chunking = (
  payload: Uint8Array,
  options: ChunkingOptions = {}
): fc.Arbitrary<ReadonlyArray<Uint8Array>> => {
  const maxChunks = Math.max(1, options.maxChunks ?? 64)
  if (payload.length <= 1) return fc.constant(payload.length === 0 ? [] : [payload])
  return fc
    .uniqueArray(fc.integer({ min: 1, max: payload.length - 1 }), {
      maxLength: Math.min(maxChunks - 1, payload.length - 1),
      size: "max"
    })
    .map((cuts) => {
      const bounds = [0, ...cuts.sort((x, y) => x - y), payload.length]
      const chunks: Array<Uint8Array> = []
      for (let i = 1; i < bounds.length; i++) chunks.push(payload.subarray(bounds[i - 1], bounds[i]))
      return label(chunks, `chunks([${chunks.map((c) => c.length).join(", ")}])`)
    })
}

/**
 * A payload together with one way of cutting it: `{ payload, chunks }`.
 *
 * **Example** (Writing a payload in random pieces)
 *
 * ```ts
 * import { Stream } from "effect"
 * import fc from "fast-check"
 * import { chunkedPayload } from "fullduplex/testkit"
 *
 * const inputs = chunkedPayload({ maxBytes: 1024 * 1024, maxChunks: 16 }).map(({ chunks }) =>
 *   Stream.fromIterable(chunks)
 * )
 * const [one] = fc.sample(inputs, 1)
 * ```
 *
 * @category arbitraries
 * @since 0.1.0
 */
export const chunkedPayload = (
  options: PayloadOptions & ChunkingOptions = {}
): fc.Arbitrary<{ readonly payload: Uint8Array; readonly chunks: ReadonlyArray<Uint8Array> }> =>
  payload(options).chain((bytes) => chunking(bytes, options).map((chunks) => ({ payload: bytes, chunks })))

/**
 * Options of {@link capacity}.
 *
 * **Example** (Capacities up to 4 KiB)
 *
 * ```ts
 * import fc from "fast-check"
 * import { capacity, type CapacityOptions } from "fullduplex/testkit"
 *
 * const options: CapacityOptions = { maxBytes: 4096 }
 * fc.assert(fc.property(capacity(options), (bytes) => bytes >= 0 && bytes <= 4096))
 * ```
 *
 * @category arbitraries
 * @since 0.1.0
 */
export interface CapacityOptions {
  /** Largest capacity in bytes. Default 1 MiB. */
  readonly maxBytes?: number | undefined
}

/**
 * Buffer capacities in bytes, from 0 (lockstep hand-over) through tiny (1–64 B) and typical
 * (≤ 64 KiB) to `maxBytes`.
 *
 * **Example** (Pairs of every buffer size)
 *
 * ```ts
 * import fc from "fast-check"
 * import { Duplex } from "fullduplex"
 * import { capacity } from "fullduplex/testkit"
 *
 * const pairs = capacity({ maxBytes: 256 * 1024 }).map((bytes) => Duplex.pair({ capacity: bytes }))
 * ```
 *
 * @category arbitraries
 * @since 0.1.0
 */
export const capacity = (options: CapacityOptions = {}): fc.Arbitrary<number> => {
  const max = options.maxBytes ?? MiB
  return fc.oneof(
    fc.constant(0),
    fc.integer({ min: 1, max: Math.min(max, 64) }),
    fc.integer({ min: 1, max: Math.min(max, 64 * KiB) }),
    fc.integer({ min: 0, max })
  )
}

/**
 * How a consumer paces itself: before each chunk it yields to other fibers `yields[i]` times (cycling
 * through the list), and after every `pauseEveryBytes` bytes it sleeps `pauseMillis`.
 *
 * **Details**
 *
 * Yields reorder the reader and writer fibers without costing time; pauses model a consumer that stalls
 * now and then. Pauses are counted in bytes, not chunks, so a transfer in tiny pieces does not sleep
 * once per piece: a run sleeps at most `payload / pauseEveryBytes` times.
 *
 * **Example** (A pacing written by hand: yield twice per chunk, sleep 1 ms per 64 KiB)
 *
 * ```ts
 * import { Stream } from "effect"
 * import { paced, type Pacing } from "fullduplex/testkit"
 *
 * const pace: Pacing = { yields: [2], pauseEveryBytes: 64 * 1024, pauseMillis: 1 }
 * const slow = <E>(s: Stream.Stream<Uint8Array, E>) => s.pipe(paced(pace))
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface Pacing {
  readonly yields: ReadonlyArray<number>
  readonly pauseEveryBytes: number
  readonly pauseMillis: number
}

/**
 * Options of {@link pacing}.
 *
 * **Example** (Pacings that only yield, never sleep)
 *
 * ```ts
 * import fc from "fast-check"
 * import { pacing, type PacingOptions } from "fullduplex/testkit"
 *
 * const options: PacingOptions = { maxPauseMillis: 0 }
 * fc.assert(fc.property(pacing(options), (pace) => pace.pauseMillis === 0))
 * ```
 *
 * @category arbitraries
 * @since 0.1.0
 */
export interface PacingOptions {
  /** Longest pause. Default 2 ms; 0 keeps consumers on yields only. */
  readonly maxPauseMillis?: number | undefined
  /** Fewest bytes between two pauses. Default 16 KiB. */
  readonly minPauseEveryBytes?: number | undefined
}

/**
 * Consumer pacings: eager, yielding, and now and then pausing consumers, so that the interleavings of
 * reader and writer fibers vary from run to run. Apply one with {@link paced}.
 *
 * **Example** (A reader at a random pace)
 *
 * ```ts
 * import { Stream } from "effect"
 * import fc from "fast-check"
 * import type { Duplex } from "fullduplex"
 * import { paced, pacing } from "fullduplex/testkit"
 *
 * const readers = pacing().map((pace) => (d: Duplex.Duplex) => Stream.runDrain(d.readable.pipe(paced(pace))))
 * ```
 *
 * @category arbitraries
 * @since 0.1.0
 */
export const pacing = (options: PacingOptions = {}): fc.Arbitrary<Pacing> => {
  const maxPause = options.maxPauseMillis ?? 2
  const minEvery = options.minPauseEveryBytes ?? 16 * KiB
  return fc.record({
    yields: fc.array(fc.integer({ min: 0, max: 8 }), { minLength: 1, maxLength: 8 }),
    pauseEveryBytes: fc.integer({ min: minEvery, max: Math.max(minEvery, 64 * minEvery) }),
    pauseMillis: maxPause > 0 ? fc.integer({ min: 0, max: maxPause }) : fc.constant(0)
  })
}

/**
 * Paces a byte stream's consumer as `pacing` says.
 *
 * **Example** (A slow, irregular reader)
 *
 * ```ts
 * import { Stream } from "effect"
 * import { paced } from "fullduplex/testkit"
 *
 * const slow = <E>(s: Stream.Stream<Uint8Array, E>) =>
 *   s.pipe(paced({ yields: [3, 0], pauseEveryBytes: 64 * 1024, pauseMillis: 1 }))
 * ```
 *
 * @category combinators
 * @since 0.1.0
 */
export const paced =
  (pacing: Pacing) =>
  <E, R>(self: Stream.Stream<Uint8Array, E, R>): Stream.Stream<Uint8Array, E, R> =>
    Stream.suspend(() => {
      let i = 0
      let sincePause = 0
      return Stream.tap(self, (chunk) => {
        let pause: Effect.Effect<void> = Effect.void
        const yields = pacing.yields.length === 0 ? 0 : pacing.yields[i++ % pacing.yields.length]!
        for (let y = 0; y < yields; y++) pause = Effect.andThen(pause, Effect.yieldNow)
        sincePause += chunk.length
        if (pacing.pauseMillis > 0 && sincePause >= pacing.pauseEveryBytes) {
          sincePause = 0
          pause = Effect.andThen(pause, Effect.sleep(pacing.pauseMillis))
        }
        return pause
      })
    })
