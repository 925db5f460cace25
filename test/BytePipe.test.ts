/**
 * BytePipe, the bounded buffer behind every duplex's inbound side and every mux stream's receive buffer:
 * its memory follows the bytes it holds, whatever their chunking (issue #20, fault 4), and the small chunks
 * it copies into blocks come back byte-exact, in order, with their own boundaries.
 *
 * Seeds: the property test uses `FC_SEED` if set, else a fresh one, shown in the `describe` title; a failure
 * prints `{ seed, path }` (replay with `FC_SEED=<seed>`). `FC_RUNS` overrides the number of runs (default 100).
 */
import { assert, describe, it } from "@effect/vitest"
import { Clock, Effect, Option } from "effect"
import fc from "fast-check"
import {
  BLOCK_BYTES,
  BytePipe,
  COALESCE_BELOW_BYTES,
  KEPT,
  PAUSE,
  type PushSink,
  TAKEN
} from "../src/internal/bytePipe.js"
import { gc, liveBytes } from "./helpers.js"

const seed = Number(process.env["FC_SEED"] ?? Math.floor(Math.random() * 2 ** 31))
const numRuns = Number(process.env["FC_RUNS"] ?? 100)
const params = { seed, numRuns }

const KiB = 1024
const MiB = 1024 * KiB

const clock = Effect.runSync(Clock.clockWith(Effect.succeed))
const makePipe = (capacity: number) => new BytePipe(capacity, "writer", "reader", clock)

/** Chunks with bytes that tell every position apart: byte `i` of the whole stream is `(i * 31 + 7) & 0xff`. */
const byteSource = () => {
  let at = 0
  return (size: number, into: Uint8Array = Buffer.allocUnsafe(size)): Uint8Array => {
    for (let i = 0; i < size; i++) into[i] = (at++ * 31 + 7) & 0xff
    return size === into.length ? into : into.subarray(0, size)
  }
}

/** The same chunks, boundaries and bytes, in the same order; fails at the first that differs. */
const assertSameChunks = (got: ReadonlyArray<Uint8Array>, want: ReadonlyArray<Uint8Array>, what: string) => {
  assert.strictEqual(got.length, want.length, `${what}: got ${got.length} chunks, want ${want.length}`)
  for (let i = 0; i < want.length; i++) {
    const g = got[i]!
    const w = want[i]!
    // Plain comparisons: an assertion per chunk is most of the time of a million chunks.
    if (g.length !== w.length) assert.fail(`${what}: chunk ${i} has ${g.length} bytes, want ${w.length}`)
    for (let k = 0; k < w.length; k++) {
      if (g[k] !== w[k]) assert.fail(`${what}: chunk ${i} (${w.length} B) differs at byte ${k}: ${g[k]} ≠ ${w[k]}`)
    }
  }
}

/** Takes every chunk buffered now, one at a time. */
const drainNow = (pipe: BytePipe, into: Array<Uint8Array>) => {
  for (let chunk = pipe.takeUnsafe(); chunk !== undefined; chunk = pipe.takeUnsafe()) into.push(chunk)
}

