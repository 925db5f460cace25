/**
 * Framing: length-prefixed data and control frames over a duplex, with a maximum frame size.
 *
 * Wire format under test: a 5-byte header (kind byte, 0 data / 1 control; payload length, u32 big-endian),
 * then the payload.
 *
 * Seeds: the property tests use `FC_SEED` if set, else a fresh one, shown in the `describe` title; a failure
 * prints `{ seed, path }` (replay with `FC_SEED=<seed>`). `FC_RUNS` overrides the number of runs (default 100).
 */
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Fiber, Option, Stream } from "effect"
import fc from "fast-check"
import { Duplex, DuplexError, Framing, Tcp } from "fullduplex"
import { capacity, concatBytes, firstDifference, prng, randomBytes } from "fullduplex/testkit"
import { duplexErrorOf, gc, liveBytes, reasonOf, within } from "./helpers.js"

const KiB = 1024
const MiB = 1024 * KiB

/** Payloads up to this size are sent header and payload in one write, larger ones in two (Framing.ts). */
const COALESCE_BYTES = 16 * KiB
const HEADER = Framing.FRAME_HEADER_BYTES

const seed = Number(process.env["FC_SEED"] ?? Math.floor(Math.random() * 2 ** 31))
const numRuns = Number(process.env["FC_RUNS"] ?? 100)
const params = { seed, numRuns }

const text = (s: string) => new TextEncoder().encode(s)

/** A frame header as the wire format defines it, written by hand (not by the code under test). */
const header = (kind: number, length: number): Uint8Array =>
  Uint8Array.of(kind, length >>> 24, (length >>> 16) & 0xff, (length >>> 8) & 0xff, length & 0xff)

/** Lets forked fibers run until they block. */
const settle = Effect.gen(function* () {
  for (let i = 0; i < 20; i++) yield* Effect.yieldNow
})

/**
 * The exit of `effect`, which must be ready without more input or time: every error path here has its
 * input in the buffer already, so an implementation that waited instead would hang the test. Fails at once.
 */
const promptly = <A, E>(effect: Effect.Effect<A, E>): Effect.Effect<Exit.Exit<A, E>> =>
  Effect.gen(function* () {
    const fiber = yield* Effect.forkChild(effect, { startImmediately: true })
    yield* settle
    const exit = fiber.pollUnsafe()
    if (exit !== undefined) return exit
    yield* Fiber.interrupt(fiber)
    return assert.fail("still waiting for input that is never coming: it should have completed at once")
  })

/** The next frame, which must be complete in the buffer already (or the end, or the failure, known already). */
const readNow = (framed: Framing.Framed): Effect.Effect<Option.Option<Framing.Frame>, DuplexError.DuplexError> =>
  Effect.flatMap(promptly(framed.read), (exit) => exit)

const describeFrame = (f: Framing.Frame) => `${f._tag}(${f.payload.length} B)`

/** Frame by frame: the same kinds, the same payload bytes, in the same order. */
const assertSameFrames = (got: ReadonlyArray<Framing.Frame>, want: ReadonlyArray<Framing.Frame>, what: string) => {
  assert.strictEqual(
    got.length,
    want.length,
    `${what}: got ${got.length} frames [${got.map(describeFrame).join(", ")}], want ${want.length} [${want.map(describeFrame).join(", ")}]`
  )
  for (let i = 0; i < want.length; i++) {
    const g = got[i]!
    const w = want[i]!
    assert.strictEqual(g._tag, w._tag, `${what}: kind of frame ${i} (${describeFrame(w)})`)
    const at = firstDifference(g.payload, w.payload)
    assert.strictEqual(
      at,
      -1,
      `${what}: frame ${i} (${describeFrame(w)}): got ${g.payload.length} bytes, first difference at ${at}`
    )
  }
}

/** Reads frames with `read` until `None`. */
const readAllFrames = (framed: Framing.Framed): Effect.Effect<Array<Framing.Frame>, DuplexError.DuplexError> =>
  Effect.gen(function* () {
    const frames: Array<Framing.Frame> = []
    for (;;) {
      const next = yield* framed.read
      if (Option.isNone(next)) return frames
      frames.push(next.value)
    }
  })

/** Sends every frame with `send`, then half-closes. */
const sendAll = (framed: Framing.Framed, frames: ReadonlyArray<Framing.Frame>) =>
  Effect.andThen(Effect.forEach(frames, framed.send, { discard: true }), framed.end)

/** Both kinds at every size that matters: empty, one byte, 4 KiB, the coalescing boundary ± 1, 1 MiB. */
const ROUND_TRIP_SIZES = [0, 1, 4 * KiB, COALESCE_BYTES - 1, COALESCE_BYTES, COALESCE_BYTES + 1, MiB]
const mixedFrames = (): Array<Framing.Frame> =>
  ROUND_TRIP_SIZES.flatMap((size, i) => {
    const d = Framing.data(randomBytes(size, 2 * i + 1))
    const c = Framing.control(randomBytes(size, 2 * i + 2))
    return i % 2 === 0 ? [d, c] : [c, d]
  })

