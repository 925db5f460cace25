/**
 * Mux: a yamux session over a duplex, each stream itself a duplex.
 *
 * Most tests drive a session from a raw peer: one side of a `Duplex.pair` runs the session, the test writes
 * hand-made frames into the other side and parses what the session writes back with a parser of its own,
 * written from the yamux spec (not with the codec under test). The rest run two sessions back to back.
 *
 * Some tests pin down behaviour the session once lacked (found at commit 82ad956, or 3de7e00); a comment in
 * each says why it matters: what a peer or an application would see without it.
 *
 * Seeds: the property and fuzz tests use `FC_SEED` if set, else a fresh one, shown in the `describe` title; a
 * failure prints `{ seed, path }` (replay with `FC_SEED=<seed>`). `FC_RUNS` overrides the number of runs of
 * every property; `MUX_PROPERTY_MAX_MIB` the largest payload each way of a stream in the streams property
 * (default 2), `MUX_PROPERTY_MAX_STREAMS` its most streams (default 64), `MUX_PROPERTY_BUDGET_MIB` the most
 * bytes one run moves in all (default 8: larger runs are scaled down).
 */
import { assert, describe, it } from "@effect/vitest"
import { Cause, Clock, Deferred, type Duration, Effect, Exit, Fiber, Option, Scope, Stream } from "effect"
import { TestClock } from "effect/testing"
import fc from "fast-check"
import { Duplex, DuplexError, Mux, Tcp } from "fullduplex"
import {
  assertDeadlockFree,
  concatBytes,
  conformance,
  firstDifference,
  paced,
  type Pacing,
  pacing,
  prng,
  randomBytes,
  randomChunks,
  readAll
} from "fullduplex/testkit"
import { encodeHeader, FrameDecoder } from "../src/internal/yamux/codec.js"
import { SEND_HOLD_OVERRIDE_MILLIS } from "../src/internal/yamux/credit.js"
import { mutate, mutation as mutationOf } from "./frameMutations.js"
import { duplexErrorOf, eventually, reasonOf, servedPair, within } from "./helpers.js"

const KiB = 1024
const MiB = 1024 * KiB
/** The spec's initial window, the default `windowBytes`. */
const WINDOW = 256 * KiB
/** The most a stream's window grows to by default. */
const MAX_WINDOW = Mux.DEFAULT_MAX_WINDOW_BYTES

const seed = Number(process.env["FC_SEED"] || Math.floor(Math.random() * 2 ** 31))
const runsOr = (fallback: number) => Number(process.env["FC_RUNS"] || fallback)

// ---- helpers: the wire format from the spec, a raw peer ----------------------------------------------

/** Frame types and flags (yamux spec, "Type Field" and "Flag Field"), written out here rather than imported. */
const DATA = 0
const WINDOW_UPDATE = 1
const PING = 2
const GO_AWAY = 3
const SYN = 0x1
const ACK = 0x2
const FIN = 0x4
const RST = 0x8
const PROTOCOL_ERROR = 1
const INTERNAL_ERROR = 2

const TYPE_NAMES = ["Data", "WindowUpdate", "Ping", "GoAway"]

/** One frame as the session wrote it. */
interface Frame {
  readonly version: number
  readonly type: number
  readonly flags: number
  readonly streamId: number
  readonly length: number
  /** A Data frame's payload (a copy); empty for other types. */
  readonly payload: Uint8Array
}

const u32 = (b: Uint8Array, at: number) => ((b[at]! << 24) | (b[at + 1]! << 16) | (b[at + 2]! << 8) | b[at + 3]!) >>> 0

const describeFrame = (f: Frame): string => {
  const flags = (
    [
      [SYN, "SYN"],
      [ACK, "ACK"],
      [FIN, "FIN"],
      [RST, "RST"]
    ] as const
  )
    .filter(([bit]) => (f.flags & bit) !== 0)
    .map(([, name]) => name)
  const type = TYPE_NAMES[f.type] ?? `type ${f.type}`
  return `${type}${flags.length > 0 ? `[${flags.join(",")}]` : ""} #${f.streamId} ${f.length}`
}

/**
 * Everything a session wrote to a connection, parsed into frames: a 12-byte header (version u8, type u8,
 * flags u16, stream id u32, length u32, big-endian), followed by `length` bytes of payload for a Data frame only.
 */
class FrameLog {
  readonly frames: Array<Frame> = []
  /** How the session's output ended, once it has: `"eof"`, or the read's failure. */
  end: "eof" | DuplexError.DuplexError | undefined = undefined
  private pending: Uint8Array = new Uint8Array(0)

  push(chunk: Uint8Array): void {
    const buf = this.pending.length === 0 ? chunk : concatBytes([this.pending, chunk])
    let at = 0
    while (buf.length - at >= 12) {
      const type = buf[at + 1]!
      const length = u32(buf, at + 8)
      const payloadBytes = type === DATA ? length : 0
      if (buf.length - at - 12 < payloadBytes) break
      this.frames.push({
        version: buf[at]!,
        type,
        flags: (buf[at + 2]! << 8) | buf[at + 3]!,
        streamId: u32(buf, at + 4),
        length,
        payload: buf.slice(at + 12, at + 12 + payloadBytes)
      })
      at += 12 + payloadBytes
    }
    this.pending = buf.slice(at)
  }

  /** Bytes of a frame cut short, still waiting for the rest. */
  get partial(): number {
    return this.pending.length
  }

  /** Reads `d` to its end, logging every frame. */
  drain(d: Duplex.Duplex): Effect.Effect<void> {
    const loop: Effect.Effect<void, DuplexError.DuplexError> = Effect.flatMap(d.read, (chunk) => {
      if (Option.isNone(chunk)) {
        this.end = "eof"
        return Effect.void
      }
      this.push(chunk.value)
      return loop
    })
    return Effect.catch(loop, (error) =>
      Effect.sync(() => {
        this.end = error
      })
    )
  }

  of(type: number, streamId?: number): Array<Frame> {
    return this.frames.filter((f) => f.type === type && (streamId === undefined || f.streamId === streamId))
  }

  /** The credit a stream's window updates have returned (SYN and ACK frames excluded), one entry each. */
  updates(streamId: number): Array<number> {
    return this.of(WINDOW_UPDATE, streamId)
      .filter((f) => (f.flags & (SYN | ACK | RST | FIN)) === 0)
      .map((f) => f.length)
  }

  /** The payload bytes of a stream's Data frames, in order. */
  data(streamId: number): Uint8Array {
    return concatBytes(this.of(DATA, streamId).map((f) => f.payload))
  }

  describe(): string {
    const shown =
      this.frames.length > 40 ? [...this.frames.slice(0, 20), undefined, ...this.frames.slice(-20)] : this.frames
    return `[${shown.map((f) => (f === undefined ? "…" : describeFrame(f))).join(", ")}]`
  }
}

/** A frame to send: a header made with the codec's `encodeHeader`, then the payload if one is given. */
const frame = (type: number, flags: number, streamId: number, body: number | Uint8Array = 0): Uint8Array =>
  typeof body === "number"
    ? encodeHeader(type, flags, streamId, body)
    : concatBytes([encodeHeader(type, flags, streamId, body.length), body])

/** A session on one side of a pair, and the test on the other, logging every frame the session writes. */
interface RawPeer {
  readonly raw: Duplex.Duplex
  readonly session: Mux.Session
  readonly log: FrameLog
  readonly send: (...frames: ReadonlyArray<Uint8Array>) => Effect.Effect<void, DuplexError.DuplexError>
}

const rawPeer = (options: Mux.SessionOptions, capacity = MiB) =>
  Effect.gen(function* () {
    const [raw, conn] = yield* Duplex.pair({ capacity, label: "raw" })
    const session = yield* Mux.make(conn, { keepAliveInterval: 0, ...options })
    const log = new FrameLog()
    yield* Effect.forkScoped(log.drain(raw), { startImmediately: true })
    const peer: RawPeer = {
      raw,
      session,
      log,
      send: (...frames) => raw.write(concatBytes(frames))
    }
    return peer
  })

/** Polls `check` every few milliseconds (real time) until it holds; fails naming `what` after about `timeoutMillis`. */
const until = (what: string, check: () => boolean, show: () => string = () => "", timeoutMillis = 5000) =>
  Effect.gen(function* () {
    for (let waited = 0; !check(); waited += 5) {
      if (waited >= timeoutMillis) return yield* Effect.fail(new Error(`${what}: not after ${waited} ms; ${show()}`))
      yield* Effect.sleep(5)
    }
  })

/**
 * `it.live` with the whole test bounded: a test that hangs fails after `seconds`, naming itself, rather than at
 * the runner's timeout.
 */
const live = (name: string, body: () => Effect.Effect<unknown, unknown, Scope.Scope>, seconds = 20) =>
  it.live(name, () => body().pipe(within(`${seconds} seconds`, `"${name}"`)), (seconds + 10) * 1000)

/** Lets forked fibers run until they block (no time passes: also for `it.effect`). */
const settle = Effect.gen(function* () {
  for (let i = 0; i < 50; i++) yield* Effect.yieldNow
})

/** Moves the test clock on by `duration`, then lets what that woke run (for `it.effect`). */
const advance = (duration: Duration.Input) => Effect.andThen(TestClock.adjust(duration), settle)

/** Two sessions back to back over a pair. */
const sessions = (
  clientOptions: Omit<Mux.SessionOptions, "role"> = {},
  serverOptions: Omit<Mux.SessionOptions, "role"> = {},
  capacity?: number
) =>
  Effect.gen(function* () {
    const [a, b] = yield* Duplex.pair(capacity === undefined ? {} : { capacity })
    const client = yield* Mux.client(a, { keepAliveInterval: 0, ...clientOptions })
    const server = yield* Mux.server(b, { keepAliveInterval: 0, ...serverOptions })
    return { client, server, a, b }
  })

const sameBytes = (got: Uint8Array, want: Uint8Array, what: string) => {
  const at = firstDifference(got, want)
  assert.strictEqual(at, -1, `${what}: got ${got.length} bytes, want ${want.length}, first difference at ${at}`)
}

/** Reads `d` until EOF or failure: the bytes, and how it ended. */
const readUntilEnd = (d: Duplex.Duplex) =>
  Effect.gen(function* () {
    const chunks: Array<Uint8Array> = []
    const exit = yield* Effect.exit(
      Effect.gen(function* () {
        for (;;) {
          const chunk = yield* d.read
          if (Option.isNone(chunk)) return
          chunks.push(chunk.value)
        }
      })
    )
    return { bytes: concatBytes(chunks), exit }
  })

/** Reads chunks from `d` until at least `n` bytes have come, failing at an early EOF. */
const readAtLeast = (d: Duplex.Duplex, n: number) =>
  Effect.gen(function* () {
    const chunks: Array<Uint8Array> = []
    let got = 0
    while (got < n) {
      const chunk = yield* d.read
      if (Option.isNone(chunk)) return yield* Effect.fail(new Error(`EOF after ${got} of ${n} bytes`))
      chunks.push(chunk.value)
      got += chunk.value.length
    }
    return concatBytes(chunks)
  })

/** A duplex that logs every frame written through it, otherwise `d` itself. */
const tapped = (d: Duplex.Duplex, log: FrameLog): Duplex.Duplex =>
  Duplex.make({
    label: d.label,
    readable: d.readable,
    read: d.read,
    write: (chunk) =>
      Effect.andThen(
        d.write(chunk),
        Effect.sync(() => log.push(chunk))
      ),
    end: d.end,
    abort: d.abort,
    stats: d.stats
  })

// ---- wire format -------------------------------------------------------------------------------------

describe("Mux wire format", () => {
  it("encodeHeader writes version 0, type, flags, stream id and length big-endian in 12 bytes", () => {
    assert.deepStrictEqual(
      [...encodeHeader(WINDOW_UPDATE, SYN | FIN, 0x01020304, 0xa0b0c0d0)],
      [0, 1, 0x00, 0x05, 0x01, 0x02, 0x03, 0x04, 0xa0, 0xb0, 0xc0, 0xd0]
    )
    assert.deepStrictEqual([...encodeHeader(GO_AWAY, 0, 0, PROTOCOL_ERROR)], [0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1])
    assert.deepStrictEqual([...encodeHeader(DATA, 0xffff, 0xffffffff, 0xffffffff)], [0, 0, ...Array(10).fill(0xff)])
  })

  it("FrameDecoder reads headers cut anywhere, and hands a Data payload out after its header, in views", () =>
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            type: fc.integer({ min: 0, max: 255 }),
            flags: fc.integer({ min: 0, max: 0xffff }),
            streamId: fc.integer({ min: 0, max: 0xffffffff }),
            payload: fc.integer({ min: 0, max: 300 })
          }),
          { maxLength: 8 }
        ),
        fc.array(fc.integer({ min: 1, max: 40 }), { minLength: 1, maxLength: 8 }),
        (specs, cuts) => {
          const frames = specs.map((s, i) =>
            s.type === DATA
              ? frame(DATA, s.flags, s.streamId, randomBytes(s.payload, i))
              : frame(s.type, s.flags, s.streamId, s.payload)
          )
          const bytes = concatBytes(frames)
          const decoder = new FrameDecoder()
          const headers: Array<{ type: number; flags: number; streamId: number; length: number }> = []
          const payloads: Array<Array<Uint8Array>> = []
          for (let at = 0, i = 0; at < bytes.length; i++) {
            const piece = bytes.subarray(at, at + cuts[i % cuts.length]!)
            at += piece.length
            decoder.push(piece)
            for (let d = decoder.next(); d !== undefined; d = decoder.next()) {
              if (d._tag === "Header") {
                assert.strictEqual(d.header.version, 0)
                headers.push({
                  type: d.header.type,
                  flags: d.header.flags,
                  streamId: d.header.streamId,
                  length: d.header.length
                })
                payloads.push([])
                if (d.header.type === DATA) decoder.expectPayload(d.header.length)
              } else {
                assert.strictEqual(d.bytes.buffer, piece.buffer, "a payload piece is a view of the chunk, not a copy")
                payloads[payloads.length - 1]!.push(d.bytes)
              }
            }
          }
          assert.isFalse(decoder.midFrame)
          assert.deepStrictEqual(
            headers,
            specs.map((s) => ({ type: s.type, flags: s.flags, streamId: s.streamId, length: s.payload }))
          )
          specs.forEach((s, i) => {
            if (s.type === DATA)
              sameBytes(concatBytes(payloads[i]!), randomBytes(s.payload, i), `payload of frame ${i}`)
          })
        }
      ),
      { seed, numRuns: runsOr(200) }
    ))

  live("a client's streams open with a SYN on a WindowUpdate, ids 1, 3, 5; a server's with ids 2, 4, 6", () =>
    Effect.gen(function* () {
      for (const [role, ids] of [
        ["client", [1, 3, 5]],
        ["server", [2, 4, 6]]
      ] as const) {
        const { session, log } = yield* rawPeer({ role })
        for (let i = 0; i < 3; i++) yield* session.open
        yield* until(
          "three SYNs",
          () => log.frames.length >= 3,
          () => log.describe()
        )
        assert.deepStrictEqual(
          log.frames.map((f) => [f.version, f.type, f.flags, f.streamId, f.length]),
          ids.map((id) => [0, WINDOW_UPDATE, SYN, id, 0]),
          `${role}: ${log.describe()}`
        )
      }
    })
  )

  live("a window above 256 KiB is announced as the length of the SYN, and of the ACK", () =>
    Effect.gen(function* () {
      const client = yield* rawPeer({ role: "client", windowBytes: MiB })
      yield* client.session.open
      yield* until("the SYN", () => client.log.frames.length >= 1)
      assert.strictEqual(describeFrame(client.log.frames[0]!), `WindowUpdate[SYN] #1 ${MiB - WINDOW}`)

      const server = yield* rawPeer({ role: "server", windowBytes: MiB })
      yield* server.send(frame(WINDOW_UPDATE, SYN, 1))
      yield* until("the ACK", () => server.log.frames.length >= 1)
      assert.strictEqual(describeFrame(server.log.frames[0]!), `WindowUpdate[ACK] #1 ${MiB - WINDOW}`)
    })
  )

  live("the acceptor's ACK goes out before its first Data frame, and FIN on a frame of its own after the data", () =>
    Effect.gen(function* () {
      const { session, send, log } = yield* rawPeer({ role: "server" })
      yield* send(frame(WINDOW_UPDATE, SYN, 1))
      const stream = yield* session.accept
      yield* stream.write(new TextEncoder().encode("hello"))
      yield* stream.end
      yield* until(
        "three frames",
        () => log.frames.length >= 3,
        () => log.describe()
      )
      assert.deepStrictEqual(
        log.frames.map(describeFrame),
        ["WindowUpdate[ACK] #1 0", "Data #1 5", "WindowUpdate[FIN] #1 0"],
        log.describe()
      )
      assert.strictEqual(new TextDecoder().decode(log.frames[1]!.payload), "hello")
    })
  )

  live("a ping is answered with an ACK echoing its opaque value, and ping measures the round trip", () =>
    Effect.gen(function* () {
      const { send, log } = yield* rawPeer({ role: "server" })
      yield* send(frame(PING, SYN, 0, 0xdeadbeef))
      yield* until(
        "the ping's ACK",
        () => log.of(PING).length >= 1,
        () => log.describe()
      )
      assert.deepStrictEqual(log.of(PING).map(describeFrame), [`Ping[ACK] #0 ${0xdeadbeef}`])

      const { client } = yield* sessions()
      const rtt = yield* client.ping.pipe(within("5 seconds", "the ping"))
      assert.isAtLeast(rtt, 0)
    })
  )
})