describe("BytePipe memory under small chunks", () => {
  it("1 MiB offered as 1-byte chunks is held in blocks, not an object per chunk, and reads back in order", () => {
    const total = MiB
    const pipe = makePipe(2 * total)
    const next = byteSource()
    const offered: Array<Uint8Array> = []
    const before = gc === undefined ? 0 : liveBytes(gc)
    // Each chunk a buffer of its own, as a socket's 'data' events give them; the test keeps none of them.
    for (let i = 0; i < total; i++) pipe.offerUnsafe(next(1))
    const grown = gc === undefined ? 0 : liveBytes(gc) - before
    assert.strictEqual(pipe.buffered, total)
    // A block holds at least BLOCK_BYTES - COALESCE_BELOW_BYTES bytes before the next one starts.
    const blocks = Math.ceil(total / (BLOCK_BYTES - COALESCE_BELOW_BYTES)) + 1
    assert.isAtMost(pipe.bufferedEntries, blocks, `${pipe.bufferedEntries} objects hold ${total} buffered bytes`)
    if (gc !== undefined) {
      // About 2 bytes per byte (the byte, its recorded length); an object per chunk was over 100.
      assert.isBelow(grown, 3 * total, `the pipe's memory grew by ${grown} bytes for ${total} buffered bytes`)
    }
    const expected = byteSource()
    for (let i = 0; i < total; i++) offered.push(expected(1))
    const got: Array<Uint8Array> = []
    drainNow(pipe, got)
    assertSameChunks(got, offered, "1-byte chunks")
    assert.strictEqual(pipe.bufferedEntries, 0)
  })

  it("a chunk of 16 KiB or more is buffered and read by reference, and so is a small one into an empty buffer", () => {
    const pipe = makePipe(MiB)
    const next = byteSource()
    const alone = next(10)
    pipe.offerUnsafe(alone)
    assert.strictEqual(pipe.takeUnsafe(), alone, "a small chunk into an empty buffer is not copied")
    const small = [next(1), next(2), next(3)]
    const large = next(16 * KiB)
    for (const c of small) pipe.offerUnsafe(c)
    pipe.offerUnsafe(large)
    assert.strictEqual(pipe.coalescedChunks, 2, "the second and third small chunks are copied (the first with them)")
    const got: Array<Uint8Array> = []
    drainNow(pipe, got)
    assertSameChunks(got, [...small, large], "small chunks, then a large one")
    assert.strictEqual(got[3], large, "the large chunk is the one offered, not a copy")
  })

  it("bytes a reader took from a block are never written again as more small chunks arrive", () => {
    const pipe = makePipe(MiB)
    const next = byteSource()
    const want: Array<Uint8Array> = []
    const got: Array<Uint8Array> = []
    for (let round = 0; round < 2000; round++) {
      for (let i = 0; i < 1 + (round % 7); i++) {
        const chunk = next(1 + ((round * 13 + i) % 50))
        want.push(Uint8Array.from(chunk))
        pipe.offerUnsafe(chunk)
      }
      // Leave a chunk or two behind, so that the next round appends to a block a reader has views into; now
      // and then read it all, so that the next round starts on an empty buffer.
      while (pipe.buffered > (round % 10 === 0 ? 0 : 60)) got.push(pipe.takeUnsafe()!)
    }
    drainNow(pipe, got)
    // Compared only now: a view handed out early that a later copy overwrote would differ.
    assertSameChunks(got, want, "chunks read while more were copied behind them")
  })

  it("a small lent chunk reaches a lending consumer as a copy of its own, so that keeping it keeps no read buffer", () => {
    const pipe = makePipe(MiB)
    const got: Array<{ readonly bytes: Uint8Array; readonly lent: boolean }> = []
    // A consumer that keeps everything it is lent, as a pump whose destination holds its writes.
    pipe.attach({
      takesLent: true,
      chunk: (bytes, lent) => {
        got.push({ bytes, lent })
        return lent ? KEPT : TAKEN
      },
      end: () => {},
      fail: (error) => assert.fail(`the consumer was failed: ${error.message}`)
    })
    const readBuffer = Buffer.alloc(64 * KiB, 1)
    const small = pipe.offerLentUnsafe(readBuffer.subarray(0, 1))
    assert.strictEqual(small & KEPT, 0, "the source may read the next bytes into the same buffer")
    assert.strictEqual(got[0]!.lent, false)
    assert.notStrictEqual(got[0]!.bytes.buffer, readBuffer.buffer, "the consumer holds a copy, not the read buffer")
    const large = pipe.offerLentUnsafe(readBuffer.subarray(0, 16 * KiB))
    assert.strictEqual(large & KEPT, KEPT, "a large chunk is lent in place, as before")
    assert.strictEqual(got[1]!.bytes.buffer, readBuffer.buffer)
    assert.strictEqual(got[1]!.lent, true)
  })
})

// ---- properties ----------------------------------------------------------------------------------------

/** One step of the property: the writer's offers and writes, and the reader's ways of taking chunks. */
type Step =
  | { readonly _tag: "offer"; readonly sizes: ReadonlyArray<number> }
  | { readonly _tag: "lent"; readonly sizes: ReadonlyArray<number> }
  | { readonly _tag: "write"; readonly size: number }
  | { readonly _tag: "read" | "pull" | "pullAll" | "take" | "resume" | "detach" }
  | { readonly _tag: "attach"; readonly pauseAfter: number; readonly keep: boolean }

/** Mostly 1-byte chunks, then sizes on both sides of the copy threshold and of the block, and large ones. */
const chunkSize = fc.oneof(
  { weight: 6, arbitrary: fc.constant(1) },
  { weight: 3, arbitrary: fc.integer({ min: 1, max: 300 }) },
  { weight: 1, arbitrary: fc.constantFrom(COALESCE_BELOW_BYTES - 1, COALESCE_BELOW_BYTES, BLOCK_BYTES, 20 * KiB) }
)