describe("Framing round trip", () => {
  it.effect("data and control frames of every size arrive in order with their kinds, read as the frames stream", () =>
    Effect.gen(function* () {
      for (const cap of [0, 1000, Duplex.DEFAULT_CAPACITY_BYTES]) {
        const [a, b] = yield* Duplex.pair({ capacity: cap })
        const sender = yield* Framing.make(a)
        const receiver = yield* Framing.make(b)
        const frames = mixedFrames()
        const sending = yield* Effect.forkChild(sendAll(sender, frames), { startImmediately: true })
        const got = yield* Stream.runCollect(receiver.frames)
        yield* Fiber.join(sending)
        assertSameFrames(got, frames, `capacity ${cap}, frames stream`)
        assert.deepStrictEqual(
          got.map(Framing.isControl),
          frames.map((f) => f._tag === "Control")
        )
      }
    })
  )

  it.effect("frames written through the sink arrive in order with their kinds, read one by one with read", () =>
    Effect.gen(function* () {
      for (const cap of [0, 1000, Duplex.DEFAULT_CAPACITY_BYTES]) {
        const [a, b] = yield* Duplex.pair({ capacity: cap })
        const sender = yield* Framing.make(a)
        const receiver = yield* Framing.make(b)
        const frames = mixedFrames()
        const sending = yield* Effect.forkChild(
          Effect.andThen(Stream.run(Stream.fromIterable(frames), sender.sink), sender.end),
          { startImmediately: true }
        )
        const got = yield* readAllFrames(receiver)
        yield* Fiber.join(sending)
        assertSameFrames(got, frames, `capacity ${cap}, sink → read`)
        assert.isTrue(Option.isNone(yield* receiver.read), "reads after the clean end keep returning None")
      }
    })
  )

  it.effect("the frames stream and read share one position: a run that stops after two frames leaves the third", () =>
    Effect.gen(function* () {
      const [a, b] = yield* Duplex.pair()
      const receiver = yield* Framing.make(b)
      const frames = [1, 2, 3, 4, 5].map((n) => (n % 2 === 0 ? Framing.control : Framing.data)(text(`frame ${n}`)))
      // All five frames in one chunk, so the decoder holds the rest while the stream stops.
      yield* a.write(concatBytes(frames.map(Framing.encode)))
      yield* a.end
      const firstTwo = yield* Stream.runCollect(Stream.take(receiver.frames, 2))
      const third = yield* readNow(receiver)
      const rest = yield* Stream.runCollect(receiver.frames)
      assertSameFrames([...firstTwo, ...Option.toArray(third), ...rest], frames, "take 2, read, rest")
    })
  )

  it.effect("a payload is its own: reading later frames does not change the bytes of earlier ones", () =>
    Effect.gen(function* () {
      const [a, b] = yield* Duplex.pair({ capacity: 100 })
      const sender = yield* Framing.make(a)
      const receiver = yield* Framing.make(b)
      // Payloads that are reassembled across chunks, one after another of the same size.
      const frames = [1, 2, 3].map((n) => Framing.data(randomBytes(4 * KiB, n)))
      yield* Effect.forkChild(sendAll(sender, frames), { startImmediately: true })
      const first = yield* receiver.read
      const rest = yield* readAllFrames(receiver)
      assertSameFrames([...Option.toArray(first), ...rest], frames, "frames kept while reading on")
    })
  )
})

describe("Framing guards and constructors", () => {
  it("data and control frames are told apart, and isFrame accepts frames only", () => {
    const d = Framing.data(Uint8Array.of(1))
    const c = Framing.control(Uint8Array.of(1))
    assert.isFalse(Framing.isControl(d))
    assert.isTrue(Framing.isControl(c))
    assert.isTrue(Framing.isFrame(d) && Framing.isFrame(c))
    assert.isFalse(Framing.isFrame({ _tag: "Data", payload: [1] }))
    assert.isFalse(Framing.isFrame({ _tag: "Other", payload: Uint8Array.of(1) }))
    assert.isFalse(Framing.isFrame(null))
  })

  it("encode writes the kind byte, the big-endian payload length and the payload, nothing else", () => {
    assert.deepStrictEqual(Array.from(Framing.encode(Framing.data(Uint8Array.of(1, 2, 3)))), [0, 0, 0, 0, 3, 1, 2, 3])
    assert.deepStrictEqual(Array.from(Framing.encode(Framing.control(new Uint8Array(0)))), [1, 0, 0, 0, 0])
    assert.deepStrictEqual(
      Array.from(Framing.encode(Framing.control(new Uint8Array(258).fill(7))).subarray(0, 7)),
      [1, 0, 0, 1, 2, 7, 7]
    )
    // Every byte of the length field distinct and non-zero: catches a swapped or shifted byte order.
    const length = 0x01_02_03_04
    const big = Framing.encode(Framing.control(new Uint8Array(length)))
    assert.strictEqual(big.length, HEADER + length)
    assert.deepStrictEqual(Array.from(big.subarray(0, HEADER)), [1, 1, 2, 3, 4])
  })

  it.effect("send writes exactly the bytes of encode, for coalesced and two-write frames", () =>
    Effect.gen(function* () {
      const [a, b] = yield* Duplex.pair()
      const sender = yield* Framing.make(a)
      const frames = [
        Framing.control(text("hi")),
        Framing.data(randomBytes(COALESCE_BYTES + 1, 1)),
        Framing.control(randomBytes(COALESCE_BYTES + 7, 2)),
        Framing.data(new Uint8Array(0))
      ]
      yield* Effect.forkChild(sendAll(sender, frames), { startImmediately: true })
      const raw = concatBytes(yield* Stream.runCollect(b.readable))
      const want = concatBytes(frames.map(Framing.encode))
      assert.strictEqual(firstDifference(raw, want), -1, `got ${raw.length} bytes, want ${want.length}`)
    })
  )

  it.effect("rejects a maxFrameBytes that is negative, fractional, NaN or over 4 GiB - 1 with InvalidOptions", () =>
    Effect.gen(function* () {
      const [a] = yield* Duplex.pair()
      for (const maxFrameBytes of [-1, 0.5, 1.5, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 32, 2 ** 53]) {
        const exit = yield* Effect.exit(Framing.make(a, { maxFrameBytes }))
        const reason = reasonOf(exit, "InvalidOptions", `maxFrameBytes ${maxFrameBytes}`)
        assert.strictEqual(reason.option, "maxFrameBytes")
        assert.strictEqual(reason.label, a.label)
        assert.include(duplexErrorOf(exit).message, "maxFrameBytes")
      }
      for (const maxFrameBytes of [0, 1, Framing.MAX_FRAME_BYTES_LIMIT]) {
        assert.strictEqual((yield* Framing.make(a, { maxFrameBytes })).maxFrameBytes, maxFrameBytes)
      }
      assert.strictEqual(Framing.MAX_FRAME_BYTES_LIMIT, 2 ** 32 - 1)
      assert.strictEqual((yield* Framing.make(a)).maxFrameBytes, Framing.DEFAULT_MAX_FRAME_BYTES)
      assert.strictEqual((yield* Framing.make(a, { maxFrameBytes: undefined })).maxFrameBytes, 4 * MiB)
    })
  )
})