// ---- protocol errors ---------------------------------------------------------------------------------

/**
 * A session (server role) with two streams, one the raw peer opened and sent 1000 bytes on, one it opened
 * itself, then fed `bad`: it must write GoAway(protocol error), fail every stream and every later operation
 * with ProtocolError (after the bytes a stream already had), and have buffered no more than `maxBuffered`.
 */
const PROTOCOL_ERRORS: ReadonlyArray<{
  readonly name: string
  readonly bad: () => Uint8Array
  /** Valid payload for stream 1 that the case sends before the error. */
  readonly before?: Uint8Array
  /** The most the session may have buffered: the 1000 bytes, plus any valid payload the case sends first. */
  readonly maxBuffered: number
}> = [
  {
    name: "a Data frame one byte beyond the stream's credit",
    bad: () => frame(DATA, 0, 1, WINDOW - 1000 + 1),
    maxBuffered: 1000
  },
  {
    name: "Data frames that add up to one byte beyond the window",
    bad: () => concatBytes([frame(DATA, 0, 1, randomBytes(WINDOW - 1000, 2)), frame(DATA, 0, 1, new Uint8Array(1))]),
    before: randomBytes(WINDOW - 1000, 2),
    maxBuffered: WINDOW
  },
  {
    name: "a Data frame of length 2^32 - 1",
    bad: () => frame(DATA, 0, 1, 0xffffffff),
    maxBuffered: 1000
  },
  {
    name: "a SYN on a Data frame longer than the window",
    bad: () => frame(DATA, SYN, 5, WINDOW + 1),
    maxBuffered: 1000
  },
  {
    name: "a Data frame longer than the largest window for a stream that does not exist",
    bad: () => frame(DATA, 0, 99, MAX_WINDOW + 1),
    maxBuffered: 1000
  },
  { name: "an unknown frame type (4)", bad: () => frame(4, 0, 1, 0), maxBuffered: 1000 },
  { name: "an unknown frame type (255)", bad: () => frame(255, SYN, 0, 0), maxBuffered: 1000 },
  {
    name: "an unknown version (1)",
    bad: () => {
      const header = frame(PING, SYN, 0, 7)
      header[0] = 1
      return header
    },
    maxBuffered: 1000
  },
  { name: "a stream frame on stream 0", bad: () => frame(WINDOW_UPDATE, 0, 0, 10), maxBuffered: 1000 },
  { name: "a second SYN for an open stream", bad: () => frame(WINDOW_UPDATE, SYN, 1, 0), maxBuffered: 1000 },
  {
    name: "a SYN for an id of the session's own parity",
    bad: () => frame(WINDOW_UPDATE, SYN, 8, 0),
    maxBuffered: 1000
  },
  { name: "a ping with neither SYN nor ACK", bad: () => frame(PING, 0, 0, 1), maxBuffered: 1000 }
]

/**
 * `accept` on a failed session: streams queued before the failure (even one the offending frame opened) may
 * still be handed out, each failing ProtocolError, then `accept` itself fails ProtocolError.
 */
const acceptFails = (session: Mux.Session) =>
  Effect.gen(function* () {
    for (let i = 0; i < 4; i++) {
      const exit = yield* Effect.exit(session.accept)
      if (Exit.isFailure(exit)) return void reasonOf(exit, "ProtocolError", "accept after the error")
      reasonOf(
        yield* Effect.exit(exit.value.read),
        "ProtocolError",
        `read of ${exit.value.label}, accepted after the error`
      )
    }
    assert.fail("accept keeps handing out streams after the session failed")
  })

describe("Mux protocol errors", () => {
  for (const { name, bad, before, maxBuffered } of PROTOCOL_ERRORS) {
    live(`${name}: GoAway(protocol error), every stream fails ProtocolError after its bytes`, () =>
      Effect.gen(function* () {
        const { session, send, log } = yield* rawPeer({ role: "server" })
        const hello = randomBytes(1000, 1)
        yield* send(frame(WINDOW_UPDATE, SYN, 1), frame(DATA, 0, 1, hello))
        const theirs = yield* session.accept
        const ours = yield* session.open
        yield* eventually("the 1000 bytes buffered", session.stats, (s) => s.bufferedBytes === 1000)

        yield* send(bad())
        const closed = yield* Effect.exit(session.closed.pipe(within("5 seconds", "the session's end")))
        assert.include(reasonOf(closed, "ProtocolError", "closed").label, "mux server")

        // The peer is told why, then the connection is closed.
        yield* until(
          "the connection's end",
          () => log.end !== undefined,
          () => log.describe()
        )
        const goAways = log.of(GO_AWAY)
        assert.deepStrictEqual(goAways.map(describeFrame), ["GoAway #0 1"], log.describe())
        assert.strictEqual(log.frames.at(-1)!.type, GO_AWAY, `GoAway is the last frame: ${log.describe()}`)
        assert.strictEqual(goAways[0]!.length, PROTOCOL_ERROR)

        // Every stream fails typed: the bytes a stream had come first.
        const got = yield* readUntilEnd(theirs)
        sameBytes(
          got.bytes,
          concatBytes([hello, before ?? new Uint8Array(0)]),
          "the bytes stream 1 had before the error"
        )
        reasonOf(got.exit, "ProtocolError", "read of stream 1 after its bytes")
        reasonOf(yield* Effect.exit(theirs.write(hello)), "ProtocolError", "write to stream 1")
        reasonOf(yield* Effect.exit(ours.read), "ProtocolError", "read of stream 2")
        reasonOf(yield* Effect.exit(ours.write(hello)), "ProtocolError", "write to stream 2")
        reasonOf(yield* Effect.exit(ours.end), "ProtocolError", "end of stream 2")
        reasonOf(yield* Effect.exit(session.open), "ProtocolError", "open after the error")
        yield* acceptFails(session)
        reasonOf(yield* Effect.exit(session.ping), "ProtocolError", "ping after the error")

        // Nothing was taken in beyond the limits: the header was judged before its payload.
        const stats = yield* session.stats
        assert.isAtMost(stats.peakBufferedBytes, maxBuffered, JSON.stringify(stats))
        assert.strictEqual(stats.goAwaySent, PROTOCOL_ERROR)
      })
    )
  }

  live("the connection ending in the middle of a frame is a ProtocolError, told with GoAway", () =>
    Effect.gen(function* () {
      for (const cut of [
        frame(PING, SYN, 0, 1).subarray(0, 7),
        frame(DATA, SYN, 1, new Uint8Array(100)).subarray(0, 50)
      ]) {
        const { session, raw, log } = yield* rawPeer({ role: "server" })
        yield* raw.write(cut)
        yield* raw.end
        reasonOf(
          yield* Effect.exit(session.closed.pipe(within("5 seconds", "the session's end"))),
          "ProtocolError",
          "closed"
        )
        yield* until(
          "the GoAway",
          () => log.of(GO_AWAY).length > 0,
          () => log.describe()
        )
        assert.strictEqual(log.of(GO_AWAY)[0]!.length, PROTOCOL_ERROR)
      }
    })
  )

  live("a GoAway with an error code from the peer fails every stream Broken, and the session ends", () =>
    Effect.gen(function* () {
      const { session, send } = yield* rawPeer({ role: "server" })
      yield* send(frame(WINDOW_UPDATE, SYN, 1))
      const stream = yield* session.accept
      yield* send(frame(GO_AWAY, 0, 0, INTERNAL_ERROR))
      reasonOf(yield* Effect.exit(session.closed.pipe(within("5 seconds", "the session's end"))), "Broken", "closed")
      reasonOf(yield* Effect.exit(stream.read), "Broken", "read after the peer's GoAway(internal error)")
      assert.strictEqual((yield* session.stats).goAwayReceived, INTERNAL_ERROR)
    })
  )

  live(
    "the frame reader never waits on the application: pings are answered while streams sit full and unaccepted",
    () =>
      Effect.gen(function* () {
        const { session, send, log } = yield* rawPeer({ role: "server" })
        // Eight streams nobody accepts, each sent its whole window.
        for (let id = 1; id <= 15; id += 2)
          yield* send(frame(WINDOW_UPDATE, SYN, id), frame(DATA, 0, id, new Uint8Array(WINDOW)))
        for (let i = 0; i < 10; i++) yield* send(frame(PING, SYN, 0, i))
        yield* until(
          "ten ping ACKs",
          () => log.of(PING).length === 10,
          () => log.describe()
        )
        assert.deepStrictEqual(
          log.of(PING).map((f) => f.length),
          Array.from({ length: 10 }, (_, i) => i)
        )
        const stats = yield* session.stats
        assert.strictEqual(stats.bufferedBytes, 8 * WINDOW)
        assert.strictEqual(stats.streams, 8)
      })
  )

  live("the GoAway of a protocol error reaches a peer that reads only after the session failed", () =>
    Effect.gen(function* () {
      // Nobody reads the raw side until the session has failed: its output waits in the pair's buffer, as in
      // a socket's. Aborting the connection right after the GoAway would discard it, and the peer would never
      // learn why the session ended: the connection is ended after the GoAway, and aborted only if that hangs.
      const [raw, conn] = yield* Duplex.pair({ capacity: MiB, label: "raw" })
      const session = yield* Mux.server(conn, { keepAliveInterval: 0 })
      yield* raw.write(frame(9, 0, 0, 0))
      reasonOf(
        yield* Effect.exit(session.closed.pipe(within("5 seconds", "the session's end"))),
        "ProtocolError",
        "closed"
      )
      yield* Effect.sleep(50) // the farewell is written by a fiber of its own
      const log = new FrameLog()
      yield* log.drain(raw).pipe(within("5 seconds", "the connection's end"))
      assert.deepStrictEqual(log.frames.map(describeFrame), ["GoAway #0 1"], `ended with ${String(log.end)}`)
    })
  )

  live("after a protocol error the connection is closed, not left half-open: a peer's blocked write fails", () =>
    Effect.gen(function* () {
      // The peer keeps writing after its bad frame: once the session has given up reading, that write can only
      // end if the session closes the connection. A session that sent GoAway and FIN and then only stopped
      // reading would leave the peer's write waiting until the application's scope closed, with a connection
      // slot and two buffers held all that time.
      const { session, raw } = yield* rawPeer({ role: "server" }, 64 * KiB)
      const writing = yield* Effect.forkChild(raw.write(concatBytes([frame(9, 0, 0, 0), new Uint8Array(4 * MiB)])), {
        startImmediately: true
      })
      reasonOf(
        yield* Effect.exit(session.closed.pipe(within("5 seconds", "the session's end"))),
        "ProtocolError",
        "closed"
      )
      const write = yield* Fiber.await(writing).pipe(within("5 seconds", "the peer's blocked write to fail"))
      assert.include(["Broken", "Closed"], duplexErrorOf(write, "the peer's write").reason._tag)
    })
  )
})

// ---- credit ------------------------------------------------------------------------------------------

