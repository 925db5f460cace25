/**
 * Seeded, fast pseudo-random bytes for tests: the same seed gives the same bytes on every machine.
 *
 * @since 0.1.0
 */

/**
 * A small seeded generator (mulberry32) of 32-bit integers: fast, repeatable, not cryptographic.
 *
 * **Example** (The same sequence from the same seed)
 *
 * ```ts
 * import { prng } from "fullduplex/testkit"
 *
 * const next = prng(42)
 * const first = next() // always the same number for seed 42
 * ```
 *
 * @category random
 * @since 0.1.0
 */
export const prng = (seed: number): (() => number) => {
  let s = seed | 0
  return () => {
    s = (s + 0x6d2b79f5) | 0
    let t = Math.imul(s ^ (s >>> 15), 1 | s)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return (t ^ (t >>> 14)) >>> 0
  }
}

/**
 * `size` pseudo-random bytes from `seed`. Fills a 4 MiB buffer in a few milliseconds.
 *
 * **Example** (Repeatable payloads)
 *
 * ```ts
 * import { randomBytes } from "fullduplex/testkit"
 *
 * const a = randomBytes(1024, 7)
 * const b = randomBytes(1024, 7) // the same bytes as `a`
 * ```
 *
 * @category random
 * @since 0.1.0
 */
export const randomBytes = (size: number, seed: number): Uint8Array => {
  const next = prng(seed)
  const bytes = new Uint8Array(size)
  const words = new Uint32Array(bytes.buffer, 0, size >>> 2)
  for (let i = 0; i < words.length; i++) words[i] = next()
  for (let i = words.length * 4; i < size; i++) bytes[i] = next() & 0xff
  return bytes
}

/**
 * Cuts `payload` into consecutive pieces (views, no copy) whose sizes are drawn from `seed`, each between
 * 1 and `maxChunk` bytes.
 *
 * **Example** (Writing in random pieces)
 *
 * ```ts
 * import type { Duplex } from "fullduplex"
 * import { randomBytes, randomChunks } from "fullduplex/testkit"
 *
 * const send = (d: Duplex.Duplex) => d.writeAll(randomChunks(randomBytes(1 << 20, 7), 16 * 1024, 7))
 * ```
 *
 * @category random
 * @since 0.1.0
 */
export const randomChunks = (payload: Uint8Array, maxChunk: number, seed: number): Array<Uint8Array> => {
  const next = prng(seed)
  const chunks: Array<Uint8Array> = []
  for (let at = 0; at < payload.length;) {
    const size = 1 + (next() % Math.max(1, maxChunk))
    chunks.push(payload.subarray(at, at + size))
    at += size
  }
  return chunks
}

/**
 * Concatenates chunks into one buffer.
 *
 * **Example** (The first two chunks a duplex sent, in one buffer)
 *
 * ```ts
 * import { Effect, Stream } from "effect"
 * import type { Duplex } from "fullduplex"
 * import { concatBytes } from "fullduplex/testkit"
 *
 * const firstTwo = (d: Duplex.Duplex) => Effect.map(Stream.runCollect(Stream.take(d.readable, 2)), concatBytes)
 * ```
 *
 * @category bytes
 * @since 0.1.0
 */
export const concatBytes = (chunks: Iterable<Uint8Array>): Uint8Array => {
  const list = Array.from(chunks)
  let size = 0
  for (const c of list) size += c.length
  const out = new Uint8Array(size)
  let at = 0
  for (const c of list) {
    out.set(c, at)
    at += c.length
  }
  return out
}

/**
 * The first index at which two byte arrays differ, `-1` when they are equal. A length difference counts
 * as a difference at the shorter length.
 *
 * **Example** (Where an echo went wrong)
 *
 * ```ts
 * import { firstDifference } from "fullduplex/testkit"
 *
 * firstDifference(Uint8Array.of(1, 2, 3), Uint8Array.of(1, 9, 3)) // 1
 * firstDifference(Uint8Array.of(1, 2), Uint8Array.of(1, 2)) // -1
 * ```
 *
 * @category bytes
 * @since 0.1.0
 */
export const firstDifference = (a: Uint8Array, b: Uint8Array): number => {
  const n = Math.min(a.length, b.length)
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i
  return a.length === b.length ? -1 : n
}