describe("Framing maxFrameBytes", () => {
  it.effect(
    "delivers the frames before an oversized header, a frame of exactly the limit included, then fails FrameTooLarge inbound",
    () =>
      Effect.gen(function* () {
        const limit = 1000
        const [a, b] = yield* Duplex.pair()
        const receiver = yield* Framing.make(b, { maxFrameBytes: limit })
        const before = [
          Framing.data(text("before")),
          Framing.control(randomBytes(limit, 1)),
          Framing.data(new Uint8Array(0))
        ]
        // One chunk: the good frames, then a header announcing limit + 1 with its payload, then a good frame.
        yield* a.write(concatBytes([...before.map(Framing.encode), header(0, limit + 1), new Uint8Array(limit + 1)]))
        yield* a.write(Framing.encode(Framing.data(text("after"))))
        yield* a.end
        const got: Array<Framing.Frame> = []
        for (let i = 0; i < before.length; i++) got.push(...Option.toArray(yield* readNow(receiver)))
        assertSameFrames(got, before, "frames before the oversized one")
        const exit = yield* promptly(receiver.read)
        const reason = reasonOf(exit, "FrameTooLarge", "the oversized frame")
        assert.deepStrictEqual(
          { direction: reason.direction, length: reason.length, limit: reason.limit, label: reason.label },
          { direction: "inbound", length: limit + 1, limit, label: b.label }
        )
        // Sticky: the stream cannot be resynchronised, so every later read repeats the failure.
        const again = yield* promptly(receiver.read)
        assert.deepStrictEqual(reasonOf(again, "FrameTooLarge", "the read after the failure"), reason)
        const streamed = yield* promptly(Stream.runCollect(receiver.frames))
        assert.deepStrictEqual(reasonOf(streamed, "FrameTooLarge", "the frames stream after the failure"), reason)
      })
  )

  it.effect("fails at once on a header announcing 4 GiB - 1, without waiting for its payload or allocating it", () =>
    Effect.gen(function* () {
      const limit = 64 * KiB
      const announced = Framing.MAX_FRAME_BYTES_LIMIT
      // The header whole in one chunk, and cut into pieces (the decoder's other header path).
      for (const cuts of [[HEADER], [1, 4], [3, 1, 1]]) {
        const [a, b] = yield* Duplex.pair()
        const receiver = yield* Framing.make(b, { maxFrameBytes: limit })
        const before = process.memoryUsage().arrayBuffers
        const bytes = header(1, announced)
        let at = 0
        const reading = yield* Effect.forkChild(receiver.read, { startImmediately: true })
        for (const n of cuts) {
          yield* a.write(bytes.subarray(at, (at += n)))
          yield* settle
        }
        // No payload byte is ever written and the peer does not end: a read that waited would wait forever.
        const exit = reading.pollUnsafe()
        assert.isDefined(exit, `cuts ${cuts}: the read must fail on the header alone, not wait for the payload`)
        const reason = reasonOf(exit!, "FrameTooLarge", `cuts ${cuts}`)
        assert.strictEqual(reason.length, announced)
        assert.strictEqual(reason.limit, limit)
        assert.strictEqual(reason.direction, "inbound")
        const grown = process.memoryUsage().arrayBuffers - before
        assert.isBelow(grown, 256 * MiB, `cuts ${cuts}: array buffers grew by ${grown} bytes for a rejected frame`)
        const again = yield* promptly(receiver.read)
        assert.deepStrictEqual(reasonOf(again, "FrameTooLarge", "the read after"), reason)
      }
    })
  )

  it.effect("waits for the payload of a frame within the limit, and delivers it whole", () =>
    Effect.gen(function* () {
      const [a, b] = yield* Duplex.pair()
      const receiver = yield* Framing.make(b, { maxFrameBytes: 100 })
      const frame = Framing.data(randomBytes(100, 9))
      const bytes = Framing.encode(frame)
      yield* a.write(bytes.subarray(0, HEADER))
      const reading = yield* Effect.forkChild(receiver.read, { startImmediately: true })
      yield* settle
      assert.isUndefined(reading.pollUnsafe(), "a frame of exactly the limit is not rejected")
      yield* a.write(bytes.subarray(HEADER))
      assertSameFrames(Option.toArray(yield* Fiber.join(reading)), [frame], "the frame of exactly the limit")
    })
  )

  it.effect("with maxFrameBytes 0 only empty frames pass, either way", () =>
    Effect.gen(function* () {
      const [a, b] = yield* Duplex.pair()
      const sender = yield* Framing.make(a, { maxFrameBytes: 0 })
      const receiver = yield* Framing.make(b, { maxFrameBytes: 0 })
      yield* sender.send(Framing.control(new Uint8Array(0)))
      const out = yield* promptly(sender.send(Framing.data(Uint8Array.of(1))))
      assert.strictEqual(reasonOf(out, "FrameTooLarge", "a 1-byte send").direction, "outbound")
      assertSameFrames(Option.toArray(yield* readNow(receiver)), [Framing.control(new Uint8Array(0))], "empty frame")
      yield* a.write(header(0, 1))
      const inbound = reasonOf(yield* promptly(receiver.read), "FrameTooLarge", "a 1-byte frame")
      assert.deepStrictEqual([inbound.direction, inbound.length, inbound.limit], ["inbound", 1, 0])
    })
  )

  it.effect("a send over the limit fails FrameTooLarge outbound, writes nothing, and the connection stays usable", () =>
    Effect.gen(function* () {
      const limit = 1000
      const [a, b] = yield* Duplex.pair()
      const sender = yield* Framing.make(a, { maxFrameBytes: limit })
      // The receiver accepts big frames: had any byte of a rejected frame been written, it would show up.
      const receiver = yield* Framing.make(b)
      for (const size of [limit + 1, COALESCE_BYTES + 1, MiB]) {
        for (const frame of [Framing.data(new Uint8Array(size)), Framing.control(new Uint8Array(size))]) {
          const exit = yield* promptly(sender.send(frame))
          const reason = reasonOf(exit, "FrameTooLarge", `a send of ${describeFrame(frame)}`)
          assert.deepStrictEqual(
            { direction: reason.direction, length: reason.length, limit: reason.limit, label: reason.label },
            { direction: "outbound", length: size, limit, label: a.label }
          )
        }
      }
      assert.strictEqual((yield* a.stats).outbound.bytes, 0, "no byte of a rejected frame was written")
      const sinkExit = yield* promptly(Stream.run(Stream.make(Framing.data(new Uint8Array(limit + 1))), sender.sink))
      assert.strictEqual(reasonOf(sinkExit, "FrameTooLarge", "the sink").direction, "outbound")
      const good = [Framing.data(randomBytes(limit, 1)), Framing.control(text("still here"))]
      yield* sendAll(sender, good)
      assertSameFrames(yield* readAllFrames(receiver), good, "the frames after the rejected ones")
    })
  )
})