describe("Mux credit", () => {
  live("no window update is sent while nothing is read, and a byte beyond the full window is a ProtocolError", () =>
    Effect.gen(function* () {
      const { session, send, log } = yield* rawPeer({ role: "server" })
      yield* send(frame(WINDOW_UPDATE, SYN, 1))
      for (let i = 0; i < 4; i++) yield* send(frame(DATA, 0, 1, randomBytes(WINDOW / 4, i)))
      const stream = yield* session.accept
      yield* eventually("the window buffered", session.stats, (s) => s.bufferedBytes === WINDOW)
      yield* settle
      assert.deepStrictEqual(log.frames.map(describeFrame), ["WindowUpdate[ACK] #1 0"])
      const stats = yield* stream.stats
      assert.strictEqual(stats.inbound.buffered, WINDOW)
      yield* send(frame(DATA, 0, 1, new Uint8Array(1)))
      reasonOf(
        yield* Effect.exit(session.closed.pipe(within("5 seconds", "the session's end"))),
        "ProtocolError",
        "closed"
      )
    })
  )

  for (const { windowBytes, maxFrameBytes, piece } of [
    { windowBytes: WINDOW, maxFrameBytes: Mux.DEFAULT_MAX_FRAME_BYTES, piece: 4 * KiB },
    { windowBytes: WINDOW, maxFrameBytes: 16 * KiB, piece: 3 * KiB },
    { windowBytes: MiB, maxFrameBytes: MiB, piece: 16 * KiB },
    { windowBytes: 3 * WINDOW, maxFrameBytes: 100 * KiB, piece: 7 * KiB }
  ]) {
    const threshold = windowBytes / 2 // the frame size does not cap it
    live(
      `window ${windowBytes / KiB} KiB, max frame ${maxFrameBytes / KiB} KiB: ` +
        `credit returns as the application reads, ` +
        `once ${threshold / KiB} KiB has been read since the last update, and exactly what was read`,
      () =>
        Effect.gen(function* () {
          // Fixed windows: growth (see "Mux receive-window tuning") would add to the updates.
          const { session, send, log } = yield* rawPeer(
            { role: "server", windowBytes, maxWindowBytes: windowBytes, maxFrameBytes },
            4 * MiB
          )
          yield* send(frame(WINDOW_UPDATE, SYN, 1))
          const stream = yield* session.accept
          // Two rounds: the whole window, then whatever credit the first round returned. Read chunk by chunk
          // (a chunk is at most one Data frame's payload), checking after each what has been returned.
          let credit = windowBytes
          let read = 0
          let since = 0
          const expected: Array<number> = []
          const sent: Array<Uint8Array> = []
          const got: Array<Uint8Array> = []
          for (let round = 0; round < 2; round++) {
            const budget = credit
            const pieces: Array<Uint8Array> = []
            for (let n = 0; n < budget; n += piece) pieces.push(randomBytes(Math.min(piece, budget - n), read + n))
            for (const p of pieces) yield* send(frame(DATA, 0, 1, p))
            sent.push(...pieces)
            credit -= budget
            for (const end = read + budget; read < end;) {
              const chunk = Option.getOrThrow(yield* stream.read)
              got.push(chunk)
              read += chunk.length
              since += chunk.length
              if (since >= threshold) {
                expected.push(since)
                credit += since
                since = 0
                // Sent while the application reads, not later.
                yield* until(
                  `update ${expected.length} after ${read} bytes read`,
                  () => log.updates(1).length === expected.length,
                  () => log.describe()
                )
              } else {
                // Nothing is returned below the threshold: give the session the chance to send it now.
                yield* settle
                assert.strictEqual(log.updates(1).length, expected.length, `after ${read} bytes: ${log.describe()}`)
              }
            }
          }
          yield* settle
          sameBytes(concatBytes(got), concatBytes(sent), "the bytes read")
          assert.deepStrictEqual(log.updates(1), expected, log.describe())
          assert.isTrue(
            log.updates(1).every((n) => n >= threshold),
            "no update smaller than the threshold"
          )
          // The peer may use exactly the credit returned: one byte more is an overrun.
          yield* send(frame(DATA, 0, 1, new Uint8Array(credit)))
          yield* eventually("the last credit used", session.stats, (s) => s.bufferedBytes === windowBytes - since)
          yield* send(frame(DATA, 0, 1, new Uint8Array(1)))
          reasonOf(yield* Effect.exit(session.closed.pipe(within("5 seconds", "the end"))), "ProtocolError", "closed")
        })
    )
  }

  live("the sender sends min(credit, max frame, queued); a frame below the threshold waits for the override", () =>
    Effect.gen(function* () {
      const maxFrame = 16 * KiB
      const { session, send, log } = yield* rawPeer({ role: "client", maxFrameBytes: maxFrame })
      const stream = yield* session.open
      const payload = randomBytes(400 * KiB, 7)
      const sizes = () => log.of(DATA, 1).map((f) => f.length)
      // 100 KiB queued, 256 KiB of credit: six full frames and the rest.
      yield* stream.write(payload.subarray(0, 100 * KiB))
      yield* until(
        "100 KiB",
        () => log.data(1).length === 100 * KiB,
        () => log.describe()
      )
      assert.deepStrictEqual(sizes(), [...Array(6).fill(maxFrame), 100 * KiB - 6 * maxFrame])
      // 300 KiB more with 156 KiB of credit left: the credit goes in full frames, and the 12 KiB left (below
      // the threshold, min(256 KiB / 2, 16 KiB), with more queued) once the hold is overridden; then it waits.
      const writer = yield* Effect.forkChild(stream.write(payload.subarray(100 * KiB)), { startImmediately: true })
      yield* until(
        "the whole window",
        () => log.data(1).length === WINDOW,
        () => log.describe()
      )
      yield* settle
      assert.strictEqual(log.data(1).length, WINDOW)
      assert.isUndefined(writer.pollUnsafe(), "the write waits for credit")
      assert.deepStrictEqual(sizes().slice(7), [...Array(9).fill(maxFrame), 156 * KiB - 9 * maxFrame])
      // A little credit is used too, in a frame that small. The threshold is min(estimate / 2, 16 KiB), the
      // estimate of the peer's window lowered at each override to the credit then held, raised by credit
      // beyond it: 10 bytes and 1 go after the delay, 5000 at once, 40 KiB as two full frames at once and
      // 8 KiB after the delay.
      let expectSizes = sizes()
      for (const grant of [10, 1, 5000, 40 * KiB]) {
        yield* send(frame(WINDOW_UPDATE, 0, 1, grant))
        const parts = grant <= maxFrame ? [grant] : [maxFrame, maxFrame, grant - 2 * maxFrame]
        expectSizes = [...expectSizes, ...parts]
        yield* until(
          `the frames for ${grant} bytes of credit`,
          () => sizes().length === expectSizes.length,
          () => log.describe()
        )
        assert.deepStrictEqual(sizes(), expectSizes)
      }
      yield* send(frame(WINDOW_UPDATE, 0, 1, MiB))
      yield* Fiber.join(writer).pipe(within("5 seconds", "the rest of the write"))
      yield* until(
        "every byte",
        () => log.data(1).length === payload.length,
        () => log.describe()
      )
      sameBytes(log.data(1), payload, "the bytes sent")
      assert.isTrue(sizes().every((n) => n > 0 && n <= maxFrame))
    })
  )

  live("the buffered count is never seen below what the streams hold: bytes are counted before a reader wakes", () =>
    Effect.gen(function* () {
      // Handing a payload to a stream whose read is waiting runs that reader at once, inside the frame reader's
      // step, and the reader takes the bytes off the count. Were they added only after the hand-over, a fiber
      // woken there (this reader, reading `stats` right away) would see the count 10 bytes short, -10 here,
      // and the bound on buffered bytes would be checked against a count below the truth.
      const { session, send } = yield* rawPeer({ role: "server" })
      yield* send(frame(WINDOW_UPDATE, SYN, 1))
      const stream = yield* session.accept
      const reading = yield* Effect.forkChild(Effect.andThen(stream.read, session.stats), { startImmediately: true })
      yield* settle
      yield* send(frame(DATA, 0, 1, new Uint8Array(10)))
      const seen = yield* Fiber.join(reading).pipe(within("5 seconds", "the read"))
      assert.strictEqual(seen.bufferedBytes, 0, "the count as the reader saw it")
    })
  )

  for (const by of ["the application (abort)", "the peer (RST)"] as const) {
    live(`a stream reset by ${by} with unread bytes gives its buffered bytes and its slot back to the session`, () =>
      Effect.gen(function* () {
        // Room for two streams' windows: one that keeps going, and one that is reset with unread data.
        const { client, server } = yield* sessions({}, { maxBufferedBytes: 2 * WINDOW })
        const steady = yield* client.open
        const steadyIn = yield* server.accept
        const doomed = yield* client.open
        const doomedIn = yield* server.accept
        yield* doomed.write(randomBytes(200 * KiB, 1))
        yield* eventually("200 KiB buffered", server.stats, (s) => s.bufferedBytes === 200 * KiB)
        // Some of it read, then the reset.
        const read = (yield* readAtLeast(doomedIn, 100 * KiB)).length
        assert.strictEqual((yield* server.stats).bufferedBytes, 200 * KiB - read)
        if (by === "the peer (RST)") yield* doomed.abort
        else yield* doomedIn.abort
        yield* eventually(
          "the reset seen on both ends",
          Effect.zip(client.stats, server.stats),
          ([c, s]) => c.streams === 1 && s.streams === 1
        )
        assert.strictEqual((yield* server.stats).bufferedBytes, 0, "the unread bytes are no longer counted")
        // The slot is free again: a new stream is admitted, and takes a whole window, as does the steady one.
        const fresh = yield* client.open
        const freshIn = yield* server.accept
        const a = randomBytes(WINDOW, 2)
        const b = randomBytes(WINDOW, 3)
        yield* Effect.all([fresh.write(a), steady.write(b)], { concurrency: 2 }).pipe(
          within("5 seconds", "a full window on each")
        )
        yield* eventually("two windows buffered", server.stats, (s) => s.bufferedBytes === 2 * WINDOW)
        sameBytes(yield* readAtLeast(freshIn, WINDOW), a, "the new stream")
        sameBytes(yield* readAtLeast(steadyIn, WINDOW), b, "the steady stream")
        const stats = yield* server.stats
        assert.strictEqual(stats.bufferedBytes, 0)
        assert.isAtMost(stats.peakBufferedBytes, 2 * WINDOW)
      })
    )
  }
})

// ---- receive-window tuning ---------------------------------------------------------------------------

describe("Mux receive-window tuning", () => {
  const total = 8 * MiB
  for (const { name, options, finalWindow } of [
    { name: `by default, up to maxWindowBytes (${MAX_WINDOW / MiB} MiB)`, options: {}, finalWindow: MAX_WINDOW },
    { name: "not at all with maxWindowBytes = windowBytes", options: { maxWindowBytes: WINDOW }, finalWindow: WINDOW },
    {
      name: "only as far as maxBufferedBytes allows (512 KiB of it)",
      options: { maxBufferedBytes: 2 * WINDOW },
      finalWindow: 2 * WINDOW
    }
  ]) {
    live(`a stream whose reader keeps up has its window grown ${name}`, () =>
      Effect.gen(function* () {
        const [a, b] = yield* Duplex.pair()
        const log = new FrameLog()
        const client = yield* Mux.client(a, { keepAliveInterval: 0 })
        const server = yield* Mux.server(tapped(b, log), { keepAliveInterval: 0, ...options })
        const out = yield* client.open
        const payload = randomBytes(total, 11)
        yield* Effect.forkChild(
          Effect.gen(function* () {
            for (let at = 0; at < total; at += 64 * KiB) yield* out.write(payload.subarray(at, at + 64 * KiB))
          }),
          { startImmediately: true }
        )
        const incoming = yield* server.accept
        sameBytes(yield* readAtLeast(incoming, total), payload, "the bytes read")
        // No FIN yet (a stream the peer finished gets no more credit): the last update is sent.
        const threshold = finalWindow / 2
        const granted = () => WINDOW + log.updates(1).reduce((n, u) => n + u, 0)
        yield* until(
          "the last update",
          () => granted() > total + finalWindow - threshold,
          () => log.describe()
        )
        const updates = log.updates(1)
        // Credit granted and not used: the window now, less what was read since the last update.
        const outstanding = granted() - total
        assert.isAtMost(outstanding, finalWindow, log.describe())
        assert.isAbove(outstanding, finalWindow - threshold, `updates ${updates.join(", ")}`)
        // An update returns what was read, at most the window, plus the growth: never beyond the new window.
        assert.isTrue(
          updates.every((u) => u <= finalWindow),
          updates.join(", ")
        )
        const stats = yield* server.stats
        assert.isAtMost(stats.peakBufferedBytes, finalWindow)
      })
    )
  }
})

// ---- silly window ------------------------------------------------------------------------------------

describe("Mux silly-window avoidance", () => {
  for (const { total, writeBytes, maxFrameBytes } of [
    { total: 3 * (WINDOW / 2), writeBytes: 3, maxFrameBytes: 1024 },
    { total: 2 * MiB, writeBytes: 101, maxFrameBytes: Mux.DEFAULT_MAX_FRAME_BYTES }
  ]) {
    const threshold = WINDOW / 2 // half the window, whatever the frame size
    live(
      `a consumer reading ${writeBytes === 1 ? "1 byte" : `${writeBytes} bytes`} at a time ` +
        `gets no window update below ` +
        `${threshold} bytes, and at most ${total / threshold} of them for ${total / KiB} KiB`,
      () =>
        Effect.gen(function* () {
          const [a, b] = yield* Duplex.pair()
          const log = new FrameLog()
          const client = yield* Mux.client(a, { keepAliveInterval: 0 })
          const server = yield* Mux.server(tapped(b, log), { keepAliveInterval: 0, maxFrameBytes })
          const out = yield* client.open
          const payload = randomBytes(total, 5)
          // The writer sends `writeBytes` at a time, so the consumer gets pieces that small; it half-closes
          // only once everything has been read, so credit is returned for every byte (none after a FIN).
          const allRead = yield* Deferred.make<void>()
          const writer = yield* Effect.forkChild(
            Effect.gen(function* () {
              for (let at = 0; at < total; at += writeBytes) yield* out.write(payload.subarray(at, at + writeBytes))
              yield* Deferred.await(allRead)
              yield* out.end
            }),
            { startImmediately: true }
          )
          const incoming = yield* server.accept
          const chunks: Array<Uint8Array> = []
          let got = 0
          while (got < total) {
            const chunk = Option.getOrThrow(yield* incoming.read)
            assert.isAtMost(chunk.length, writeBytes)
            chunks.push(chunk)
            got += chunk.length
          }
          yield* until(
            "the last update",
            () => log.updates(1).reduce((n, u) => n + u, 0) > total - threshold,
            () => log.describe()
          )
          yield* Deferred.succeed(allRead, undefined)
          yield* Fiber.join(writer).pipe(within("10 seconds", "the writer"))
          sameBytes(concatBytes(chunks), payload, "the bytes read")
          // Tiny pieces (a frame's payload may also be split where the pair's buffer filled up).
          assert.isAtLeast(chunks.length, Math.ceil(total / writeBytes), "one read per write at least")
          const updates = log.updates(1)
          const returned = updates.reduce((n, u) => n + u, 0)
          assert.isTrue(
            updates.every((n) => n >= threshold),
            `updates below ${threshold}: ${updates.filter((n) => n < threshold).join(", ")}`
          )
          // Never more than one update per `threshold` bytes read, and every byte but the last few returned
          // (plus what the window grew by: this reader keeps up).
          assert.isAtMost(updates.length, Math.floor(total / threshold))
          assert.isAtMost(returned, total + MAX_WINDOW - WINDOW)
          assert.isAbove(returned, total - threshold)
          assert.strictEqual((yield* server.stats).windowUpdatesOut, updates.length)
        }),
      30
    )
  }
})

describe("Mux sender-side silly-window avoidance", () => {
  /** The sizes of a stream's Data frames that start past its first `skip` bytes. */
  const framesPast = (log: FrameLog, streamId: number, skip: number): Array<number> => {
    const sizes: Array<number> = []
    let at = 0
    for (const f of log.of(DATA, streamId)) {
      if (at >= skip) sizes.push(f.length)
      at += f.length
    }
    return sizes
  }

  live(
    "through a peer that keeps 8 KiB of credit out and returns it 1 KiB at a time, 1 MiB leaves in at most " +
      "384 frames (of about 4 KiB), not one per window update",
    () =>
      Effect.gen(function* () {
        // Before the sender held small frames back: 1024 frames of 1 KiB, one per window update.
        const { session, send, log } = yield* rawPeer({ role: "client" })
        const effectiveWindow = 8 * KiB
        const piece = KiB
        const total = MiB
        const s = yield* session.open
        // The initial window first (256 KiB the sender may send at once), then 1 MiB through the small one.
        const payload = randomBytes(WINDOW + total, 21)
        const writer = yield* Effect.forkChild(
          Effect.gen(function* () {
            for (let at = 0; at < payload.length; at += 64 * KiB) yield* s.write(payload.subarray(at, at + 64 * KiB))
          }),
          { startImmediately: true }
        )
        // The peer reads everything at once but returns credit 1 KiB at a time, a millisecond apart, keeping
        // at most 8 KiB of credit out once the initial window is spent: a silly receiver.
        const received = () => log.of(DATA, 1).reduce((n, f) => n + f.length, 0)
        let granted = WINDOW
        while (granted < payload.length) {
          if (granted - received() <= effectiveWindow - piece) {
            yield* send(frame(WINDOW_UPDATE, 0, 1, piece))
            granted += piece
          }
          yield* Effect.sleep(1)
        }
        yield* Fiber.join(writer).pipe(within("20 seconds", "the writer"))
        yield* until(
          "every byte",
          () => log.data(1).length === payload.length,
          () => `${log.data(1).length}`
        )
        sameBytes(log.data(1), payload, "the bytes sent")
        const sizes = framesPast(log, 1, WINDOW)
        const bound = 1.5 * (total / (effectiveWindow / 2))
        assert.isAtMost(sizes.length, bound, `frame sizes: ${sizes.slice(0, 40).join(", ")}`)
      }),
    60
  )

  it.effect(
    "a peer that grants 3 KiB and then withholds credit gets the 3 KiB after the override delay, not before, " +
      "and the write completes once more credit comes",
    () =>
      Effect.gen(function* () {
        const { session, send, log } = yield* rawPeer({ role: "client" })
        const s = yield* session.open
        const payload = randomBytes(WINDOW + 64 * KiB, 22)
        const writer = yield* Effect.forkChild(s.write(payload), { startImmediately: true })
        yield* settle
        assert.strictEqual(log.data(1).length, WINDOW, "the initial window, at once")
        assert.isUndefined(writer.pollUnsafe(), "the write waits for credit")
        // 3 KiB, well below the threshold (min(256 KiB / 2, 256 KiB)) with 64 KiB queued: held back.
        yield* send(frame(WINDOW_UPDATE, 0, 1, 3 * KiB))
        yield* settle
        assert.deepStrictEqual(framesPast(log, 1, WINDOW), [], "held")
        assert.isTrue((yield* s.stats).outbound.blocked, "a hold counts as waiting for credit")
        yield* advance(SEND_HOLD_OVERRIDE_MILLIS - 1)
        assert.deepStrictEqual(framesPast(log, 1, WINDOW), [], "held until the override delay")
        // The override: the 3 KiB leaves as one frame, and the peer's window is taken to be 3 KiB.
        yield* advance(1)
        assert.deepStrictEqual(framesPast(log, 1, WINDOW), [3 * KiB], "sent at the override delay")
        // Nothing more for 10 s (less than stallTimeout): the write waits, and nothing is sent.
        yield* advance("10 seconds")
        assert.isUndefined(writer.pollUnsafe(), "the write waits for more credit")
        assert.deepStrictEqual(framesPast(log, 1, WINDOW), [3 * KiB])
        // 2 KiB is past the threshold now (half of 3 KiB): it leaves at once.
        yield* send(frame(WINDOW_UPDATE, 0, 1, 2 * KiB))
        yield* settle
        assert.deepStrictEqual(framesPast(log, 1, WINDOW), [3 * KiB, 2 * KiB], "above the lowered threshold")
        // Enough for the rest, which fits: the write completes.
        yield* send(frame(WINDOW_UPDATE, 0, 1, 64 * KiB))
        yield* settle
        const exit = writer.pollUnsafe()
        assert.isDefined(exit, "the write completed")
        assert.isTrue(Exit.isSuccess(exit!), `the write: ${exit}`)
        assert.deepStrictEqual(framesPast(log, 1, WINDOW), [3 * KiB, 2 * KiB, 59 * KiB])
        sameBytes(log.data(1), payload, "the bytes sent")
        assert.isFalse((yield* s.stats).outbound.blocked)
      }),
    10_000
  )

  it.effect(
    "a hold is not a stall: StallDetected fails a write only after stallTimeout with zero credit",
    () =>
      Effect.gen(function* () {
        const { session, send, log } = yield* rawPeer({ role: "client", stallTimeout: "100 millis" })
        const s = yield* session.open
        const writer = yield* Effect.forkChild(s.write(new Uint8Array(WINDOW + 64 * KiB)), { startImmediately: true })
        yield* settle
        assert.strictEqual(log.data(1).length, WINDOW)
        // 90 ms with zero credit, then 1 KiB: a hold that lasts past the 100 ms since the wait began.
        yield* advance("90 millis")
        yield* send(frame(WINDOW_UPDATE, 0, 1, KiB))
        yield* settle
        yield* advance("15 millis")
        assert.isUndefined(writer.pollUnsafe(), "not failed in the hold")
        assert.isTrue((yield* s.stats).outbound.blocked, "blocked all along")
        yield* advance(`${SEND_HOLD_OVERRIDE_MILLIS - 15} millis`)
        assert.deepStrictEqual(framesPast(log, 1, WINDOW), [KiB], "the hold's frame")
        // A new wait with zero credit: it stalls 100 ms after it began, not before.
        yield* advance("99 millis")
        assert.isUndefined(writer.pollUnsafe(), "not before stallTimeout with zero credit")
        yield* advance("1 millis")
        const exit = writer.pollUnsafe()
        assert.isDefined(exit, "failed at stallTimeout")
        assert.strictEqual(reasonOf(exit!, "StallDetected", "the stalled write").stalledMillis, 100)
      }),
    10_000
  )
})