const step: fc.Arbitrary<Step> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({ _tag: fc.constant("offer" as const), sizes: fc.array(chunkSize, { maxLength: 300 }) })
  },
  {
    weight: 2,
    arbitrary: fc.record({ _tag: fc.constant("lent" as const), sizes: fc.array(chunkSize, { maxLength: 50 }) })
  },
  { weight: 1, arbitrary: fc.record({ _tag: fc.constant("write" as const), size: chunkSize }) },
  { weight: 3, arbitrary: fc.constantFrom("read", "pull", "pullAll", "take").map((_tag) => ({ _tag })) },
  {
    weight: 1,
    arbitrary: fc.record({
      _tag: fc.constant("attach" as const),
      pauseAfter: fc.integer({ min: 1, max: 40 }),
      keep: fc.boolean()
    })
  },
  { weight: 1, arbitrary: fc.constantFrom("resume", "detach").map((_tag) => ({ _tag })) }
)

describe(`BytePipe properties (seed ${seed}, ${numRuns} runs)`, () => {
  it("small and large chunks, offered, lent and written, come back exact and in order to reads, pulls and a lending consumer", () =>
    fc.assert(
      fc.property(fc.array(step, { maxLength: 60 }), (steps) => {
        const pipe = makePipe(64 * MiB)
        const next = byteSource()
        const want: Array<Uint8Array> = []
        const got: Array<Uint8Array> = []
        // The source's reused read buffer, as a socket's in `onread` mode: overwritten after every offer.
        let reused = Buffer.allocUnsafe(64 * KiB)
        let attachment: { readonly resume: () => void; readonly detach: () => void } | undefined
        for (const s of steps) {
          switch (s._tag) {
            case "offer":
              for (const size of s.sizes) {
                const chunk = next(size)
                want.push(Uint8Array.from(chunk))
                pipe.offerUnsafe(chunk)
              }
              break
            case "lent":
              for (const size of s.sizes) {
                const bytes = next(size, reused)
                want.push(Uint8Array.from(bytes))
                const answer = pipe.offerLentUnsafe(bytes)
                if ((answer & KEPT) !== 0) reused = Buffer.allocUnsafe(64 * KiB)
                else reused.fill(0xee) // the next read lands here: a kept view of it would change
              }
              break
            case "write": {
              const chunk = next(s.size)
              want.push(Uint8Array.from(chunk))
              Effect.runSync(pipe.write(chunk)) // the capacity is never reached: accepted at once
              break
            }
            case "read":
            case "pull":
            case "pullAll":
            case "take":
              // Nothing else reads while a consumer is attached; and nothing is read from an empty buffer.
              if (attachment !== undefined || pipe.buffered === 0) break
              if (s._tag === "read") got.push(Option.getOrThrow(Effect.runSync(pipe.read)))
              else if (s._tag === "pull") got.push(...Effect.runSync(pipe.pull))
              else if (s._tag === "pullAll") got.push(...Effect.runSync(pipe.pullAll))
              else got.push(pipe.takeUnsafe()!)
              break
            case "attach": {
              if (attachment !== undefined) break
              const c = { taken: 0, pauseAfter: s.pauseAfter, keep: s.keep }
              const sink: PushSink = {
                takesLent: true,
                chunk: (bytes, lent) => {
                  // A lent chunk is copied, or kept with KEPT; any other is kept as it is.
                  got.push(lent && !c.keep ? Uint8Array.from(bytes) : bytes)
                  const flags = lent && c.keep ? KEPT : TAKEN
                  return ++c.taken % c.pauseAfter === 0 ? flags | PAUSE : flags
                },
                end: () => {},
                fail: (error) => assert.fail(`the consumer was failed: ${error.message}`)
              }
              attachment = pipe.attach(sink)
              break
            }
            case "resume":
              attachment?.resume()
              break
            case "detach":
              attachment?.detach()
              attachment = undefined
              break
          }
        }
        attachment?.detach()
        pipe.end()
        for (;;) {
          const chunk = Effect.runSync(pipe.read)
          if (Option.isNone(chunk)) break
          got.push(chunk.value)
        }
        // Compared only at the end: a chunk handed out and then overwritten by a later copy would differ.
        assertSameChunks(got, want, `${steps.length} steps`)
        assert.strictEqual(pipe.bytesOut, pipe.bytesIn)
      }),
      params
    ))
})