describe("Framing truncation and protocol errors", () => {
  it.effect("an EOF between frames is a clean end, after every frame", () =>
    Effect.gen(function* () {
      for (const chunked of [false, true]) {
        const [a, b] = yield* Duplex.pair()
        const receiver = yield* Framing.make(b)
        const frames = [Framing.data(text("one")), Framing.control(new Uint8Array(0)), Framing.data(text("three"))]
        const bytes = concatBytes(frames.map(Framing.encode))
        yield* a.writeAll(chunked ? Array.from(bytes, (x) => Uint8Array.of(x)) : [bytes])
        yield* a.end
        assertSameFrames(yield* Stream.runCollect(receiver.frames), frames, `chunked ${chunked}`)
        assert.isTrue(Option.isNone(yield* readNow(receiver)))
        assert.deepStrictEqual(yield* Stream.runCollect(receiver.frames), [])
      }
      const [a, b] = yield* Duplex.pair()
      const receiver = yield* Framing.make(b)
      yield* a.end
      assert.isTrue(Option.isNone(yield* readNow(receiver)), "a stream with no frame at all ends cleanly")
    })
  )

  it.effect("an EOF inside a header fails FrameTruncated header, expected 5, received what came", () =>
    Effect.gen(function* () {
      for (const pieces of [[3], [1, 2], [1, 1, 1], [4], [1]]) {
        const [a, b] = yield* Duplex.pair()
        const receiver = yield* Framing.make(b)
        const first = Framing.data(text("whole"))
        yield* a.write(Framing.encode(first))
        const next = header(1, 10)
        let at = 0
        for (const n of pieces) yield* a.write(next.subarray(at, (at += n)))
        yield* a.end
        assertSameFrames(Option.toArray(yield* readNow(receiver)), [first], `pieces ${pieces}: the whole frame`)
        const reason = reasonOf(yield* promptly(receiver.read), "FrameTruncated", `pieces ${pieces}`)
        assert.deepStrictEqual(
          { part: reason.part, expected: reason.expectedBytes, received: reason.receivedBytes, label: reason.label },
          { part: "header", expected: HEADER, received: at, label: b.label }
        )
        assert.deepStrictEqual(reasonOf(yield* promptly(receiver.read), "FrameTruncated", "again"), reason)
      }
    })
  )

  it.effect("an EOF inside a payload fails FrameTruncated payload, with the announced and received counts", () =>
    Effect.gen(function* () {
      // [received payload bytes, how the header and those bytes are cut into writes]
      const cases: ReadonlyArray<readonly [number, ReadonlyArray<number>]> = [
        [0, [HEADER]],
        [40, [HEADER + 40]],
        [40, [HEADER, 40]],
        [40, [2, 3 + 10, 30]],
        [99, [HEADER + 99]]
      ]
      for (const [received, cuts] of cases) {
        const [a, b] = yield* Duplex.pair()
        const receiver = yield* Framing.make(b)
        const before = [Framing.control(text("a")), Framing.data(randomBytes(300, 1))]
        const cut = concatBytes([header(0, 100), randomBytes(received, 2)])
        // The frames before share the first write with the start of the cut one.
        const writes: Array<Uint8Array> = []
        let at = 0
        for (const n of cuts) writes.push(cut.subarray(at, (at += n)))
        writes[0] = concatBytes([...before.map(Framing.encode), writes[0]!])
        yield* a.writeAll(writes)
        yield* a.end
        const exit = yield* promptly(Stream.runCollect(receiver.frames))
        const reason = reasonOf(exit, "FrameTruncated", `${received} of 100, cuts ${cuts}`)
        assert.deepStrictEqual(
          { part: reason.part, expected: reason.expectedBytes, received: reason.receivedBytes },
          { part: "payload", expected: 100, received }
        )
        // The stream failed after the whole frames: they were consumed, so read sees the failure again.
        assert.deepStrictEqual(reasonOf(yield* promptly(receiver.read), "FrameTruncated", "again"), reason)
      }
      // The same, read frame by frame, to see that the frames before the cut one were delivered.
      const [a, b] = yield* Duplex.pair()
      const receiver = yield* Framing.make(b)
      const before = [Framing.control(text("a")), Framing.data(randomBytes(300, 1))]
      yield* a.write(concatBytes([...before.map(Framing.encode), header(0, 100), new Uint8Array(40)]))
      yield* a.end
      const got = [...Option.toArray(yield* readNow(receiver)), ...Option.toArray(yield* readNow(receiver))]
      assertSameFrames(got, before, "the frames before the cut one")
      assert.strictEqual(reasonOf(yield* promptly(receiver.read), "FrameTruncated", "cut").receivedBytes, 40)
    })
  )

  it.effect("an unknown kind byte fails ProtocolError naming the kind, after the frames before it", () =>
    Effect.gen(function* () {
      for (const kind of [2, 3, 127, 255]) {
        for (const split of [false, true]) {
          const [a, b] = yield* Duplex.pair()
          const receiver = yield* Framing.make(b)
          const first = Framing.control(text("fine"))
          const bad = concatBytes([header(kind, 3), Uint8Array.of(1, 2, 3)])
          if (split) yield* a.writeAll([Framing.encode(first), bad.subarray(0, 2), bad.subarray(2)])
          else yield* a.write(concatBytes([Framing.encode(first), bad]))
          assertSameFrames(Option.toArray(yield* readNow(receiver)), [first], `kind ${kind}: the frame before`)
          const reason = reasonOf(yield* promptly(receiver.read), "ProtocolError", `kind ${kind}`)
          assert.match(reason.problem, new RegExp(`\\bkind\\b.*\\b${kind}\\b`), `kind ${kind}: ${reason.problem}`)
          assert.strictEqual(reason.label, b.label)
          assert.deepStrictEqual(reasonOf(yield* promptly(receiver.read), "ProtocolError", "again"), reason)
        }
      }
    })
  )

  it.effect("error messages name the limit and the counts", () =>
    Effect.gen(function* () {
      const [a, b] = yield* Duplex.pair()
      const sender = yield* Framing.make(a, { maxFrameBytes: 100 })
      const receiver = yield* Framing.make(b, { maxFrameBytes: 100 })

      const outbound = duplexErrorOf(yield* promptly(sender.send(Framing.data(new Uint8Array(101)))))
      assert.match(outbound.message, /101 B.*maxFrameBytes \(100 B\)/, outbound.message)

      yield* a.write(header(0, 5 * MiB))
      const inbound = duplexErrorOf(yield* promptly(receiver.read))
      assert.match(inbound.message, /5\.0 MiB.*maxFrameBytes \(100 B\)/, inbound.message)
      assert.include(inbound.message, b.label)

      const [c, d] = yield* Duplex.pair()
      const cut = yield* Framing.make(d)
      yield* c.write(header(0, 10).subarray(0, 3))
      yield* c.end
      const header3of5 = duplexErrorOf(yield* promptly(cut.read))
      assert.match(header3of5.message, /3 of 5 bytes of its header/, header3of5.message)

      const [e, f] = yield* Duplex.pair()
      const cutPayload = yield* Framing.make(f)
      yield* e.write(concatBytes([header(0, 100), new Uint8Array(40)]))
      yield* e.end
      const payload40of100 = duplexErrorOf(yield* promptly(cutPayload.read))
      assert.match(payload40of100.message, /40 of 100 bytes of its payload/, payload40of100.message)
    })
  )
})