// ---- head-of-line blocking ---------------------------------------------------------------------------

describe("Mux head-of-line blocking", () => {
  live("a stream whose consumer never reads stops only itself: others move 8 MiB each way, pings, new streams", () =>
    Effect.gen(function* () {
      const { client, server } = yield* sessions()
      const stuck = yield* client.open
      const stuckIn = yield* server.accept
      const stuckWriter = yield* Effect.forkChild(stuck.write(randomBytes(4 * MiB, 1)), { startImmediately: true })
      yield* eventually("the stuck stream's window full", server.stats, (s) => s.bufferedBytes === WINDOW)

      const up = randomBytes(8 * MiB, 2)
      const down = randomBytes(8 * MiB, 3)
      const flowing = yield* client.open
      const flowingIn = yield* server.accept
      const [gotDown, gotUp] = yield* Effect.all(
        [
          Effect.all([Effect.andThen(flowing.writeAll(randomChunks(up, 64 * KiB, 2)), flowing.end), readAll(flowing)], {
            concurrency: 2
          }),
          Effect.all(
            [Effect.andThen(flowingIn.writeAll(randomChunks(down, 64 * KiB, 3)), flowingIn.end), readAll(flowingIn)],
            {
              concurrency: 2
            }
          )
        ],
        { concurrency: 2 }
      ).pipe(
        Effect.map(([[, d], [, u]]) => [d, u] as const),
        within("30 seconds", "8 MiB each way beside a stuck stream")
      )
      sameBytes(gotUp, up, "client → server")
      sameBytes(gotDown, down, "server → client")
      yield* client.ping.pipe(within("5 seconds", "a ping"))
      const another = yield* client.open
      const anotherIn = yield* server.accept.pipe(within("5 seconds", "accepting another stream"))
      yield* another.write(Uint8Array.of(42))
      assert.deepStrictEqual([...Option.getOrThrow(yield* anotherIn.read)], [42])

      yield* settle // see "the buffered count is never seen below what the streams hold"
      assert.isUndefined(stuckWriter.pollUnsafe(), "the stuck stream's writer still waits")
      assert.isTrue((yield* stuck.stats).outbound.blocked)
      assert.strictEqual((yield* stuckIn.stats).inbound.buffered, WINDOW)
      assert.strictEqual((yield* server.stats).bufferedBytes, WINDOW)
    })
  )
})

// ---- stalls and keepalive (virtual time) -------------------------------------------------------------

describe("Mux stalls and keepalive", () => {
  it.effect(
    "a write with zero credit fails StallDetected after stallTimeout, not before, and only on its stream",
    () =>
      Effect.gen(function* () {
        const { client, server } = yield* sessions({ stallTimeout: "5 seconds" })
        const stuck = yield* client.open
        yield* server.accept
        const writer = yield* Effect.forkChild(stuck.write(new Uint8Array(WINDOW + 1)), { startImmediately: true })
        yield* settle
        assert.isUndefined(writer.pollUnsafe(), "the write waits for credit")
        assert.isTrue((yield* stuck.stats).outbound.blocked)
        yield* advance("4999 millis")
        assert.isUndefined(writer.pollUnsafe(), "not before stallTimeout")
        yield* advance("1 millis")
        const exit = writer.pollUnsafe()
        assert.isDefined(exit, "failed at stallTimeout")
        const stall = reasonOf(exit!, "StallDetected", "the stalled write")
        assert.strictEqual(stall.stalledMillis, 5000)
        assert.strictEqual(stall.directions[0]!.direction, "outbound")
        assert.isTrue(stall.directions[0]!.blocked)
        assert.include(stall.label, "stream 1")
        // The other streams and the session go on.
        const other = yield* client.open
        const otherIn = yield* server.accept
        yield* other.write(Uint8Array.of(1, 2, 3))
        assert.deepStrictEqual([...Option.getOrThrow(yield* otherIn.read)], [1, 2, 3])
        assert.isUndefined((yield* Effect.forkChild(client.closed, { startImmediately: true })).pollUnsafe())
      }),
    10_000
  )

  it.effect(
    "keepalive pings a peer that never answers, and ends the session with Timeout after interval + timeout",
    () =>
      Effect.gen(function* () {
        const { session, log } = yield* rawPeer({
          role: "client",
          keepAliveInterval: "1 second",
          keepAliveTimeout: "2 seconds"
        })
        const stream = yield* session.open
        yield* settle
        assert.deepStrictEqual(log.frames.map(describeFrame), ["WindowUpdate[SYN] #1 0"])
        yield* advance("1 second")
        assert.deepStrictEqual(log.of(PING).map(describeFrame), ["Ping[SYN] #0 0"])
        const closed = yield* Effect.forkChild(session.closed, { startImmediately: true })
        yield* advance("1999 millis")
        assert.isUndefined(closed.pollUnsafe(), "alive until the timeout")
        yield* advance("1 millis")
        const exit = closed.pollUnsafe()
        assert.isDefined(exit, "dead peer detected at interval + timeout")
        assert.strictEqual(reasonOf(exit!, "Timeout", "closed").timeoutMillis, 2000)
        reasonOf(yield* Effect.exit(stream.read), "Timeout", "the stream's read")
        reasonOf(yield* Effect.exit(stream.write(Uint8Array.of(1))), "Timeout", "the stream's write")
        // The peer is told, in case it can still hear: GoAway(internal error).
        yield* settle
        assert.deepStrictEqual(log.of(GO_AWAY).map(describeFrame), [`GoAway #0 ${INTERNAL_ERROR}`])
      }),
    10_000
  )

  it.effect(
    "keepalive keeps a session with a live peer up, however long it stays idle",
    () =>
      Effect.gen(function* () {
        const { client, server } = yield* sessions(
          { keepAliveInterval: "1 second", keepAliveTimeout: "2 seconds" },
          { keepAliveInterval: "1 second", keepAliveTimeout: "2 seconds" }
        )
        const clientClosed = yield* Effect.forkChild(client.closed, { startImmediately: true })
        const serverClosed = yield* Effect.forkChild(server.closed, { startImmediately: true })
        for (let i = 0; i < 30; i++) {
          yield* advance("500 millis")
        }
        assert.isUndefined(clientClosed.pollUnsafe(), "the client's session is up")
        assert.isUndefined(serverClosed.pollUnsafe(), "the server's session is up")
        const stats = yield* client.stats
        assert.isAtLeast(stats.framesIn, 14, "pings and their answers crossed")
      }),
    10_000
  )
})

// ---- GoAway ------------------------------------------------------------------------------------------

describe("Mux GoAway", () => {
  live("after the peer's GoAway, open fails StreamRefused (retryable) while streams in flight complete both ways", () =>
    Effect.gen(function* () {
      const { client, server } = yield* sessions()
      const s = yield* client.open
      const t = yield* server.accept
      yield* server.goAway
      yield* eventually("the GoAway received", client.stats, (st) => st.goAwayReceived === 0)
      const refused = reasonOf(yield* Effect.exit(client.open), "StreamRefused", "open after GoAway")
      assert.strictEqual(refused.why, "goAway")
      assert.isTrue(refused.retryable)
      reasonOf(yield* Effect.exit(server.open), "StreamRefused", "open after our own GoAway")
      const up = randomBytes(MiB, 1)
      const down = randomBytes(MiB, 2)
      const [[, gotDown], [, gotUp]] = yield* Effect.all(
        [
          Effect.all([Effect.andThen(s.write(up), s.end), readAll(s)], { concurrency: 2 }),
          Effect.all([Effect.andThen(t.write(down), t.end), readAll(t)], { concurrency: 2 })
        ],
        { concurrency: 2 }
      ).pipe(within("10 seconds", "the streams in flight"))
      sameBytes(gotUp, up, "client → server after GoAway")
      sameBytes(gotDown, down, "server → client after GoAway")
      yield* eventually(
        "no stream left",
        Effect.zip(client.stats, server.stats),
        ([c, sv]) => c.streams + sv.streams === 0
      )
    })
  )

  live("a stream the peer opens after our GoAway is reset, and nothing it sent is kept", () =>
    Effect.gen(function* () {
      const { session, send, log } = yield* rawPeer({ role: "server" })
      yield* session.goAway
      yield* until(
        "the GoAway",
        () => log.frames.length === 1,
        () => log.describe()
      )
      assert.deepStrictEqual(log.frames.map(describeFrame), ["GoAway #0 0"])
      yield* send(
        frame(WINDOW_UPDATE, SYN, 1),
        frame(DATA, 0, 1, new Uint8Array(1000)),
        frame(DATA, SYN, 3, new Uint8Array(10))
      )
      yield* until(
        "two resets",
        () => log.frames.length === 3,
        () => log.describe()
      )
      assert.deepStrictEqual(log.frames.slice(1).map(describeFrame), [
        "WindowUpdate[RST] #1 0",
        "WindowUpdate[RST] #3 0"
      ])
      const stats = yield* session.stats
      assert.strictEqual(stats.streams, 0)
      assert.strictEqual(stats.bufferedBytes, 0)
    })
  )

  live("a stream opened as the peer's GoAway crosses fails StreamRefused (retryable) on write and end", () =>
    Effect.gen(function* () {
      const { client, server } = yield* sessions()
      yield* server.goAway
      // Opened before the GoAway arrives: the server resets it.
      const s = yield* client.open
      yield* eventually("the reset", client.stats, (st) => st.streams === 0 && st.goAwayReceived === 0)
      for (const [what, op] of [
        ["write", s.write(Uint8Array.of(1))],
        ["end", s.end]
      ] as const) {
        const refused = reasonOf(yield* Effect.exit(op), "StreamRefused", what)
        assert.strictEqual(refused.why, "refused")
        assert.isTrue(refused.retryable)
      }
    })
  )

  live("a refused stream's read fails StreamRefused (retryable), not Broken", () =>
    Effect.gen(function* () {
      // The usual request: write, end, read the reply. Write and end go out before the reset comes back, so
      // the read is where the opener learns the stream was refused; it must learn it is safe to retry.
      const { client } = yield* sessions({}, { maxConcurrentStreams: 1 })
      yield* client.open
      const s = yield* client.open
      yield* s.write(new TextEncoder().encode("request"))
      yield* s.end
      const read = yield* Effect.exit(readAll(s).pipe(within("5 seconds", "the refused stream's read")))
      const refused = reasonOf(read, "StreamRefused", "read of a refused stream")
      assert.isTrue(refused.retryable)
    })
  )

  live(
    "close waits until every stream has finished, then ends the connection, and the peer's session ends cleanly",
    () =>
      Effect.gen(function* () {
        const { client, server } = yield* sessions()
        const s = yield* client.open
        const t = yield* server.accept
        const closing = yield* Effect.forkChild(client.close, { startImmediately: true })
        yield* Effect.sleep(50)
        assert.isUndefined(closing.pollUnsafe(), "close waits for the open stream")
        yield* eventually("the GoAway received", server.stats, (st) => st.goAwayReceived === 0)
        // The stream goes on: the server replies and finishes first, then the client.
        yield* t.write(Uint8Array.of(3))
        yield* t.end
        sameBytes(yield* readAll(s), Uint8Array.of(3), "the reply after close began")
        assert.isUndefined(closing.pollUnsafe(), "close waits for the stream's other half")
        yield* s.write(Uint8Array.of(1, 2))
        yield* s.end
        sameBytes(yield* readAll(t), Uint8Array.of(1, 2), "data after close began")
        yield* Fiber.join(closing).pipe(within("5 seconds", "close"))
        yield* server.closed.pipe(within("5 seconds", "the server's session to end"))
      })
  )

  live("close writes its GoAway before it ends the connection, and both sessions end cleanly", () =>
    Effect.gen(function* () {
      // close queues the GoAway as a control frame. A close that waited only for the data-path frames before
      // `conn.end` would leave the writer to write the GoAway after the end: it would fail "write after end",
      // and fail a session that was closing cleanly.
      const { client, server } = yield* sessions()
      yield* client.close.pipe(within("5 seconds", "close"))
      yield* server.closed.pipe(within("5 seconds", "the server's session to end"))
      assert.strictEqual((yield* server.stats).goAwayReceived, 0, "the GoAway reached the peer")
      const exit = yield* Effect.exit(client.closed.pipe(within("5 seconds", "the client's session to end")))
      assert.isTrue(
        Exit.isSuccess(exit),
        `the client's session: ${Exit.isFailure(exit) ? Cause.pretty(exit.cause) : ""}`
      )
    })
  )

  live("when the peer's FIN is what lets close finish, the peer's session still ends cleanly", () =>
    Effect.gen(function* () {
      // The server's `end` queues its FIN. Queuing wakes the writer at once, and over a pair its write runs the
      // client's reader, its close and its `conn.end` before returning: the server may read EOF before its own
      // `end` has returned. Had it not counted its stream closed by then, it would see the connection end with
      // a stream open and fail Broken "the connection closed", at the end of a graceful close.
      const { client, server } = yield* sessions()
      const s = yield* client.open
      const t = yield* server.accept
      const closing = yield* Effect.forkChild(client.close, { startImmediately: true })
      yield* s.end
      sameBytes(yield* readAll(t), new Uint8Array(0), "EOF")
      yield* t.end
      yield* Fiber.join(closing).pipe(within("5 seconds", "close"))
      const exit = yield* Effect.exit(server.closed.pipe(within("5 seconds", "the server's session to end")))
      assert.isTrue(
        Exit.isSuccess(exit),
        `the server's session: ${Exit.isFailure(exit) ? Cause.pretty(exit.cause) : ""}`
      )
    })
  )
})

// ---- graceful close ----------------------------------------------------------------------------------

