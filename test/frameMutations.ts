/**
 * Ways to break a valid yamux byte sequence, for the fuzz properties of `Mux.test.ts` and the stress
 * suite: flip a byte, cut it short, insert junk, change a frame's length, repeat a frame.
 */
import fc from "fast-check"
import { concatBytes } from "fullduplex/testkit"

export type Mutation =
  | { readonly kind: "flip"; readonly at: number; readonly xor: number }
  | { readonly kind: "truncate"; readonly at: number }
  | { readonly kind: "insert"; readonly at: number; readonly bytes: Uint8Array }
  | { readonly kind: "length"; readonly frame: number; readonly length: number }
  | { readonly kind: "duplicate"; readonly frame: number }

/** A mutation; a changed length is up to `2 × windowBytes`, or 2^32 - 1. */
export const mutation = (windowBytes: number): fc.Arbitrary<Mutation> =>
  fc.oneof(
    fc.record({ kind: fc.constant("flip" as const), at: fc.nat(), xor: fc.integer({ min: 1, max: 255 }) }),
    fc.record({ kind: fc.constant("truncate" as const), at: fc.nat() }),
    fc.record({
      kind: fc.constant("insert" as const),
      at: fc.nat(),
      bytes: fc.uint8Array({ minLength: 1, maxLength: 24 })
    }),
    fc.record({
      kind: fc.constant("length" as const),
      frame: fc.nat(),
      length: fc.oneof(fc.integer({ min: 0, max: 2 * windowBytes }), fc.constant(0xffffffff))
    }),
    fc.record({ kind: fc.constant("duplicate" as const), frame: fc.nat() })
  )

/** Applies mutations to a frame list (frame-level ones first), then to the bytes. */
export const mutate = (frames: ReadonlyArray<Uint8Array>, mutations: ReadonlyArray<Mutation>): Uint8Array => {
  const list = frames.map((f) => f.slice())
  for (const m of mutations) {
    if (list.length === 0) break
    if (m.kind === "length") new DataView(list[m.frame % list.length]!.buffer).setUint32(8, m.length >>> 0)
    else if (m.kind === "duplicate") {
      const i = m.frame % list.length
      list.splice(i, 0, list[i]!.slice())
    }
  }
  let bytes = concatBytes(list)
  for (const m of mutations) {
    if (bytes.length === 0) break
    if (m.kind === "flip") bytes[m.at % bytes.length]! ^= m.xor
    else if (m.kind === "truncate") bytes = bytes.subarray(0, m.at % bytes.length)
    else if (m.kind === "insert") {
      const at = m.at % (bytes.length + 1)
      bytes = concatBytes([bytes.subarray(0, at), m.bytes, bytes.subarray(at)])
    }
  }
  return bytes
}