describe("Framing reads and sends under interruption and concurrency", () => {
  it.effect("an interrupted read loses nothing: the partial frame stays for the next read", () =>
    Effect.gen(function* () {
      const [a, b] = yield* Duplex.pair()
      const receiver = yield* Framing.make(b)
      const frame = Framing.control(randomBytes(1000, 4))
      const bytes = Framing.encode(frame)
      for (const [from, to] of [
        [0, 3],
        [3, 500]
      ] as const) {
        yield* a.write(bytes.subarray(from, to))
        const reading = yield* Effect.forkChild(receiver.read, { startImmediately: true })
        yield* settle
        assert.isUndefined(reading.pollUnsafe(), `after ${to} bytes the read waits`)
        yield* Fiber.interrupt(reading)
      }
      yield* a.write(bytes.subarray(500))
      yield* a.end
      assertSameFrames(yield* readAllFrames(receiver), [frame], "the frame read after two interrupted reads")
    })
  )

  it.effect("end waits for a send in progress: the peer reads the whole frame, then a clean end", () =>
    Effect.gen(function* () {
      for (const cap of [0, 1000]) {
        for (const size of [COALESCE_BYTES, 64 * KiB]) {
          const [a, b] = yield* Duplex.pair({ capacity: cap })
          const sender = yield* Framing.make(a)
          const receiver = yield* Framing.make(b)
          const frame = Framing.data(randomBytes(size, 5))
          const sending = yield* Effect.forkChild(sender.send(frame), { startImmediately: true })
          yield* settle
          assert.isUndefined(sending.pollUnsafe(), "the send waits for the reader")
          const ending = yield* Effect.forkChild(sender.end, { startImmediately: true })
          const got = yield* readAllFrames(receiver)
          yield* Fiber.join(sending)
          yield* Fiber.join(ending)
          assertSameFrames(got, [frame], `capacity ${cap}, ${size} B`)
        }
      }
    })
  )

  it.effect("concurrent sends never interleave bytes, with writes held back by a small buffer", () =>
    Effect.gen(function* () {
      const senders = 16
      const perSender = 8
      // Below, at and above the coalescing size; every payload starts with its sender and sequence number.
      const sizes = [8, 100, COALESCE_BYTES - 1, COALESCE_BYTES, COALESCE_BYTES + 1, 40 * KiB, 9, 100 * KiB]
      const frameOf = (sender: number, seq: number): Framing.Frame => {
        const payload = randomBytes(sizes[(sender + seq) % sizes.length]!, sender * 1000 + seq)
        payload[0] = sender
        payload[1] = seq
        return seq % 2 === 0 ? Framing.data(payload) : Framing.control(payload)
      }
      for (const cap of [0, 1000]) {
        const [a, b] = yield* Duplex.pair({ capacity: cap })
        const sender = yield* Framing.make(a)
        const receiver = yield* Framing.make(b)
        const sending = yield* Effect.forkChild(
          Effect.andThen(
            Effect.forEach(
              Array.from({ length: senders }, (_, s) => s),
              (s) =>
                Effect.forEach(
                  Array.from({ length: perSender }, (_, q) => q),
                  (q) => sender.send(frameOf(s, q)),
                  { discard: true }
                ),
              { concurrency: "unbounded", discard: true }
            ),
            sender.end
          ),
          { startImmediately: true }
        )
        const got = yield* readAllFrames(receiver)
        yield* Fiber.join(sending)
        assert.strictEqual(got.length, senders * perSender, `capacity ${cap}: frames received`)
        const bySender = Array.from({ length: senders }, () => [] as Array<Framing.Frame>)
        for (const f of got) bySender[f.payload[0]!]?.push(f)
        for (let s = 0; s < senders; s++) {
          const want = Array.from({ length: perSender }, (_, q) => frameOf(s, q))
          assertSameFrames(bySender[s]!, want, `capacity ${cap}, sender ${s}`)
        }
        // Something really ran concurrently: the senders' frames are mixed, not one sender after another.
        const switches = got.filter((f, i) => i > 0 && f.payload[0] !== got[i - 1]!.payload[0]).length
        assert.isAbove(switches, senders - 1, `capacity ${cap}: frames of different senders alternate`)
      }
    })
  )

  it.effect("after abort, reads and sends fail Closed", () =>
    Effect.gen(function* () {
      const [a] = yield* Duplex.pair()
      const framed = yield* Framing.make(a)
      yield* framed.abort
      assert.strictEqual(reasonOf(yield* promptly(framed.read), "Closed", "read").operation, "read")
      assert.strictEqual(
        reasonOf(yield* promptly(framed.send(Framing.data(text("x")))), "Closed", "send").after,
        "abort"
      )
    })
  )
})