describe("Mux graceful close", () => {
  live(
    "after close, keepalive stops, nothing is written after our FIN, and closed succeeds while the peer stays open",
    () =>
      Effect.gen(function* () {
        const { session, send, log } = yield* rawPeer({ role: "client", keepAliveInterval: "20 millis" })
        // The peer answers the first keepalive ping, so the session is alive and pinging when close begins.
        yield* until(
          "a keepalive ping",
          () => log.of(PING).length >= 1,
          () => log.describe()
        )
        const pingsBefore = log.of(PING).length
        yield* send(frame(PING, ACK, 0, log.of(PING)[0]!.length))
        yield* session.close.pipe(within("5 seconds", "close"))
        yield* session.closed.pipe(within("1 second", "closed, with the peer's end still open"))
        yield* until(
          "our FIN",
          () => log.end === "eof",
          () => log.describe()
        )
        const written = log.frames.length
        assert.strictEqual(describeFrame(log.frames.at(-1)!), "GoAway #0 0", log.describe())
        // A ping from the peer after our FIN gets no answer: nothing may follow the FIN.
        yield* send(frame(PING, SYN, 0, 7)).pipe(Effect.ignore)
        yield* Effect.sleep(150) // seven keepalive intervals
        assert.strictEqual(log.frames.length, written, `frames after our FIN: ${log.describe()}`)
        assert.isAtMost(log.of(PING).length, pingsBefore + 1, "keepalive stopped at close")
        assert.strictEqual(log.partial, 0)
      })
  )

  live("closing the scope right after closed resets nothing: the peer reads GoAway, then EOF", () =>
    Effect.gen(function* () {
      const [raw, conn] = yield* Duplex.pair({ label: "raw" })
      const log = new FrameLog()
      yield* Effect.forkScoped(log.drain(raw), { startImmediately: true })
      yield* Effect.scoped(
        Effect.gen(function* () {
          const session = yield* Mux.make(conn, { role: "client", keepAliveInterval: 0 })
          const s = yield* session.open
          yield* s.write(Uint8Array.of(1, 2, 3))
          yield* s.end
          yield* raw.write(concatBytes([frame(WINDOW_UPDATE, ACK | FIN, 1)]))
          yield* session.close.pipe(within("5 seconds", "close"))
          yield* session.closed
        })
      )
      yield* until(
        "the end of the session's output",
        () => log.end !== undefined,
        () => log.describe()
      )
      assert.strictEqual(log.end, "eof", `the peer read ${String(log.end)}`)
      assert.deepStrictEqual(log.frames.map(describeFrame), [
        "WindowUpdate[SYN] #1 0",
        "Data #1 3",
        "WindowUpdate[FIN] #1 0",
        "GoAway #0 0"
      ])
    })
  )

  live(
    "after the peer's GoAway and end, accept ends with SessionEnded, closed succeeds, and the scope's close resets nothing",
    () =>
      Effect.gen(function* () {
        const [raw, conn] = yield* Duplex.pair({ label: "raw" })
        const log = new FrameLog()
        yield* Effect.forkScoped(log.drain(raw), { startImmediately: true })
        yield* Effect.scoped(
          Effect.gen(function* () {
            const session = yield* Mux.make(conn, { role: "server", keepAliveInterval: "20 millis" })
            yield* raw.write(concatBytes([frame(WINDOW_UPDATE, SYN, 1), frame(DATA, FIN, 1, Uint8Array.of(9))]))
            const s = yield* session.accept
            sameBytes((yield* readUntilEnd(s)).bytes, Uint8Array.of(9), "the stream's bytes")
            yield* s.end
            yield* raw.write(frame(GO_AWAY, 0, 0, 0))
            yield* raw.end
            const ended = reasonOf(
              yield* Effect.exit(session.accept.pipe(within("1 second", "accept after the peer's close"))),
              "SessionEnded",
              "accept after the peer's close"
            )
            assert.strictEqual(ended.by, "peer")
            yield* session.closed.pipe(within("2 seconds", "closed after the peer's graceful close"))
          })
        )
        yield* until(
          "the end of the session's output",
          () => log.end !== undefined,
          () => log.describe()
        )
        assert.strictEqual(log.end, "eof", `the peer read ${String(log.end)}`)
        assert.isEmpty(
          log.frames.filter((f) => (f.flags & RST) !== 0),
          log.describe()
        )
      })
  )

  live("accept after our own goAway ends with SessionEnded once the streams already opened are taken", () =>
    Effect.gen(function* () {
      const { client, server } = yield* sessions()
      yield* client.open
      yield* eventually("the stream arrived", server.stats, (st) => st.streams === 1)
      yield* server.goAway
      yield* server.accept // the stream opened before the GoAway
      const ended = reasonOf(
        yield* Effect.exit(server.accept.pipe(within("1 second", "accept after goAway"))),
        "SessionEnded",
        "accept after goAway"
      )
      assert.strictEqual(ended.by, "local")
    })
  )

  live("a Tcp.serve handler that accepts until SessionEnded counts a gracefully closed session as completed", () =>
    Effect.gen(function* () {
      const server = yield* Tcp.serve({ host: "127.0.0.1", port: 0 }, (conn) =>
        Effect.scoped(
          Effect.gen(function* () {
            const session = yield* Mux.server(conn, { keepAliveInterval: 0 })
            yield* session.accept.pipe(
              Effect.flatMap((stream) =>
                Effect.forkScoped(Stream.run(stream.readable, stream.sink).pipe(Effect.andThen(stream.end)))
              ),
              Effect.forever,
              Effect.catchReason("DuplexError", "SessionEnded", () => Effect.void)
            )
          })
        )
      )
      for (let i = 0; i < 3; i++) {
        yield* Effect.scoped(
          Effect.gen(function* () {
            const session = yield* Mux.client(yield* Tcp.connect(server.address), { keepAliveInterval: 0 })
            const s = yield* session.open
            yield* s.write(Uint8Array.of(i))
            yield* s.end
            sameBytes((yield* readUntilEnd(s)).bytes, Uint8Array.of(i), "the echo")
            yield* session.close.pipe(within("5 seconds", "close"))
          })
        )
      }
      yield* eventually("three sessions ended", server.stats, (st) => st.completed + st.failed === 3)
      const stats = yield* server.stats
      assert.strictEqual(stats.completed, 3, JSON.stringify(stats))
      assert.strictEqual(stats.failed, 0, JSON.stringify(stats))
    })
  )
})

// ---- limits ------------------------------------------------------------------------------------------

describe("Mux limits", () => {
  live(
    "open beyond maxConcurrentStreams fails StreamRefused naming the limit, and succeeds once a stream is gone",
    () =>
      Effect.gen(function* () {
        const { client } = yield* sessions({ maxConcurrentStreams: 2, openTimeout: 0 })
        const first = yield* client.open
        yield* client.open
        const refused = reasonOf(yield* Effect.exit(client.open), "StreamRefused", "the third open")
        assert.strictEqual(refused.why, "limit")
        assert.strictEqual(refused.limit, 2)
        assert.isTrue(refused.retryable)
        yield* first.abort
        yield* client.open
      })
  )

  live("a stream the peer opens beyond maxConcurrentStreams is reset, and its opener's write fails StreamRefused", () =>
    Effect.gen(function* () {
      // Room for ten windows: the stream limit is what refuses the third.
      const { session, send, log } = yield* rawPeer({
        role: "server",
        maxConcurrentStreams: 2,
        maxBufferedBytes: 10 * WINDOW
      })
      yield* send(frame(WINDOW_UPDATE, SYN, 1), frame(WINDOW_UPDATE, SYN, 3), frame(WINDOW_UPDATE, SYN, 5))
      yield* until(
        "three answers",
        () => log.frames.length === 3,
        () => log.describe()
      )
      assert.deepStrictEqual(log.frames.map(describeFrame), [
        "WindowUpdate[ACK] #1 0",
        "WindowUpdate[ACK] #3 0",
        "WindowUpdate[RST] #5 0"
      ])
      assert.strictEqual((yield* session.stats).streams, 2)

      const { client } = yield* sessions({}, { maxConcurrentStreams: 1, maxBufferedBytes: 10 * WINDOW })
      yield* client.open
      const s = yield* client.open
      yield* eventually("the reset", client.stats, (st) => st.streams === 1)
      const refused = reasonOf(
        yield* Effect.exit(s.write(Uint8Array.of(1))),
        "StreamRefused",
        "write to a refused stream"
      )
      assert.strictEqual(refused.why, "refused")
    })
  )

  live("streams the peer opens beyond maxBufferedBytes / windowBytes are reset", () =>
    Effect.gen(function* () {
      const { session, send, log } = yield* rawPeer({ role: "server", maxBufferedBytes: 2 * WINDOW + 100 })
      yield* send(frame(WINDOW_UPDATE, SYN, 1), frame(WINDOW_UPDATE, SYN, 3), frame(WINDOW_UPDATE, SYN, 5))
      yield* until(
        "three answers",
        () => log.frames.length === 3,
        () => log.describe()
      )
      assert.deepStrictEqual(
        log.frames.map((f) => f.flags),
        [ACK, ACK, RST]
      )
      assert.strictEqual((yield* session.stats).streams, 2)
    })
  )

  live("Data frames are cut to maxFrameBytes", () =>
    Effect.gen(function* () {
      const { session, log } = yield* rawPeer({ role: "client", maxFrameBytes: 1024 })
      const s = yield* session.open
      const payload = randomBytes(10 * KiB + 1, 3)
      yield* s.write(payload)
      yield* until(
        "every byte",
        () => log.data(1).length === payload.length,
        () => log.describe()
      )
      assert.deepStrictEqual(
        log.of(DATA).map((f) => f.length),
        [...Array(10).fill(1024), 1]
      )
      sameBytes(log.data(1), payload, "the bytes")
    })
  )

  live("open beyond maxBufferedBytes / windowBytes fails StreamRefused: our own streams' windows count too", () =>
    Effect.gen(function* () {
      const { client, server } = yield* sessions({ maxBufferedBytes: 2 * WINDOW + 100, openTimeout: 0 })
      for (let i = 0; i < 2; i++) {
        yield* client.open
        const t = yield* server.accept
        yield* Effect.forkChild(t.write(new Uint8Array(WINDOW + 1)), { startImmediately: true })
      }
      const refused = reasonOf(yield* Effect.exit(client.open), "StreamRefused", "the third open")
      assert.strictEqual(refused.why, "limit")
      assert.strictEqual(refused.limit, 2)
      yield* eventually("two windows buffered", client.stats, (st) => st.bufferedBytes === 2 * WINDOW)
      yield* Effect.sleep(20)
      assert.strictEqual((yield* client.stats).peakBufferedBytes, 2 * WINDOW)
    })
  )

  live("a stream closed both ways but not yet read still counts against maxBufferedBytes", () =>
    Effect.gen(function* () {
      // The peer sends a window and FIN; the application ends its side without reading. The stream is closed
      // both ways with 256 KiB still buffered: were its bytes forgotten with it, the next stream would be
      // admitted as if the session held nothing, and a peer could make it buffer without bound. A stream
      // refused instead is what the bound asks for.
      const { client, server } = yield* sessions({}, { maxBufferedBytes: WINDOW })
      for (let i = 0; i < 3; i++) {
        const s = yield* client.open
        yield* Effect.exit(Effect.andThen(s.write(new Uint8Array(WINDOW)), s.end).pipe(Effect.timeout("300 millis")))
        const accepted = yield* Effect.exit(server.accept.pipe(Effect.timeout("300 millis")))
        if (Exit.isSuccess(accepted)) yield* accepted.value.end
        yield* Effect.sleep(10)
      }
      const stats = yield* server.stats
      assert.isAtMost(stats.peakBufferedBytes, WINDOW, JSON.stringify(stats))
    })
  )

  live("a stream reset by the peer frees its slot before its reader wakes, so a retry at once may open", () =>
    Effect.gen(function* () {
      // The reset wakes the stream's reader, which runs at once, inside the frame reader's step. Were the stream
      // forgotten only after that, the reader's retry would still see the slot taken and fail
      // StreamRefused(limit), though the slot is as good as free: the natural retry loop would fail.
      // (`openTimeout: 0`: the retry must find the slot free at once, not wait for it.)
      const { client, server } = yield* sessions({ maxConcurrentStreams: 1, openTimeout: 0 })
      const s = yield* client.open
      const t = yield* server.accept
      const retry = yield* Effect.forkChild(Effect.andThen(Effect.exit(readAll(s)), Effect.exit(client.open)), {
        startImmediately: true
      })
      yield* t.abort
      const reopened = yield* Fiber.join(retry).pipe(within("5 seconds", "the retry"))
      assert.isTrue(
        Exit.isSuccess(reopened),
        `the retry: ${Exit.isFailure(reopened) ? Cause.pretty(reopened.cause) : ""}`
      )
    })
  )

  live(
    "a stream finished both ways frees its slot before its reader sees EOF, so an open right after may succeed",
    () =>
      Effect.gen(function* () {
        // The same order on a FIN: the EOF wakes the reader at once, so the stream is retired before it.
        // (`openTimeout: 0`, as above.)
        const { client, server } = yield* sessions({ maxConcurrentStreams: 1, openTimeout: 0 })
        const s = yield* client.open
        const t = yield* server.accept
        yield* s.end
        const next = yield* Effect.forkChild(Effect.andThen(readAll(s), Effect.exit(client.open)), {
          startImmediately: true
        })
        yield* settle
        yield* t.end
        const opened = yield* Fiber.join(next).pipe(within("5 seconds", "the open after EOF"))
        assert.isTrue(Exit.isSuccess(opened), `the open: ${Exit.isFailure(opened) ? Cause.pretty(opened.cause) : ""}`)
      })
  )

  live("streams the peer opens and resets before they are accepted do not pile up beyond the stream limit", () =>
    Effect.gen(function* () {
      // SYN then RST, a thousand times: the session never has more than one stream open. An accept queue that
      // kept every one of them, state and all, for an application that accepts later would grow without
      // bound: memory a peer could take at will.
      const { session, send } = yield* rawPeer({ role: "server", maxConcurrentStreams: 4 })
      const frames: Array<Uint8Array> = []
      for (let id = 1; id < 2000; id += 2) frames.push(frame(WINDOW_UPDATE, SYN, id), frame(WINDOW_UPDATE, RST, id))
      yield* send(...frames)
      yield* eventually("every frame read", session.stats, (st) => st.framesIn === frames.length)
      assert.strictEqual((yield* session.stats).streams, 0)
      let waiting = 0
      while (Exit.isSuccess(yield* Effect.exit(session.accept.pipe(Effect.timeout("20 millis"))))) waiting++
      assert.isAtMost(waiting, 4, "streams handed out by accept after the peer had reset them")
    })
  )

  live("a peer that sends pings but never reads is cut off once 4096 answers wait: the control queue is bounded", () =>
    Effect.gen(function* () {
      // The session's side of the pair holds 1 KiB, 85 ping ACKs; then its writer waits, and answers queue.
      const [raw, conn] = yield* Duplex.pair({ capacity: 1024, label: "raw" })
      const session = yield* Mux.server(conn, { keepAliveInterval: 0 })
      let peak = 0
      const flood = Effect.gen(function* () {
        for (let batch = 0; batch < 100; batch++) {
          yield* raw.write(concatBytes(Array.from({ length: 100 }, (_, k) => frame(PING, SYN, 0, batch * 100 + k))))
          peak = Math.max(peak, (yield* session.stats).controlQueued)
          // A turn for the session's writer between reads, as a socket's reads come one event at a time:
          // answers queued within one read are not yet a peer that does not read.
          yield* Effect.yieldNow
        }
      })
      yield* Effect.forkChild(Effect.ignore(flood), { startImmediately: true })
      const exit = yield* Effect.exit(session.closed.pipe(within("5 seconds", "the session's end")))
      assert.include(reasonOf(exit, "ProtocolError", "closed").problem, "control frames")
      assert.isAtMost(peak, 4096)
    })
  )

  /** `n` streams opened and at once reset by the raw peer, from stream id `first` on. */
  const synRst = (n: number, first = 1) =>
    Array.from({ length: n }, (_, i) => [
      frame(WINDOW_UPDATE, SYN, first + 2 * i),
      frame(WINDOW_UPDATE, RST, first + 2 * i)
    ]).flat()

  live("a peer that opens and resets streams past the churn budget is ended with ProtocolError and GoAway", () =>
    Effect.gen(function* () {
      const { session, send, log } = yield* rawPeer({ role: "server", maxStreamChurn: 20, streamChurnPerSecond: 0 })
      yield* send(...synRst(20))
      yield* eventually("the twenty pairs read", session.stats, (st) => st.framesIn === 40)
      assert.isUndefined((yield* session.stats).goAwaySent, "within the budget the session goes on")
      yield* send(...synRst(1, 41))
      const exit = yield* Effect.exit(session.closed.pipe(within("5 seconds", "the session's end")))
      const problem = reasonOf(exit, "ProtocolError", "closed").problem
      assert.include(problem, "stream churn")
      assert.include(problem, "20")
      yield* until(
        "the GoAway",
        () => log.of(GO_AWAY).length > 0,
        () => log.describe()
      )
      assert.strictEqual(log.of(GO_AWAY)[0]!.length, PROTOCOL_ERROR)
    })
  )

  live("SYNs refused past maxConcurrentStreams spend the churn budget too", () =>
    Effect.gen(function* () {
      const { session, send } = yield* rawPeer({
        role: "server",
        maxConcurrentStreams: 1,
        maxStreamChurn: 10,
        streamChurnPerSecond: 0
      })
      // One stream open, then SYN after SYN that the session must refuse, each costing it an RST.
      yield* send(frame(WINDOW_UPDATE, SYN, 1))
      yield* send(...Array.from({ length: 11 }, (_, i) => frame(WINDOW_UPDATE, SYN, 3 + 2 * i)))
      const exit = yield* Effect.exit(session.closed.pipe(within("5 seconds", "the session's end")))
      assert.include(reasonOf(exit, "ProtocolError", "closed").problem, "stream churn")
    })
  )

  it.effect("the churn budget refills at streamChurnPerSecond, up to maxStreamChurn", () =>
    Effect.gen(function* () {
      const { session, send } = yield* rawPeer({ role: "server", maxStreamChurn: 5, streamChurnPerSecond: 10 })
      yield* send(...synRst(5))
      yield* settle
      // Ten seconds refill a hundred, but the budget holds five at most.
      yield* TestClock.adjust("10 seconds")
      yield* send(...synRst(5, 11))
      yield* settle
      assert.isUndefined((yield* session.stats).goAwaySent, "ten pairs, five at a time, ten seconds apart")
      yield* TestClock.adjust("100 millis") // one back
      yield* send(...synRst(1, 21))
      yield* settle
      assert.isUndefined((yield* session.stats).goAwaySent, "the one regained")
      yield* send(...synRst(1, 23))
      yield* settle
      const exit = yield* Effect.exit(session.closed)
      assert.include(reasonOf(exit, "ProtocolError", "closed").problem, "stream churn")
    })
  )

  live("a stream that is gone leaves nothing in the scope it was accepted in, however long that scope lives", () =>
    Effect.gen(function* () {
      const { session, send } = yield* rawPeer({ role: "server" })
      // One scope for every accept, as a server's accept loop has: it lives as long as the connection.
      const owner = yield* Scope.make()
      const finalizers = () => {
        const state = (owner as unknown as { state: { _tag: string; finalizers?: Map<unknown, unknown> } }).state
        return state._tag === "Empty" ? 0 : (state.finalizers?.size ?? 1)
      }
      for (let i = 0; i < 200; i++) {
        const id = 2 * i + 1
        yield* send(frame(WINDOW_UPDATE, SYN, id))
        const stream = yield* Scope.provide(session.accept, owner)
        if (i % 2 === 0) {
          yield* send(frame(WINDOW_UPDATE, RST, id)) // reset by the peer
        } else {
          yield* send(frame(WINDOW_UPDATE, FIN, id)) // closed both ways
          yield* stream.read
          yield* stream.end
        }
      }
      yield* eventually("every stream gone", session.stats, (st) => st.streams === 0)
      assert.strictEqual(finalizers(), 0, "finalizers of streams that are gone, still in their owner's scope")
      // A stream still open keeps its finalizer, and closing the scope aborts it.
      yield* send(frame(WINDOW_UPDATE, SYN, 1001))
      const open = yield* Scope.provide(session.accept, owner)
      assert.strictEqual(finalizers(), 1)
      yield* Scope.close(owner, Exit.void)
      reasonOf(yield* Effect.exit(open.write(Uint8Array.of(1))), "Closed", "a write after the owner's scope closed")
    })
  )

  live("streams opened and reset within the budget leave nothing behind: no stream, no control frame", () =>
    Effect.gen(function* () {
      const { session, send } = yield* rawPeer({ role: "server", maxStreamChurn: 5000 })
      // In batches, with a pause between them for the session's writer: 5000 ACKs waiting at once would
      // be more than the control queue holds (a peer that does not read).
      for (let batch = 0; batch < 10; batch++) {
        yield* send(...synRst(500, 1 + batch * 1000))
        yield* Effect.sleep(1)
      }
      yield* eventually(
        "every frame read and answered",
        session.stats,
        (st) => st.framesIn === 10_000 && st.controlQueued === 0
      )
      const stats = yield* session.stats
      assert.strictEqual(stats.streams, 0, JSON.stringify(stats))
      assert.strictEqual(stats.bufferedBytes, 0, JSON.stringify(stats))
      assert.isUndefined(stats.goAwaySent)
    })
  )

  it.effect("invalid options fail InvalidOptions naming the option", () =>
    Effect.gen(function* () {
      const [a] = yield* Duplex.pair()
      for (const [option, value] of [
        ["windowBytes", WINDOW - 1],
        ["windowBytes", 2 ** 32],
        ["maxWindowBytes", WINDOW - 1],
        ["maxWindowBytes", 2 ** 32],
        ["maxFrameBytes", 1023],
        ["maxConcurrentStreams", 0],
        ["maxBufferedBytes", WINDOW - 1],
        ["stallTimeout", 0],
        ["keepAliveInterval", -1],
        ["keepAliveTimeout", 0],
        ["errorCloseTimeout", -1],
        ["openTimeout", -1],
        ["openTimeout", Infinity],
        ["maxStreamChurn", 0],
        ["maxStreamChurn", 1.5],
        ["streamChurnPerSecond", -1],
        ["streamChurnPerSecond", Infinity]
      ] as const) {
        const exit = yield* Effect.exit(Mux.client(a, { [option]: value }))
        assert.strictEqual(reasonOf(exit, "InvalidOptions", `${option}: ${value}`).option, option)
      }
      const role = yield* Effect.exit(Mux.make(a, { role: "peer" as "client" }))
      assert.strictEqual(reasonOf(role, "InvalidOptions", "role").option, "role")
    })
  )
})