// ---- memory under a hostile chunking -------------------------------------------------------------------

describe("Framing memory", () => {
  it.effect(
    "a 1 MiB frame arriving one byte per write through a pair reads back byte-exact, and reassembling it costs under twice the frame",
    () =>
      Effect.gen(function* () {
        const size = 1 * MiB
        const [a, b] = yield* Duplex.pair()
        const receiver = yield* Framing.make(b, { maxFrameBytes: size })
        const frame = Framing.data(randomBytes(size, 20))
        const bytes = Framing.encode(frame)
        const reading = yield* Effect.forkChild(receiver.read, { startImmediately: true })
        const before = gc === undefined ? 0 : liveBytes(gc)
        // Every byte but the last: the decoder then holds the whole partial frame (a piece per byte, before the fix).
        for (let i = 0; i < bytes.length - 1; i++) yield* a.write(bytes.subarray(i, i + 1))
        yield* settle
        assert.isUndefined(reading.pollUnsafe(), "the frame is not complete before its last byte")
        const grown = gc === undefined ? 0 : liveBytes(gc) - before
        yield* a.write(bytes.subarray(bytes.length - 1))
        assertSameFrames(Option.toArray(yield* Fiber.join(reading)), [frame], "the frame in 1-byte pieces")
        if (gc !== undefined) {
          // The payload, and at most 64 KiB of the buffer it grew from; a piece per byte cost over 100 bytes each.
          assert.isBelow(grown, 2 * size, `reassembly grew the heap by ${grown} bytes for a ${size}-byte frame`)
        }
      }),
    60_000
  )
})

// ---- properties ----------------------------------------------------------------------------------------

/** Runs a fast-check property whose predicate is an Effect, each run in its own scope. */
const property = <T>(arb: fc.Arbitrary<T>, predicate: (value: T) => Effect.Effect<void, unknown, never>) =>
  Effect.promise(() =>
    fc.assert(
      fc.asyncProperty(arb, (value) => Effect.runPromise(predicate(value))),
      params
    )
  )

/** A frame as a counterexample prints it: its kind, size and the seed of its bytes. */
interface FrameSpec {
  readonly control: boolean
  readonly size: number
  readonly seed: number
}

const frameOfSpec = (spec: FrameSpec): Framing.Frame =>
  (spec.control ? Framing.control : Framing.data)(randomBytes(spec.size, spec.seed))

/** Sizes from empty to `max`, with the coalescing boundary ± 1 drawn often when `max` allows it. */
const frameSize = (max: number): fc.Arbitrary<number> => {
  const boundary = [COALESCE_BYTES - 1, COALESCE_BYTES, COALESCE_BYTES + 1].filter((n) => n <= max)
  return fc.oneof(
    fc.integer({ min: 0, max: Math.min(max, 8) }),
    fc.integer({ min: 0, max: Math.min(max, 1024) }),
    boundary.length > 0 ? fc.constantFrom(...boundary) : fc.constant(max),
    fc.integer({ min: 0, max })
  )
}

const frameSpecs = (maxFrame: number): fc.Arbitrary<ReadonlyArray<FrameSpec>> =>
  fc.array(fc.record({ control: fc.boolean(), size: frameSize(maxFrame), seed: fc.integer() }), { maxLength: 12 })

/**
 * How the encoded bytes are cut into writes: at random positions; inside the headers (offsets 0–5 from a
 * frame's start, chosen per frame; 5 is the header/payload boundary); and a run of 1-byte pieces.
 */
interface Cutting {
  readonly cuts: ReadonlyArray<number>
  readonly headerCuts: ReadonlyArray<ReadonlyArray<number>>
  readonly dribble: { readonly at: number; readonly bytes: number }
}

const cutting = (specs: ReadonlyArray<FrameSpec>): fc.Arbitrary<Cutting> => {
  const total = specs.reduce((n, s) => n + HEADER + s.size, 0)
  return fc.record({
    cuts: total <= 1 ? fc.constant([]) : fc.uniqueArray(fc.integer({ min: 1, max: total - 1 }), { maxLength: 64 }),
    headerCuts: fc.array(fc.subarray([0, 1, 2, 3, 4, 5]), { minLength: specs.length, maxLength: specs.length }),
    dribble: fc.record({ at: fc.integer({ min: 0, max: total }), bytes: fc.integer({ min: 0, max: 64 }) })
  })
}

/** The pieces (views into `bytes`) that `cutting` says to write. */
const piecesOf = (bytes: Uint8Array, specs: ReadonlyArray<FrameSpec>, c: Cutting): Array<Uint8Array> => {
  const bounds = new Set<number>(c.cuts)
  let start = 0
  specs.forEach((spec, i) => {
    for (const offset of c.headerCuts[i] ?? []) bounds.add(start + offset)
    start += HEADER + spec.size
  })
  for (let k = 0; k <= c.dribble.bytes; k++) bounds.add(c.dribble.at + k)
  const sorted = [0, ...Array.from(bounds).filter((n) => n > 0 && n < bytes.length), bytes.length].sort((x, y) => x - y)
  const pieces: Array<Uint8Array> = []
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i]! > sorted[i - 1]!) pieces.push(bytes.subarray(sorted[i - 1], sorted[i]))
  }
  return pieces
}

/**
 * A tiny pipe capacity cuts every write into pieces of at most that many bytes, one read each: frames are
 * kept to a few hundred reads' worth per run (capacity 0 hands writes over whole).
 */
const maxFrameFor = (cap: number) => (cap === 0 ? 200 * KiB : Math.min(200 * KiB, Math.max(256, cap * 256)))