// ---- waiting opens -----------------------------------------------------------------------------------

describe("Mux waiting opens", () => {
  /** Forks `client.open` in a scope of its own, recording its name in `order` when it has its stream. */
  const openInLine = (client: Mux.Session, name: string, order: Array<string>) =>
    Effect.gen(function* () {
      const scope = yield* Scope.make()
      const fiber = yield* Effect.forkChild(
        Effect.tap(Scope.provide(client.open, scope), () => Effect.sync(() => order.push(name))),
        { startImmediately: true }
      )
      return { scope, fiber }
    })

  live("at the stream limit, open waits for a slot, first come first served; a later open does not overtake", () =>
    Effect.gen(function* () {
      // Three slots, all taken; up to three opens may wait.
      const { client } = yield* sessions({ maxConcurrentStreams: 3, openTimeout: "5 seconds" })
      const first = yield* client.open
      yield* client.open
      yield* client.open
      const order: Array<string> = []
      const a = yield* openInLine(client, "A", order)
      const b = yield* openInLine(client, "B", order)
      yield* settle
      assert.deepStrictEqual(order, [], "both wait while every slot is taken")
      assert.strictEqual((yield* client.stats).waitingOpens, 2)
      // A slot is free from here, in this very step, until the line is served: C, opened now, still
      // queues behind A and B.
      yield* first.abort
      const c = yield* openInLine(client, "C", order)
      yield* Fiber.join(a.fiber).pipe(within("2 seconds", "A, the first waiter"))
      yield* settle
      assert.deepStrictEqual(order, ["A"], "B and C wait for the next slot")
      yield* Scope.close(a.scope, Exit.void) // A's stream is reset: its slot goes to B
      yield* Fiber.join(b.fiber).pipe(within("2 seconds", "B"))
      yield* settle
      assert.deepStrictEqual(order, ["A", "B"])
      yield* Scope.close(b.scope, Exit.void)
      yield* Fiber.join(c.fiber).pipe(within("2 seconds", "C"))
      assert.deepStrictEqual(order, ["A", "B", "C"])
      const stats = yield* client.stats
      assert.strictEqual(stats.streams, 3)
      assert.strictEqual(stats.waitingOpens, 0)
      yield* Scope.close(c.scope, Exit.void)
    })
  )

  live(
    "a waiting open fails StreamRefused (retryable, the limit) after openTimeout; one interrupted leaves the line",
    () =>
      Effect.gen(function* () {
        const { client } = yield* sessions({ maxConcurrentStreams: 1, openTimeout: "100 millis" })
        const first = yield* client.open
        const started = yield* Clock.currentTimeMillis
        const refused = reasonOf(
          yield* Effect.exit(client.open.pipe(within("2 seconds", "an open past its openTimeout"))),
          "StreamRefused",
          "open past the limit"
        )
        assert.isAtLeast((yield* Clock.currentTimeMillis) - started, 90, "it waited")
        assert.strictEqual(refused.why, "limit")
        assert.strictEqual(refused.limit, 1)
        assert.isAtLeast(refused.waitedMillis ?? 0, 100)
        assert.include(refused.message, "openTimeout")
        assert.isTrue(refused.retryable)
        assert.strictEqual((yield* client.stats).waitingOpens, 0, "the timed-out open left the line")
        // An interrupted waiter gives its place up: the next open gets the slot.
        const interrupted = yield* Effect.forkChild(client.open, { startImmediately: true })
        assert.strictEqual((yield* client.stats).waitingOpens, 1)
        yield* Fiber.interrupt(interrupted)
        assert.strictEqual((yield* client.stats).waitingOpens, 0, "the interrupted open left the line")
        const next = yield* Effect.forkChild(client.open, { startImmediately: true })
        yield* first.abort
        yield* Fiber.join(next).pipe(within("2 seconds", "the open after the interrupted one"))
        assert.strictEqual((yield* client.stats).streams, 1)
      })
  )

  live("an open held by maxBufferedBytes waits until buffer room comes back, as unread bytes are read", () =>
    Effect.gen(function* () {
      // Room for two windows: two streams whose peer filled them, and a third open that must wait.
      const { client, server } = yield* sessions({ maxBufferedBytes: 2 * WINDOW + 100, openTimeout: "5 seconds" })
      const s1 = yield* client.open
      const t1 = yield* server.accept
      yield* Effect.andThen(t1.write(new Uint8Array(WINDOW)), t1.end)
      yield* client.open
      const t2 = yield* server.accept
      yield* t2.write(new Uint8Array(WINDOW))
      yield* eventually("two windows buffered", client.stats, (st) => st.bufferedBytes === 2 * WINDOW)
      const third = yield* Effect.forkChild(client.open, { startImmediately: true })
      yield* Effect.sleep(20)
      assert.strictEqual((yield* client.stats).waitingOpens, 1, "the third open waits for room")
      // Stream 1's peer finished: what it sent is room for good once read (no credit follows it).
      assert.strictEqual((yield* readAll(s1)).length, WINDOW)
      yield* Fiber.join(third).pipe(within("2 seconds", "the third open, once a window was read"))
      assert.strictEqual((yield* client.stats).streams, 3)
    })
  )

  live("openTimeout 0 fails at once; an open past maxConcurrentStreams waiting ones fails at once", () =>
    Effect.gen(function* () {
      const eager = yield* sessions({ maxConcurrentStreams: 1, openTimeout: 0 })
      yield* eager.client.open
      const atOnce = reasonOf(
        yield* Effect.exit(eager.client.open.pipe(within("100 millis", "an open that may not wait"))),
        "StreamRefused",
        "an open at the limit with openTimeout 0"
      )
      assert.strictEqual(atOnce.why, "limit")
      assert.isUndefined(atOnce.waitedMillis)
      const { client } = yield* sessions({ maxConcurrentStreams: 2, openTimeout: "10 seconds" })
      yield* client.open
      yield* client.open
      const waiters = yield* Effect.forEach([1, 2], () =>
        Effect.forkChild(Effect.exit(client.open), { startImmediately: true })
      )
      assert.strictEqual((yield* client.stats).waitingOpens, 2)
      const third = reasonOf(
        yield* Effect.exit(client.open.pipe(within("100 millis", "a waiter too many"))),
        "StreamRefused",
        "a third waiter with maxConcurrentStreams 2"
      )
      assert.strictEqual(third.why, "limit")
      assert.strictEqual(third.limit, 2)
      for (const waiter of waiters) yield* Fiber.interrupt(waiter)
      assert.strictEqual((yield* client.stats).waitingOpens, 0)
    })
  )

  live("waiters fail as an open would: StreamRefused at a GoAway either way, the session's error when it fails", () =>
    Effect.gen(function* () {
      const waitAt = (client: Mux.Session) =>
        Effect.gen(function* () {
          yield* client.open
          yield* client.open
          const waiters = yield* Effect.forEach([1, 2], () =>
            Effect.forkChild(Effect.exit(client.open), { startImmediately: true })
          )
          assert.strictEqual((yield* client.stats).waitingOpens, 2)
          return waiters
        })
      const exitsOf = (waiters: ReadonlyArray<Fiber.Fiber<Exit.Exit<unknown, unknown>>>, what: string) =>
        Effect.forEach(waiters, (waiter) => Fiber.join(waiter).pipe(within("2 seconds", what)))
      // Two slots taken, two opens waiting (as many as may).
      const options = { maxConcurrentStreams: 2, openTimeout: "10 seconds" } as const

      const received = yield* sessions(options)
      const atTheirs = yield* waitAt(received.client)
      yield* received.server.goAway
      for (const exit of yield* exitsOf(atTheirs, "a waiter at the peer's GoAway")) {
        assert.strictEqual(reasonOf(exit, "StreamRefused", "a waiter at the peer's GoAway").why, "goAway")
      }

      const sent = yield* sessions(options)
      const atOurs = yield* waitAt(sent.client)
      yield* sent.client.goAway
      for (const exit of yield* exitsOf(atOurs, "a waiter at our GoAway")) {
        assert.strictEqual(reasonOf(exit, "StreamRefused", "a waiter at our GoAway").why, "closing")
      }

      const broken = yield* sessions(options)
      const atFailure = yield* waitAt(broken.client)
      yield* broken.b.abort // the connection breaks under the client
      const failure = duplexErrorOf(yield* Effect.exit(broken.client.closed.pipe(within("2 seconds", "closed"))))
      for (const exit of yield* exitsOf(atFailure, "a waiter as the session fails")) {
        assert.strictEqual(duplexErrorOf(exit, "a waiter as the session fails"), failure)
      }
      assert.strictEqual((yield* broken.client.stats).waitingOpens, 0)
    })
  )

  live("waiters interrupted at random while slots free up: freed slots go to the line in order, none is lost", () =>
    Effect.gen(function* () {
      const random = prng(seed)
      const limit = 8
      for (let round = 0; round < 25; round++) {
        const { client } = yield* sessions({ maxConcurrentStreams: limit, openTimeout: "5 seconds" })
        const held: Array<Scope.Closeable> = []
        for (let i = 0; i < limit; i++) {
          const scope = yield* Scope.make()
          yield* Scope.provide(client.open, scope)
          held.push(scope)
        }
        const line: Array<{ scope: Scope.Closeable; fiber: Fiber.Fiber<Duplex.Duplex, unknown> }> = []
        for (let i = 0; i < limit; i++) {
          const scope = yield* Scope.make()
          line.push({
            scope,
            fiber: yield* Effect.forkChild(Scope.provide(client.open, scope), { startImmediately: true })
          })
        }
        // Free some slots and interrupt some waiters, in a random order, some in one step, some a turn apart.
        let freed = 0
        for (let step = 0; step < limit; step++) {
          if (random() % 2 === 0) {
            yield* Scope.close(held[freed++]!, Exit.void)
          } else {
            yield* Fiber.interrupt(line[random() % limit]!.fiber)
          }
          if (random() % 2 === 0) yield* Effect.yieldNow
        }
        yield* settle
        const what = (detail: string) => `round ${round} (seed ${seed}), ${freed} freed: ${detail}`
        const exits = line.map((w) => w.fiber.pollUnsafe())
        const served = exits.flatMap((exit, i) => (exit !== undefined && Exit.isSuccess(exit) ? [i] : []))
        const waiting = exits.flatMap((exit, i) => (exit === undefined ? [i] : []))
        for (const exit of exits) {
          if (exit !== undefined && Exit.isFailure(exit)) {
            assert.isTrue(Cause.hasInterruptsOnly(exit.cause), what(`a waiter failed: ${Cause.pretty(exit.cause)}`))
          }
        }
        if (waiting.length > 0) {
          assert.strictEqual(served.length, freed, what("with opens still waiting, every freed slot went to one"))
          assert.isBelow(Math.max(-1, ...served), Math.min(...waiting), what("served out of line order"))
        }
        const stats = yield* client.stats
        assert.strictEqual(stats.waitingOpens, waiting.length, what(JSON.stringify(stats)))
        assert.strictEqual(stats.streams, limit - freed + served.length, what(JSON.stringify(stats)))
        // Everything closed, nothing is left: no stream was opened for a waiter that was gone.
        for (const w of line) yield* Fiber.interrupt(w.fiber)
        for (const scope of [...held, ...line.map((w) => w.scope)]) yield* Scope.close(scope, Exit.void)
        yield* settle
        const after = yield* client.stats
        assert.strictEqual(after.streams, 0, what(JSON.stringify(after)))
        assert.strictEqual(after.waitingOpens, 0, what(JSON.stringify(after)))
      }
    })
  )
})