describe(`Framing properties (seed ${seed}, ${numRuns} runs)`, () => {
  it.live(
    "frames written as raw bytes cut anywhere, headers and 1-byte pieces included, decode to the same frames",
    () =>
      property(
        frameSpecs(200 * KiB).chain((specs) => fc.record({ specs: fc.constant(specs), cutting: cutting(specs) })),
        ({ specs, cutting }) =>
          Effect.scoped(
            Effect.gen(function* () {
              const frames = specs.map(frameOfSpec)
              const bytes = concatBytes(frames.map(Framing.encode))
              const pieces = piecesOf(bytes, specs, cutting)
              assert.strictEqual(concatBytes(pieces).length, bytes.length)
              const [a, b] = yield* Duplex.pair()
              const receiver = yield* Framing.make(b, { maxFrameBytes: 200 * KiB })
              yield* Effect.forkScoped(Effect.andThen(a.writeAll(pieces), a.end))
              assertSameFrames(yield* Stream.runCollect(receiver.frames), frames, `${pieces.length} pieces`)
            })
          )
      ),
    120_000
  )

  it.live(
    "frames sent through pairs of any capacity, as raw cut bytes or through the sink, decode to the same frames",
    () =>
      property(
        capacity({ maxBytes: 256 * KiB }).chain((cap) =>
          frameSpecs(maxFrameFor(cap)).chain((specs) =>
            fc.record({
              capacity: fc.constant(cap),
              specs: fc.constant(specs),
              cutting: cutting(specs),
              via: fc.constantFrom("pieces" as const, "sink" as const)
            })
          )
        ),
        ({ capacity, specs, cutting, via }) =>
          Effect.scoped(
            Effect.gen(function* () {
              const frames = specs.map(frameOfSpec)
              const [a, b] = yield* Duplex.pair({ capacity })
              const receiver = yield* Framing.make(b, { maxFrameBytes: 200 * KiB })
              if (via === "sink") {
                const sender = yield* Framing.make(a, { maxFrameBytes: 200 * KiB })
                yield* Effect.forkScoped(
                  Effect.andThen(Stream.run(Stream.fromIterable(frames), sender.sink), sender.end)
                )
              } else {
                const pieces = piecesOf(concatBytes(frames.map(Framing.encode)), specs, cutting)
                yield* Effect.forkScoped(Effect.andThen(a.writeAll(pieces), a.end))
              }
              assertSameFrames(yield* readAllFrames(receiver), frames, `capacity ${capacity}, via ${via}`)
            })
          )
      ),
    120_000
  )

  it.live(
    "frames around the reassembly buffer's sizes, cut by a repeating pattern of piece sizes (runs of 1 byte included), decode to the same frames",
    () =>
      property(
        fc.record({
          specs: fc.array(
            fc.record({
              control: fc.boolean(),
              // The reassembly buffer's steps: its first 256 bytes, 32 and 64 KiB (the last one that doubles), ± 1.
              size: fc.oneof(
                fc.constantFrom(255, 256, 257, 32 * KiB, 32 * KiB + 1, 64 * KiB - 1, 64 * KiB, 64 * KiB + 1),
                fc.integer({ min: 0, max: 96 * KiB })
              ),
              seed: fc.integer()
            }),
            { minLength: 1, maxLength: 4 }
          ),
          // Cycled over the bytes; sizes of 1 make stretches of 1-byte pieces, large ones whole frames.
          pattern: fc.array(
            fc.oneof(fc.constant(1), fc.integer({ min: 1, max: 300 }), fc.integer({ min: 1, max: 70 * KiB })),
            { minLength: 1, maxLength: 16 }
          )
        }),
        ({ specs, pattern }) =>
          Effect.scoped(
            Effect.gen(function* () {
              const frames = specs.map(frameOfSpec)
              const bytes = concatBytes(frames.map(Framing.encode))
              const [a, b] = yield* Duplex.pair()
              const receiver = yield* Framing.make(b, { maxFrameBytes: 96 * KiB })
              const writes = Effect.gen(function* () {
                for (let at = 0, i = 0; at < bytes.length; i++) {
                  const n = pattern[i % pattern.length]!
                  yield* a.write(bytes.subarray(at, (at += n)))
                }
                yield* a.end
              })
              yield* Effect.forkScoped(writes)
              assertSameFrames(yield* readAllFrames(receiver), frames, `pattern [${pattern.join(", ")}]`)
            })
          )
      ),
    120_000
  )
})

// ---- TCP -------------------------------------------------------------------------------------------------

/** At least `totalBytes` of frames of mixed kinds and sizes, from empty to 1 MiB, repeatable from `seed`. */
const mixedTraffic = (totalBytes: number, seed: number): Array<Framing.Frame> => {
  const next = prng(seed)
  const frames: Array<Framing.Frame> = []
  for (let total = 0, i = 0; total < totalBytes; i++) {
    const r = next()
    const size = [r % 64, COALESCE_BYTES - 1 + (r % 3), r % (64 * KiB), 64 * KiB + (r % (MiB - 64 * KiB + 1))][i % 4]!
    frames.push((r & 1 ? Framing.control : Framing.data)(randomBytes(size, seed * 7919 + i)))
    total += size
  }
  return frames
}

describe("Framing over TCP", () => {
  it.live(
    "10 MiB of frames of mixed sizes each way at once arrive byte-exact",
    () =>
      Effect.gen(function* () {
        const up = mixedTraffic(10 * MiB, 1)
        const down = mixedTraffic(10 * MiB, 2)
        // Each side sends everything and half-closes while it reads everything: both directions at once.
        const both = (framed: Framing.Framed, frames: ReadonlyArray<Framing.Frame>) =>
          Effect.map(Effect.all([sendAll(framed, frames), readAllFrames(framed)], { concurrency: 2 }), ([, got]) => got)
        const serverGot = yield* Deferred.make<Array<Framing.Frame>, DuplexError.DuplexError>()
        const server = yield* Tcp.serve({ host: "127.0.0.1", port: 0, shutdownGrace: 0 }, (conn) =>
          Effect.flatMap(Effect.exit(Effect.flatMap(Framing.make(conn), (framed) => both(framed, down))), (exit) =>
            Deferred.done(serverGot, exit)
          )
        )
        const client = yield* Framing.make(yield* Tcp.connect({ ...server.address, label: "client" }))
        const clientGot = yield* both(client, up).pipe(within("30 seconds", "the client's exchange"))
        const got = yield* Deferred.await(serverGot).pipe(within("30 seconds", "the server's exchange"))
        assertSameFrames(got, up, "client → server")
        assertSameFrames(clientGot, down, "server → client")
      }),
    60_000
  )
})