// ---- memory bound ------------------------------------------------------------------------------------

describe("Mux memory bound", () => {
  live("with 16 streams never read, buffered bytes reach 16 windows and no more, each stream ≤ its window", () =>
    Effect.gen(function* () {
      const n = 16
      const { client, server } = yield* sessions()
      const payloads = Array.from({ length: n }, (_, i) => randomBytes(MiB, i))
      const ours: Array<Duplex.Duplex> = []
      const writers: Array<Fiber.Fiber<void, DuplexError.DuplexError>> = []
      for (let i = 0; i < n; i++) {
        ours.push(yield* client.open)
        const t = yield* server.accept
        writers.push(yield* Effect.forkChild(Effect.andThen(t.write(payloads[i]!), t.end), { startImmediately: true }))
      }
      yield* eventually("every window full", client.stats, (s) => s.bufferedBytes === n * WINDOW)
      yield* Effect.sleep(50)
      const full = yield* client.stats
      assert.strictEqual(full.bufferedBytes, n * WINDOW)
      assert.strictEqual(full.peakBufferedBytes, n * WINDOW)
      assert.isAtMost(full.controlQueued, n)
      for (const s of ours) assert.isAtMost((yield* s.stats).inbound.peakBuffered, WINDOW)
      // Reading returns every byte, and the count to zero.
      const got = yield* Effect.forEach(ours, readAll, { concurrency: "unbounded" }).pipe(
        within("20 seconds", "reading")
      )
      got.forEach((g, i) => sameBytes(g, payloads[i]!, `stream ${i}`))
      yield* Effect.forEach(writers, Fiber.join)
      const after = yield* client.stats
      assert.strictEqual(after.bufferedBytes, 0)
      assert.strictEqual(after.peakBufferedBytes, n * WINDOW)
      for (const s of ours) assert.isAtMost((yield* s.stats).inbound.peakBuffered, WINDOW)
    })
  )
})

// ---- frame order -------------------------------------------------------------------------------------

describe("Mux frame order", () => {
  live("a stream aborted before its SYN is written leaves no stream behind on the peer (RST never before SYN)", () =>
    Effect.gen(function* () {
      // The writer is busy with stream 1's data when stream 3 is opened (its SYN queued on the data path) and
      // aborted at once (its RST queued as a control frame). Control frames go first; were the RST written
      // before the SYN, the peer would read RST #3, for a stream it does not know, then SYN #3: it would open,
      // and keep, a stream the opener has already forgotten (holding a slot and waiting in accept, its reader
      // waiting forever).
      const { client, server } = yield* sessions({}, {}, 1024)
      const busy = yield* client.open
      yield* busy.write(new Uint8Array(100_000))
      const aborted = yield* client.open
      yield* aborted.abort
      yield* readAtLeast(yield* server.accept, 100_000).pipe(within("5 seconds", "stream 1's data"))
      yield* Effect.sleep(50)
      assert.strictEqual((yield* client.stats).streams, 1)
      assert.strictEqual((yield* server.stats).streams, 1, "the server still counts the aborted stream")

      // On the wire.
      const [conn, raw] = yield* Duplex.pair({ capacity: 1024, label: "raw" })
      const session = yield* Mux.client(conn, { keepAliveInterval: 0 })
      yield* (yield* session.open).write(new Uint8Array(100_000))
      yield* (yield* session.open).abort
      const log = new FrameLog()
      for (;;) {
        const chunk = yield* raw.read.pipe(Effect.timeoutOption("300 millis"))
        if (Option.isNone(chunk) || Option.isNone(chunk.value)) break
        log.push(chunk.value.value)
      }
      const third = log.frames.filter((f) => f.streamId === 3).map(describeFrame)
      assert.isTrue(third.length === 0 || third[0] === "WindowUpdate[SYN] #3 0", `stream 3: ${third.join(", ")}`)
    })
  )

  live("interrupting a pending write never cuts a frame: the other streams' frames arrive whole after it", () =>
    Effect.gen(function* () {
      // The connection takes 1 KiB at a time and the raw peer grants no credit, so the 600 KB write is still
      // pending (on the connection, or on credit) when it is interrupted. A frame cut short there would swallow
      // the frames of every other stream written after it as its payload.
      const [conn, raw] = yield* Duplex.pair({ capacity: 1024, label: "raw" })
      const session = yield* Mux.client(conn, { keepAliveInterval: 0 })
      const first = yield* session.open
      const second = yield* session.open
      const payload = randomBytes(600_000, 9)
      const writer = yield* Effect.forkChild(first.write(payload), { startImmediately: true })
      yield* settle
      assert.isUndefined(writer.pollUnsafe(), "the write is pending")
      yield* Effect.forkChild(Fiber.interrupt(writer), { startImmediately: true })
      yield* Effect.forkChild(Effect.andThen(second.write(new TextEncoder().encode("hello")), second.end), {
        startImmediately: true
      })
      const log = new FrameLog()
      for (;;) {
        const chunk = yield* raw.read.pipe(Effect.timeoutOption("300 millis"))
        if (Option.isNone(chunk) || Option.isNone(chunk.value)) break
        log.push(chunk.value.value)
      }
      assert.strictEqual(log.partial, 0, `a frame was cut: ${log.describe()}`)
      assert.strictEqual(new TextDecoder().decode(log.data(3)), "hello", log.describe())
      assert.isTrue(
        log.of(WINDOW_UPDATE, 3).some((f) => f.flags === FIN),
        `stream 3's FIN: ${log.describe()}`
      )
      const sent = log.data(1)
      sameBytes(sent, payload.subarray(0, sent.length), "what stream 1 sent before the interruption")
    })
  )
})

// ---- conformance -------------------------------------------------------------------------------------

/** A stream each way over two sessions on `pair`: `[opened by the client, accepted by the server]`. */
const muxStreams = <E>(pair: Effect.Effect<readonly [Duplex.Duplex, Duplex.Duplex], E, Scope.Scope>) =>
  Effect.gen(function* () {
    const [a, b] = yield* pair
    const client = yield* Mux.client(a, { label: "client" })
    const server = yield* Mux.server(b, { label: "server" })
    const opened = yield* client.open
    const accepted = yield* server.accept
    return [opened, accepted] as const
  })

describe("Mux conformance", () => {
  // A stream buffers at most its window inbound, and nothing outbound (writes wait for credit).
  describe("streams over an in-memory pair", () => {
    for (const c of conformance("mux over pair", muxStreams(Duplex.pair()), { bufferBound: WINDOW })) {
      it.live(c.name, () => c.run)
    }
  })

  describe("streams over Tcp.serve + Tcp.connect on 127.0.0.1", () => {
    const pair = servedPair({ highWaterMark: 16 * KiB })
    for (const c of conformance("mux over tcp", muxStreams(pair), { bufferBound: WINDOW })) {
      it.live(c.name, () => c.run)
    }
  })
})

// ---- properties --------------------------------------------------------------------------------------

const PROPERTY_MAX_BYTES = Math.round(Number(process.env["MUX_PROPERTY_MAX_MIB"] || 2) * MiB)
const PROPERTY_MAX_STREAMS = Number(process.env["MUX_PROPERTY_MAX_STREAMS"] || 64)
const PROPERTY_BUDGET_BYTES = Math.round(Number(process.env["MUX_PROPERTY_BUDGET_MIB"] || 8) * MiB)

/** One stream of the streams property: who opens it, what goes each way, and how each end consumes. */
interface StreamPlan {
  readonly opener: "client" | "server"
  readonly up: number
  readonly down: number
  readonly seed: number
  readonly maxChunk: number
  /** How the server reads what the client sends: at a pace, or never. */
  readonly serverReads: Pacing | "never"
  /** How the client reads what the server sends. */
  readonly clientReads: Pacing | "never"
  /** An abort by one end once it has read `after` bytes (or reached EOF), in the middle of the transfer. */
  readonly reset: { readonly by: "client" | "server"; readonly after: number } | null
}

/** Sizes from 0 to `max`, most of them small: a run of 64 streams moves tens of MiB, not hundreds. */
const streamBytes = (max: number): fc.Arbitrary<number> =>
  fc.oneof(
    { weight: 4, arbitrary: fc.integer({ min: 0, max: Math.min(max, 4 * KiB) }) },
    { weight: 4, arbitrary: fc.integer({ min: 0, max: Math.min(max, 128 * KiB) }) },
    { weight: 2, arbitrary: fc.integer({ min: 0, max: Math.min(max, 512 * KiB) }) },
    { weight: 1, arbitrary: fc.integer({ min: 0, max }) }
  )

const reads: fc.Arbitrary<Pacing | "never"> = fc.oneof(
  { weight: 5, arbitrary: pacing() },
  { weight: 1, arbitrary: fc.constant("never" as const) }
)

const streamPlan: fc.Arbitrary<StreamPlan> = fc.record({
  opener: fc.constantFrom("client" as const, "server" as const),
  up: streamBytes(PROPERTY_MAX_BYTES),
  down: streamBytes(PROPERTY_MAX_BYTES),
  seed: fc.integer(),
  maxChunk: fc.integer({ min: 1, max: 64 * KiB }),
  serverReads: reads,
  clientReads: reads,
  reset: fc.oneof(
    { weight: 5, arbitrary: fc.constant(null) },
    {
      weight: 1,
      arbitrary: fc.record({
        by: fc.constantFrom("client" as const, "server" as const),
        after: fc.integer({ min: 0, max: MiB })
      })
    }
  )
})

/**
 * Scales the sizes of a run's streams down, in proportion, so that they add up to at most `budget` bytes: a run
 * keeps its shape (which streams are big) at a cost CI can afford. One stream alone can still be 2 MiB each way.
 */
const withinBudget = (plans: ReadonlyArray<StreamPlan>, budget: number): ReadonlyArray<StreamPlan> => {
  const total = plans.reduce((n, p) => n + p.up + p.down, 0)
  if (total <= budget) return plans
  const scale = budget / total
  return plans.map((p) => ({ ...p, up: Math.floor(p.up * scale), down: Math.floor(p.down * scale) }))
}

/** Reads `d` (at `pace`) until EOF, a failure, or `limit` bytes: what came, and whether it ended cleanly. */
const consume = (d: Duplex.Duplex, pace: Pacing | undefined, limit = Infinity) =>
  Effect.gen(function* () {
    const chunks: Array<Uint8Array> = []
    let got = 0
    const source = pace === undefined ? d.readable : d.readable.pipe(paced(pace))
    const exit = yield* Effect.exit(
      Stream.runForEachWhile(source, (chunk) =>
        Effect.sync(() => {
          chunks.push(chunk)
          got += chunk.length
          return got < limit
        })
      )
    )
    return { bytes: concatBytes(chunks), exit }
  })

const isPrefix = (got: Uint8Array, of: Uint8Array) =>
  got.length <= of.length && firstDifference(got, of.subarray(0, got.length)) === -1

/** Runs one stream's plan between its two ends; fails when a byte is wrong or a stream hangs. */
const runPlan = (plan: StreamPlan, client: Duplex.Duplex, server: Duplex.Duplex, index: number) =>
  Effect.gen(function* () {
    const up = randomBytes(plan.up, plan.seed)
    const down = randomBytes(plan.down, plan.seed + 1)
    // Writes in pieces of up to `maxChunk` bytes, but at most about 2048 of them: a 1-byte frame costs as much
    // as a 64 KiB one, and a run should not spend seconds on 2 MiB written a byte at a time.
    const send = (d: Duplex.Duplex, bytes: Uint8Array, seedOffset: number) =>
      Effect.forkChild(
        Effect.exit(
          Effect.andThen(
            d.writeAll(
              randomChunks(bytes, Math.max(plan.maxChunk, Math.ceil(bytes.length / 2048)), plan.seed + seedOffset)
            ),
            d.end
          )
        ),
        { startImmediately: true }
      )
    const upWriter = yield* send(client, up, 2)
    const downWriter = yield* send(server, down, 3)
    const what = `stream ${index} (${plan.opener}'s, ${plan.up} B up, ${plan.down} B down)`

    if (plan.reset === null) {
      // Every direction someone reads arrives byte-exact, and its writer completes.
      const directions = [
        { reader: server, pace: plan.serverReads, bytes: up, writer: upWriter, name: "up" },
        { reader: client, pace: plan.clientReads, bytes: down, writer: downWriter, name: "down" }
      ]
      yield* Effect.forEach(
        directions,
        ({ reader, pace, bytes, writer, name }) =>
          pace === "never"
            ? Effect.void
            : Effect.gen(function* () {
                const got = yield* consume(reader, pace)
                assert.isTrue(
                  Exit.isSuccess(got.exit),
                  `${what} ${name}: ${Exit.isFailure(got.exit) ? Cause.pretty(got.exit.cause) : ""}`
                )
                sameBytes(got.bytes, bytes, `${what} ${name}`)
                const written = yield* Fiber.join(writer)
                assert.isTrue(Exit.isSuccess(written), `${what} ${name} writer: ${String(written)}`)
              }),
        { concurrency: 2, discard: true }
      )
      return
    }

    // One end reads some, then aborts; whatever either end read is a prefix of what was sent, and every
    // writer and reader ends (fails or completes) instead of hanging.
    const { by, after } = plan.reset
    const [resetter, other, resetterGets, otherGets, resetterPace, otherPace] =
      by === "client"
        ? ([client, server, down, up, plan.clientReads, plan.serverReads] as const)
        : ([server, client, up, down, plan.serverReads, plan.clientReads] as const)
    const otherReader = yield* Effect.forkChild(
      otherPace === "never" ? Effect.succeed(undefined) : consume(other, otherPace),
      {
        startImmediately: true
      }
    )
    const partial = yield* consume(resetter, resetterPace === "never" ? undefined : resetterPace, after)
    yield* resetter.abort
    assert.isTrue(isPrefix(partial.bytes, resetterGets), `${what}: the resetter's bytes`)
    const seen = yield* Fiber.join(otherReader)
    if (seen !== undefined) assert.isTrue(isPrefix(seen.bytes, otherGets), `${what}: the other end's bytes`)
    yield* Fiber.join(upWriter)
    yield* Fiber.join(downWriter)
  })

describe(`Mux properties (seed ${seed})`, () => {
  const streamRuns = runsOr(25)
  it.live(
    `1..${PROPERTY_MAX_STREAMS} streams, 0..${PROPERTY_MAX_BYTES / MiB} MiB each way, random pacing, ` +
      `streams never read and streams reset mid-transfer: every read stream byte-exact, no deadlock, ` +
      `buffered bytes within streams × largest window ` +
      `(${streamRuns} runs)`,
    () =>
      Effect.promise(() =>
        fc.assert(
          fc.asyncProperty(
            fc
              .array(streamPlan, { minLength: 1, maxLength: PROPERTY_MAX_STREAMS, size: "max" })
              .map((plans) => withinBudget(plans, PROPERTY_BUDGET_BYTES)),
            fc.constantFrom(1024, 16 * KiB, Duplex.DEFAULT_CAPACITY_BYTES, MiB),
            (plans, capacity) =>
              Effect.runPromise(
                assertDeadlockFree(
                  (watch) =>
                    Effect.scoped(
                      Effect.gen(function* () {
                        const [a, b] = yield* Duplex.pair({ capacity })
                        watch(a, b)
                        const client = yield* Mux.client(a, { keepAliveInterval: 0 })
                        const server = yield* Mux.server(b, { keepAliveInterval: 0 })
                        const clientEnds: Array<Duplex.Duplex> = []
                        const serverEnds: Array<Duplex.Duplex> = []
                        // Each side opens its streams in order, so the other accepts them in that order.
                        for (const [i, p] of plans.entries()) {
                          if (p.opener === "client") clientEnds[i] = yield* client.open
                          else serverEnds[i] = yield* server.open
                        }
                        for (const [i, p] of plans.entries()) {
                          if (p.opener === "client") serverEnds[i] = yield* server.accept
                          else clientEnds[i] = yield* client.accept
                        }
                        watch(...clientEnds, ...serverEnds)
                        yield* Effect.forEach(plans, (p, i) => runPlan(p, clientEnds[i]!, serverEnds[i]!, i), {
                          concurrency: "unbounded",
                          discard: true
                        })
                        // Memory: no stream above its largest window, no session above streams × that.
                        for (const d of [...clientEnds, ...serverEnds]) {
                          assert.isAtMost((yield* d.stats).inbound.peakBuffered, MAX_WINDOW, `${d.label} buffered`)
                        }
                        for (const session of [client, server]) {
                          const stats = yield* session.stats
                          assert.isAtMost(
                            stats.peakBufferedBytes,
                            plans.length * MAX_WINDOW,
                            `${session.label}: ${JSON.stringify(stats)}`
                          )
                        }
                        // No credit lost: once every stream is gone, nothing is counted as buffered.
                        yield* Effect.forEach([...clientEnds, ...serverEnds], (d) => d.abort, { discard: true })
                        for (const session of [client, server]) {
                          const stats = yield* session.stats
                          assert.strictEqual(stats.bufferedBytes, 0, `${session.label}: ${JSON.stringify(stats)}`)
                          assert.strictEqual(stats.streams, 0, `${session.label}: ${JSON.stringify(stats)}`)
                        }
                      })
                    ),
                  { label: "streams property", stallTimeout: "5 seconds", timeout: "60 seconds" }
                )
              )
          ),
          // A failing run may take a stall timeout each while it shrinks: stop shrinking after two minutes.
          { seed, numRuns: streamRuns, interruptAfterTimeLimit: 120_000, markInterruptAsFailure: true }
        )
      ),
    180_000
  )
})

// ---- fuzz --------------------------------------------------------------------------------------------

/** Streams a fuzzed session admits at once: what bounds its memory (× the window). */
const FUZZ_MAX_STREAMS = 4

/** A valid stream of the raw peer (client role, odd ids): its Data frame sizes, how it opens, how it ends. */
interface FuzzStream {
  readonly frames: ReadonlyArray<number>
  readonly synOnData: boolean
  /** FIN on a frame of its own, FIN on the last Data frame, RST, or nothing (left open). */
  readonly ending: "fin" | "finOnData" | "rst" | "none"
  readonly updates: ReadonlyArray<number>
}

/** A valid conversation: streams within their credit, pings, window updates, interleaved; maybe GoAway(0) last. */
interface FuzzConversation {
  readonly streams: ReadonlyArray<FuzzStream>
  readonly pings: ReadonlyArray<number>
  readonly interleave: number
  readonly goAway: boolean
}

const fuzzStream: fc.Arbitrary<FuzzStream> = fc.record({
  frames: fc.array(
    fc.oneof(
      fc.integer({ min: 0, max: 64 }),
      fc.integer({ min: 0, max: 16 * KiB }),
      fc.integer({ min: 0, max: WINDOW })
    ),
    { maxLength: 6 }
  ),
  synOnData: fc.boolean(),
  ending: fc.constantFrom("fin" as const, "finOnData" as const, "rst" as const, "none" as const),
  updates: fc.array(fc.integer({ min: 0, max: 0xffffffff }), { maxLength: 2 })
})

const conversation: fc.Arbitrary<FuzzConversation> = fc.record({
  streams: fc.array(fuzzStream, { maxLength: FUZZ_MAX_STREAMS }),
  pings: fc.array(fc.integer({ min: 0, max: 0xffffffff }), { maxLength: 4 }),
  interleave: fc.integer(),
  goAway: fc.boolean()
})

/** The frames of a conversation, one list per stream (and one per ping), each kept within the window. */
const conversationFrames = (c: FuzzConversation): { frames: Array<Uint8Array>; sent: Map<number, Uint8Array> } => {
  const lists: Array<Array<Uint8Array>> = []
  const sent = new Map<number, Uint8Array>()
  c.streams.forEach((s, i) => {
    const id = 2 * i + 1
    const list: Array<Uint8Array> = []
    let budget = WINDOW
    const payloads = s.frames.map((size, k) => {
      const n = Math.min(size, budget)
      budget -= n
      return randomBytes(n, id * 100 + k)
    })
    sent.set(id, concatBytes(payloads))
    if (!s.synOnData || payloads.length === 0) list.push(frame(WINDOW_UPDATE, SYN, id))
    const finOnData = s.ending === "finOnData"
    payloads.forEach((p, k) => {
      const flags = (k === 0 && s.synOnData ? SYN : 0) | (finOnData && k === payloads.length - 1 ? FIN : 0)
      list.push(frame(DATA, flags, id, p))
    })
    if (finOnData && payloads.length === 0) list.push(frame(DATA, FIN, id))
    for (const u of s.updates) list.push(frame(WINDOW_UPDATE, 0, id, u))
    if (s.ending === "fin") list.push(frame(WINDOW_UPDATE, FIN, id))
    if (s.ending === "rst") list.push(frame(WINDOW_UPDATE, RST, id))
    lists.push(list)
  })
  for (const opaque of c.pings) lists.push([frame(PING, SYN, 0, opaque)])
  // Interleaved at random, each list in its own order.
  const next = prng(c.interleave)
  const frames: Array<Uint8Array> = []
  const heads = lists.map(() => 0)
  for (let left = lists.reduce((n, l) => n + l.length, 0); left > 0; left--) {
    const open = lists.map((_, i) => i).filter((i) => heads[i]! < lists[i]!.length)
    const pick = open[next() % open.length]!
    frames.push(lists[pick]![heads[pick]!++]!)
  }
  if (c.goAway) frames.push(frame(GO_AWAY, 0, 0, 0))
  return { frames, sent }
}

const mutation = mutationOf(WINDOW)

/** What a session did with fuzzed input: how it ended, what it wrote, what its streams got. */
interface FuzzOutcome {
  readonly closed: Exit.Exit<void, DuplexError.DuplexError>
  readonly stats: Mux.Stats
  readonly log: FrameLog
  readonly received: Map<number, Uint8Array>
}

/** What the fuzzed session's acceptor has seen so far. */
interface Accepted {
  /** Streams handed out by `accept`, by id. */
  readonly accepted: Set<number>
  /** The bytes each stream gave before its end, by id. */
  readonly received: Map<number, Uint8Array>
  /** Streams read to their end and ended in turn. */
  readonly finished: Set<number>
}

/**
 * Feeds `bytes` (cut into `cuts`-sized writes) to a server session, waits for `beforeEnd` if given, then ends
 * the connection. An acceptor reads every stream it is given to the end and ends its own side. Fails if the
 * session does not end within a bound after the input's end (a hang), or dies (a crash).
 */
const feed = (
  bytes: Uint8Array,
  cuts: ReadonlyArray<number>,
  beforeEnd?: (log: FrameLog, accepted: Accepted) => Effect.Effect<void, Error>
) =>
  Effect.scoped(
    Effect.gen(function* () {
      const { session, raw, log } = yield* rawPeer({ role: "server", maxConcurrentStreams: FUZZ_MAX_STREAMS })
      const received = new Map<number, Uint8Array>()
      const finished = new Set<number>()
      const accepted = new Set<number>()
      let acceptEnded = false
      yield* Effect.forkScoped(
        Effect.forever(
          Effect.flatMap(session.accept, (stream) => {
            const id = Number(stream.label.split(" ").at(-1))
            accepted.add(id)
            return Effect.forkScoped(
              Effect.gen(function* () {
                const got = yield* readUntilEnd(stream)
                received.set(id, got.bytes)
                yield* Effect.ignore(stream.end)
                finished.add(id)
              })
            )
          })
        ).pipe(Effect.ensuring(Effect.sync(() => (acceptEnded = true)))),
        { startImmediately: true }
      )
      // Pieces of the drawn sizes, but no more than about 512 of them. Once the session has ended (a protocol
      // error), the rest of the input is not taken: feeding stops (whether the connection was closed is the
      // business of "after a protocol error the connection is closed, not left half-open").
      const ended = yield* Effect.forkChild(Effect.exit(session.closed), { startImmediately: true })
      const least = Math.ceil(bytes.length / 512)
      let at = 0
      for (let i = 0; at < bytes.length; i++) {
        const n = cuts.length === 0 ? bytes.length : Math.max(least, cuts[i % cuts.length]!)
        const wrote = yield* Effect.raceFirst(
          Effect.map(Effect.exit(raw.write(bytes.subarray(at, at + n))), Exit.isSuccess),
          Effect.as(Fiber.await(ended), false)
        )
        if (!wrote) break
        at += n
      }
      if (beforeEnd !== undefined) yield* beforeEnd(log, { accepted, received, finished })
      yield* Effect.ignore(raw.end)
      const closed = yield* Fiber.join(ended).pipe(within("5 seconds", "the session's end after its input ended"))
      assert.isFalse(Cause.hasDies(Exit.isFailure(closed) ? closed.cause : Cause.empty), "the session died")
      // Every stream accepted is read to its end (its bytes, then EOF or the failure).
      yield* until("every accepted stream read to its end", () => acceptEnded && received.size === accepted.size)
      yield* settle
      const outcome: FuzzOutcome = { closed, stats: yield* session.stats, log, received }
      return outcome
    })
  )

/** What holds whatever the input: a typed end, well-formed output, memory within the limits. */
const checkBounded = (o: FuzzOutcome, what: string) => {
  if (Exit.isFailure(o.closed)) {
    const error = duplexErrorOf(o.closed, what)
    assert.include(["ProtocolError", "Broken"], error.reason._tag, `${what}: ${error.message}`)
    if (error.reason._tag === "ProtocolError") {
      assert.deepStrictEqual(
        o.log.of(GO_AWAY).map((f) => f.length),
        [PROTOCOL_ERROR],
        `${what}: a ProtocolError is told with one GoAway: ${o.log.describe()}`
      )
    }
  }
  for (const f of o.log.frames) {
    assert.strictEqual(f.version, 0, `${what}: ${describeFrame(f)}`)
    assert.isAtMost(f.type, GO_AWAY, `${what}: ${describeFrame(f)}`)
  }
  assert.strictEqual(o.log.partial, 0, `${what}: the session wrote a cut frame`)
  assert.isAtMost(o.stats.peakBufferedBytes, FUZZ_MAX_STREAMS * MAX_WINDOW, `${what}: ${JSON.stringify(o.stats)}`)
  assert.isAtMost(o.stats.controlQueued, 4096, `${what}: ${JSON.stringify(o.stats)}`)
}

/** A failing fuzz run can take a bound's timeout each while it shrinks: stop after a minute, as a failure. */
const SHRINK_LIMIT = { interruptAfterTimeLimit: 60_000, markInterruptAsFailure: true } as const

const cutsArb = fc.array(fc.integer({ min: 1, max: 4096 }), { maxLength: 8 })

describe(`Mux fuzz (seed ${seed})`, () => {
  it.live(
    "valid conversations end cleanly (or Broken at an early EOF), every stream byte-exact, " +
      `every SYN and ping answered (${runsOr(100)} runs)`,
    () =>
      Effect.promise(() =>
        fc.assert(
          fc.asyncProperty(conversation, cutsArb, (c, cuts) =>
            Effect.runPromise(
              Effect.gen(function* () {
                const { frames, sent } = conversationFrames(c)
                // The connection is ended once every answer is in, every stream not reset has been accepted,
                // and every finished one read to its end and ended in turn: a session drops what it had still
                // to write, and the streams still waiting for `accept`, when its input ends.
                const ending = c.streams.map((st, i) => ({ id: 2 * i + 1, ending: st.ending }))
                const o = yield* feed(concatBytes(frames), cuts, (log, accepted) =>
                  until(
                    "the answers",
                    () =>
                      log.of(PING).length === c.pings.length &&
                      log.of(WINDOW_UPDATE).filter((f) => (f.flags & ACK) !== 0).length === c.streams.length &&
                      ending.every(
                        ({ id, ending }) =>
                          ending === "rst" ||
                          (ending === "none" ? accepted.accepted.has(id) : accepted.finished.has(id))
                      ),
                    () => log.describe()
                  )
                )
                checkBounded(o, "valid input")
                // It ends cleanly unless a stream was still open at the input's end (Broken).
                if (Exit.isFailure(o.closed) || ending.some((e) => e.ending === "none")) {
                  const reason = duplexErrorOf(o.closed).reason
                  assert.strictEqual(reason._tag, "Broken", `valid input: ${reason.message}`)
                }
                c.streams.forEach((s, i) => {
                  const id = 2 * i + 1
                  if (s.ending !== "rst")
                    sameBytes(o.received.get(id) ?? new Uint8Array(0), sent.get(id)!, `stream ${id}`)
                })
                const acks = o.log.of(WINDOW_UPDATE).filter((f) => (f.flags & ACK) !== 0)
                assert.strictEqual(acks.length, c.streams.length, `an ACK per stream: ${o.log.describe()}`)
                assert.sameMembers(
                  o.log.of(PING).map((f) => f.length),
                  [...c.pings],
                  `a ping ACK per ping: ${o.log.describe()}`
                )
              })
            )
          ),
          { seed, numRuns: runsOr(100), ...SHRINK_LIMIT }
        )
      ),
    120_000
  )

  it.live(
    "mutated conversations never crash, hang or over-allocate: they end in valid behaviour " +
      `or a typed ProtocolError (${runsOr(200)} runs)`,
    () =>
      Effect.promise(() =>
        fc.assert(
          fc.asyncProperty(
            conversation,
            fc.array(mutation, { minLength: 1, maxLength: 4 }),
            cutsArb,
            (c, mutations, cuts) =>
              Effect.runPromise(
                Effect.gen(function* () {
                  const bytes = mutate(conversationFrames(c).frames, mutations)
                  checkBounded(yield* feed(bytes, cuts), "mutated input")
                })
              )
          ),
          { seed, numRuns: runsOr(200), ...SHRINK_LIMIT }
        )
      ),
    120_000
  )

  it.live(
    `random bytes, and random headers with random payloads, never crash, hang or over-allocate (${runsOr(200)} runs)`,
    () =>
      Effect.promise(() =>
        fc.assert(
          fc.asyncProperty(
            fc.oneof(
              fc.uint8Array({ maxLength: 2048 }),
              fc
                .array(
                  fc.record({
                    type: fc.integer({ min: 0, max: 5 }),
                    flags: fc.integer({ min: 0, max: 15 }),
                    streamId: fc.integer({ min: 0, max: 9 }),
                    length: fc.oneof(fc.integer({ min: 0, max: 64 }), fc.integer({ min: 0, max: 0xffffffff })),
                    payload: fc.uint8Array({ maxLength: 64 })
                  }),
                  { maxLength: 24 }
                )
                .map((hs) =>
                  concatBytes(
                    hs.map((h) => concatBytes([encodeHeader(h.type, h.flags, h.streamId, h.length), h.payload]))
                  )
                )
            ),
            cutsArb,
            (bytes, cuts) =>
              Effect.runPromise(
                Effect.flatMap(feed(bytes, cuts), (o) => Effect.sync(() => checkBounded(o, "random input")))
              )
          ),
          { seed, numRuns: runsOr(200), ...SHRINK_LIMIT }
        )
      ),
    120_000
  )
})
