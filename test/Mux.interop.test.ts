/**
 * Interoperability of `Mux` with `@chainsafe/libp2p-yamux` 8 (the libp2p implementation of yamux), over a
 * TCP loopback connection, with libp2p-yamux running over a plain socket through `./libp2pConnection.ts`.
 *
 * Each pairing (our client with its server, its client with our server) carries 16 concurrent streams,
 * 4 MiB each way on each, compared byte for byte as they arrive; every stream is half-closed both ways,
 * and in both orders: on even streams the opener ends its writes first, on odd ones the acceptor, and the
 * other side writes its second half only after it has read the first one's EOF. Then each side's GoAway is
 * observed by the other. Pings are answered both ways, and a connection libp2p-yamux closes gracefully is
 * closed gracefully by us too.
 *
 * What libp2p-yamux 8 does that shapes these tests: it takes a GoAway(0) for "the transport closed", so
 * every stream of its ends at once (a GoAway is sent here only once the streams are done), and its muxer
 * is closed by the first GoAway either way, so that each side's GoAway is observed on a connection of its
 * own; and it forgets its ping in flight on a GoAway (see {@link libp2pPingsAnswered}).
 */
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Duration, Effect, Exit, Fiber, Queue, type Scope, Stream } from "effect"
import { type Duplex, Mux, Tcp } from "fullduplex"
import { firstDifference, randomBytes, randomChunks } from "fullduplex/testkit"
import * as net from "node:net"
import { activeHandles, assertNoLeakedHandles, duplexErrorOf, eventually, within } from "./helpers.js"
import {
  type FrameHeader,
  type Libp2pYamux,
  startLibp2pYamux,
  type YamuxOptions,
  type YamuxStream
} from "./libp2pConnection.js"

const KiB = 1024
const MiB = 1024 * KiB
const STREAMS = 16
const PAYLOAD_BYTES = 4 * MiB
/** The largest piece handed to a stream's write at once (pieces are of random sizes up to it). */
const MAX_WRITE_BYTES = 96 * KiB
/** Frame flags (yamux spec, "Flag Field"). */
const FLAG_SYN = 1
const FLAG_ACK = 2
const FLAG_RST = 8

// ---- the conversation each stream carries ------------------------------------------------------------

type Party = "opener" | "acceptor"
const otherParty = (party: Party): Party => (party === "opener" ? "acceptor" : "opener")

const payloads = new Map<string, Uint8Array>()
/** What `party` sends on stream `tag` (the streams' order of opening): 4 MiB, different for each stream and party. */
const payloadOf = (tag: number, party: Party): Uint8Array => {
  const key = `${tag} ${party}`
  let bytes = payloads.get(key)
  if (bytes === undefined)
    payloads.set(key, (bytes = randomBytes(PAYLOAD_BYTES, 1000 + 2 * tag + Number(party === "opener"))))
  return bytes
}

/** On even streams the opener ends its writes first, on odd ones the acceptor. */
const endsFirst = (tag: number, party: Party): boolean => (tag % 2 === 0) === (party === "opener")

/** What arrived on one stream, compared with what should have as it arrives (nothing is kept). */
class Arrival {
  bytes = 0
  /** Where the first wrong byte was (or the first byte beyond the expected end); -1 if none. */
  firstWrong = -1
  /** Whether the read ended at the peer's FIN. */
  eof = false

  constructor(
    readonly tag: number,
    readonly reader: string,
    readonly expected: Uint8Array
  ) {}

  take(chunk: Uint8Array): void {
    if (this.firstWrong === -1) {
      const want = this.expected.subarray(this.bytes, this.bytes + chunk.length)
      if (!Buffer.from(want.buffer, want.byteOffset, want.length).equals(chunk)) {
        this.firstWrong = this.bytes + firstDifference(want, chunk)
      }
    }
    this.bytes += chunk.length
  }

  /** What went wrong, or `undefined` if it all came, exactly, and then EOF. */
  get problem(): string | undefined {
    if (this.firstWrong === -1 && this.bytes === this.expected.length && this.eof) return undefined
    return (
      `stream ${this.tag}, read by ${this.reader}: ${this.bytes} of ${this.expected.length} bytes` +
      (this.firstWrong === -1 ? "" : `, first wrong byte at ${this.firstWrong}`) +
      (this.eof ? ", then EOF" : ", no EOF")
    )
  }
}

/** Fails listing every stream whose bytes were not exactly the expected ones, followed by EOF. */
const assertExact = (arrivals: ReadonlyArray<Arrival>) => {
  assert.strictEqual(arrivals.length, 2 * STREAMS, "an arrival per stream and direction")
  assert.deepStrictEqual(
    arrivals.map((a) => a.problem).filter((p) => p !== undefined),
    [],
    "every stream: 4 MiB each way, byte-exact, then EOF"
  )
}

/** What `me` should receive on stream `tag`, and who reads it. */
const arrivalFor = (tag: number, me: Party, reader: "fullduplex" | "libp2p-yamux") =>
  new Arrival(tag, `${reader} (${me})`, payloadOf(tag, otherParty(me)))

/** Our side of stream `tag`: reads to EOF into `arrival` while it writes its payload, then ends ({@link endsFirst}). */
const converse = (stream: Duplex.Duplex, tag: number, me: Party, arrival: Arrival) =>
  Effect.gen(function* () {
    const reading = yield* Effect.forkChild(
      Stream.runForEach(stream.readable, (chunk) => Effect.sync(() => arrival.take(chunk))).pipe(
        Effect.andThen(Effect.sync(() => (arrival.eof = true)))
      ),
      { startImmediately: true }
    )
    const out = payloadOf(tag, me)
    const half = out.length / 2
    if (endsFirst(tag, me)) {
      yield* stream.writeAll(randomChunks(out, MAX_WRITE_BYTES, tag))
    } else {
      yield* stream.writeAll(randomChunks(out.subarray(0, half), MAX_WRITE_BYTES, tag))
      yield* Fiber.join(reading) // the peer's EOF, before our second half
      yield* stream.writeAll(randomChunks(out.subarray(half), MAX_WRITE_BYTES, tag))
    }
    yield* stream.end
    yield* Fiber.join(reading)
  })

/** Writes `bytes` to a libp2p stream in pieces, waiting for `'drain'` whenever it asks to. */
const libp2pSend = async (stream: YamuxStream, bytes: Uint8Array, seed: number): Promise<void> => {
  for (const piece of randomChunks(bytes, MAX_WRITE_BYTES, seed)) {
    if (!stream.send(piece)) await stream.onDrain()
  }
}

/** Reads a libp2p stream to its EOF into `arrival`. */
const libp2pRead = async (stream: YamuxStream, arrival: Arrival): Promise<void> => {
  for await (const chunk of stream)
    for (const piece of chunk instanceof Uint8Array ? [chunk] : chunk) arrival.take(piece)
  arrival.eof = true
}

/** libp2p's side of stream `tag`, the same conversation as {@link converse}. */
const libp2pConverse = async (stream: YamuxStream, tag: number, me: Party, arrival: Arrival): Promise<void> => {
  const reading = libp2pRead(stream, arrival)
  const writing = (async () => {
    const out = payloadOf(tag, me)
    const half = out.length / 2
    if (endsFirst(tag, me)) {
      await libp2pSend(stream, out, tag)
    } else {
      await libp2pSend(stream, out.subarray(0, half), tag)
      await reading // the peer's EOF, before our second half
      await libp2pSend(stream, out.subarray(half), tag)
    }
    await stream.close() // FIN, once every byte is out
  })()
  await Promise.all([reading, writing])
}

/** A promise of libp2p-yamux's, failing with an `Error` that says what was being done. */
const libp2pCall = <A>(what: string, run: () => Promise<A>): Effect.Effect<A, Error> =>
  Effect.tryPromise({ try: run, catch: (cause) => new Error(`libp2p-yamux, ${what}: ${String(cause)}`) })

// ---- the two ends of a connection ----------------------------------------------------------------------

/** Our session and libp2p's muxer on one TCP loopback connection. */
interface Ends {
  readonly session: Mux.Session
  readonly libp2p: Libp2pYamux
  /** The next stream opened to libp2p-yamux, in the order they arrived. */
  readonly libp2pAccepted: Effect.Effect<YamuxStream, Error>
}

interface EndsOptions {
  readonly mux?: Omit<Mux.SessionOptions, "role"> | undefined
  readonly libp2p?: YamuxOptions | undefined
}

/** libp2p-yamux over `socket`, its incoming streams queued; the socket is destroyed when the scope closes. */
const libp2pOver = (socket: net.Socket, role: "client" | "server", options: YamuxOptions = {}) =>
  Effect.gen(function* () {
    yield* Effect.addFinalizer(() => Effect.sync(() => socket.destroy()))
    const libp2p = startLibp2pYamux(socket, role, options)
    const incoming = yield* Queue.unbounded<YamuxStream>()
    libp2p.muxer.addEventListener("stream", (event) => void Queue.offerUnsafe(incoming, event.detail))
    const libp2pAccepted = Queue.take(incoming).pipe(within("10 seconds", "a stream opened to libp2p-yamux"))
    return { libp2p, libp2pAccepted }
  })

/** `Mux.client` over `Tcp.connect`, to a libp2p-yamux server on a raw `net` server. */
const ourClient = (options: EndsOptions = {}) =>
  Effect.gen(function* () {
    const server = net.createServer()
    yield* Effect.addFinalizer(() => Effect.sync(() => server.close()))
    const accepted = yield* Deferred.make<net.Socket>()
    server.once("connection", (socket) => {
      socket.on("error", () => {})
      Deferred.doneUnsafe(accepted, Exit.succeed(socket))
    })
    const port = yield* Effect.callback<number>((resume) => {
      server.listen(0, "127.0.0.1", () => resume(Effect.succeed((server.address() as net.AddressInfo).port)))
    })
    const conn = yield* Tcp.connect({ host: "127.0.0.1", port, label: "fullduplex client" })
    const socket = yield* Deferred.await(accepted).pipe(within("5 seconds", "libp2p's server socket"))
    const { libp2p, libp2pAccepted } = yield* libp2pOver(socket, "server", options.libp2p)
    const session = yield* Mux.client(conn, options.mux)
    return { session, libp2p, libp2pAccepted } satisfies Ends
  })

/** A libp2p-yamux client on a raw `net` socket, to `Mux.server` over `Tcp.serve`. */
const ourServer = (options: EndsOptions = {}) =>
  Effect.gen(function* () {
    const accepted = yield* Deferred.make<Duplex.Duplex>()
    const server = yield* Tcp.serve(
      { host: "127.0.0.1", port: 0, shutdownGrace: 0, label: "fullduplex server" },
      (conn) => Deferred.succeed(accepted, conn).pipe(Effect.andThen(Effect.never))
    )
    const port = "port" in server.address ? server.address.port : 0
    const socket = net.connect({ host: "127.0.0.1", port })
    socket.on("error", () => {})
    const { libp2p, libp2pAccepted } = yield* libp2pOver(socket, "client", options.libp2p)
    yield* Effect.callback<void>((resume) => void socket.once("connect", () => resume(Effect.void))).pipe(
      within("5 seconds", "libp2p's client socket to connect")
    )
    const conn = yield* Deferred.await(accepted).pipe(within("5 seconds", "the server's side of the connection"))
    const session = yield* Mux.server(conn, options.mux)
    return { session, libp2p, libp2pAccepted } satisfies Ends
  })

// ---- what each test does -------------------------------------------------------------------------------

/**
 * `opener` opens 16 streams one after the other (so the acceptor receives them in the same order, and both
 * number them alike), then every conversation runs at once. Checks the bytes, that every stream is
 * forgotten on both sides, and that none was reset.
 */
const sixteenStreams = (ends: Ends, opener: "fullduplex" | "libp2p") =>
  Effect.gen(function* () {
    const tags = Array.from({ length: STREAMS }, (_, tag) => tag)
    const accepted = (what: string) => within("10 seconds", `${what} (opened ${STREAMS})`)
    const [ours, theirs] =
      opener === "fullduplex"
        ? yield* Effect.zip(
            Effect.forEach(tags, () => ends.session.open),
            Effect.forEach(tags, () => ends.libp2pAccepted).pipe(accepted("libp2p's accepts"))
          )
        : yield* Effect.zip(
            Effect.forEach(tags, () => libp2pCall("createStream", () => ends.libp2p.muxer.createStream())),
            Effect.forEach(tags, () => ends.session.accept).pipe(accepted("our accepts"))
          ).pipe(Effect.map(([theirs, ours]) => [ours, theirs] as const))
    const ourParty: Party = opener === "fullduplex" ? "opener" : "acceptor"
    const libp2pParty = otherParty(ourParty)
    const arrivals = tags.map((tag) => arrivalFor(tag, ourParty, "fullduplex"))
    const libp2pArrivals = tags.map((tag) => arrivalFor(tag, libp2pParty, "libp2p-yamux"))
    const unfinished = () => [...arrivals, ...libp2pArrivals].flatMap((a) => a.problem ?? []).join("; ")
    yield* Effect.all(
      [
        Effect.forEach(ours, (stream, tag) => converse(stream, tag, ourParty, arrivals[tag]!), {
          discard: true,
          concurrency: "unbounded"
        }),
        Effect.forEach(
          theirs,
          (stream, tag) =>
            libp2pCall(`stream ${tag}`, () => libp2pConverse(stream, tag, libp2pParty, libp2pArrivals[tag]!)),
          { discard: true, concurrency: "unbounded" }
        )
      ],
      { concurrency: 2 }
    ).pipe(
      Effect.timeoutOrElse({
        duration: "30 seconds",
        orElse: () => Effect.fail(new Error(`16 streams × 4 MiB each way, still waiting after 30 s: ${unfinished()}`))
      })
    )
    assertExact([...arrivals, ...libp2pArrivals])
    // Closed both ways on each side: forgotten by both, none reset.
    yield* eventually(
      "libp2p-yamux to forget its streams",
      Effect.sync(() => ends.libp2p.muxer.streams.length),
      (n) => n === 0
    )
    yield* eventually("our session to forget its streams", ends.session.stats, (s) => s.streams === 0)
    const resets = [...ends.libp2p.connection.framesIn, ...ends.libp2p.connection.framesOut].filter(
      (h) => (h.flags & FLAG_RST) !== 0
    )
    assert.deepStrictEqual(resets, [], "no stream was reset")
  })

/**
 * Waits until libp2p-yamux has sent its first keepalive ping (it leaves just after its muxer starts) and
 * every ping it sent has been answered. On a GoAway, its own or ours, it stops its keepalive and forgets
 * the ping in flight: an answer arriving after that is "a ping not requested" to it, a protocol error for
 * which it aborts the connection. (Its next keepalive ping is 30 s away.)
 */
const libp2pPingsAnswered = (ends: Ends) =>
  eventually(
    "libp2p-yamux's pings to be answered",
    Effect.sync(() => pingsAnswered(ends.libp2p.connection.framesOut, ends.libp2p.connection.framesIn)),
    (p) => p.sent >= 1 && p.answered === p.sent
  )

/**
 * Our GoAway, observed by libp2p-yamux: it takes a GoAway(0) for the end of the transport, so its muxer
 * closes though the socket is still open, and it opens no more streams. Then our `close` ends the
 * connection, and both ends see a clean close.
 */
const ourGoAwayObserved = (ends: Ends) =>
  Effect.gen(function* () {
    const { muxer, connection } = ends.libp2p
    assert.strictEqual(muxer.status, "open")
    yield* libp2pPingsAnswered(ends)
    yield* ends.session.goAway
    yield* eventually(
      "libp2p-yamux's muxer to close on our GoAway",
      Effect.sync(() => muxer.status),
      (s) => s === "closed"
    )
    assert.isFalse(connection.socket.readableEnded, "the connection was still open: the GoAway alone closed the muxer")
    assert.deepInclude(connection.framesIn, { type: "GoAway", flags: 0, streamId: 0, length: 0 })
    const refused = yield* Effect.promise(() =>
      muxer.createStream().then(
        () => "opened",
        (e: Error) => e.name
      )
    )
    assert.strictEqual(refused, "MuxerClosedError")
    assert.strictEqual((yield* ends.session.stats).goAwaySent, 0)
    yield* closeCleanly(ends)
  })

/**
 * libp2p-yamux's GoAway (its `close()`), observed by our session: a new stream is refused with why
 * `"goAway"`. Then our `close` ends the connection, and both ends see a clean close.
 */
const libp2pGoAwayObserved = (ends: Ends) =>
  Effect.gen(function* () {
    yield* libp2pPingsAnswered(ends)
    yield* libp2pCall("close", () => ends.libp2p.muxer.close())
    assert.deepInclude(ends.libp2p.connection.framesOut, { type: "GoAway", flags: 0, streamId: 0, length: 0 })
    yield* eventually("our session to see libp2p's GoAway", ends.session.stats, (s) => s.goAwayReceived !== undefined)
    assert.strictEqual((yield* ends.session.stats).goAwayReceived, 0)
    yield* assertOpenRefused(ends.session, "goAway")
    yield* closeCleanly(ends)
  })

/**
 * libp2p's GoAway while `stream` is open: libp2p half-closes its side of the stream, then sends GoAway(0).
 * Our session refuses new streams (`"goAway"`), and `stream` goes on: it reads libp2p's EOF and writes `rest`.
 */
const libp2pGoAwayObservedWithOpenStream = (ends: Ends, stream: Duplex.Duplex, rest: Uint8Array) =>
  Effect.gen(function* () {
    yield* libp2pPingsAnswered(ends)
    yield* libp2pCall("close", () => ends.libp2p.muxer.close())
    yield* eventually("our session to see libp2p's GoAway", ends.session.stats, (s) => s.goAwayReceived !== undefined)
    assert.strictEqual((yield* ends.session.stats).goAwayReceived, 0)
    yield* assertOpenRefused(ends.session, "goAway")
    const fromLibp2p = yield* Stream.runCollect(stream.readable).pipe(within("5 seconds", "libp2p's EOF on the stream"))
    assert.deepStrictEqual(fromLibp2p, [])
    yield* stream.writeAll(randomChunks(rest, MAX_WRITE_BYTES, 3))
    yield* stream.end
  })

const assertOpenRefused = (session: Mux.Session, why: string) =>
  Effect.gen(function* () {
    const exit = yield* Effect.exit(Effect.scoped(session.open))
    const error = duplexErrorOf(exit, "open after a GoAway")
    assert.strictEqual(error.reason._tag, "StreamRefused", error.message)
    assert.strictEqual(error.reason._tag === "StreamRefused" ? error.reason.why : undefined, why)
  })

/** Our `close` (GoAway if not yet sent, then FIN): the connection closes both ways, with no error on either end. */
const closeCleanly = (ends: Ends) =>
  Effect.gen(function* () {
    yield* ends.session.close.pipe(within("5 seconds", "our session's close"))
    const socket = ends.libp2p.connection.socket
    yield* eventually(
      "libp2p's socket to close",
      Effect.sync(() => socket.closed),
      (closed) => closed,
      5000
    )
    assert.strictEqual(ends.libp2p.connection.error, undefined, "libp2p's socket closed without an error")
    const ended = yield* Effect.exit(ends.session.closed.pipe(within("5 seconds", "our session to end")))
    assert.isTrue(Exit.isSuccess(ended), `our session ended cleanly: ${String(ended)}`)
  })

/** How many pings were sent one way (SYN), and answered the other (ACK with the same opaque value, once). */
const pingsAnswered = (requests: ReadonlyArray<FrameHeader>, replies: ReadonlyArray<FrameHeader>) => {
  const sent = requests.filter((h) => h.type === "Ping" && h.flags === FLAG_SYN)
  const acks = replies.filter((h) => h.type === "Ping" && h.flags === FLAG_ACK)
  const answered = sent.filter((syn) => acks.filter((ack) => ack.length === syn.length).length === 1).length
  return { sent: sent.length, answered, acks: acks.length }
}

/** Runs `test` in a scope of its own, then checks that it left no socket, server or timer behind. */
const withoutLeaks = <A, E>(test: Effect.Effect<A, E, Scope.Scope>) =>
  Effect.gen(function* () {
    const before = activeHandles()
    yield* Effect.scoped(test)
    yield* assertNoLeakedHandles(before, 5000)
  })

// ---- the tests ---------------------------------------------------------------------------------------

describe("Mux with @chainsafe/libp2p-yamux over TCP", () => {
  it.live(
    "our client with its server: 16 streams × 4 MiB each way, byte-exact, half-closed both ways; each side's GoAway",
    () =>
      withoutLeaks(
        Effect.gen(function* () {
          const ends = yield* ourClient()
          yield* sixteenStreams(ends, "fullduplex")
          yield* ourGoAwayObserved(ends)
          // libp2p-yamux's muxer is closed by our GoAway and sends none of its own: its GoAway is seen on a
          // second connection, with one of our streams open, which goes on after it.
          const again = yield* ourClient()
          const stream = yield* again.session.open
          const theirs = yield* again.libp2pAccepted
          const arrival = new Arrival(0, "libp2p-yamux", randomBytes(MiB + 7, 77))
          const reading = yield* Effect.forkChild(
            libp2pCall("read", () => libp2pRead(theirs, arrival)),
            { startImmediately: true }
          )
          yield* stream.write(arrival.expected.subarray(0, 64 * KiB))
          yield* libp2pGoAwayObservedWithOpenStream(again, stream, arrival.expected.subarray(64 * KiB))
          yield* Fiber.join(reading).pipe(within("10 seconds", "libp2p to read our stream to its EOF"))
          assert.deepStrictEqual([arrival.problem], [undefined], "the stream went on after libp2p's GoAway")
          yield* closeCleanly(again)
        })
      ),
    120_000
  )

  it.live(
    "its client with our server: 16 streams × 4 MiB each way, byte-exact, half-closed both ways; each side's GoAway",
    () =>
      withoutLeaks(
        Effect.gen(function* () {
          const ends = yield* ourServer()
          yield* sixteenStreams(ends, "libp2p")
          yield* libp2pGoAwayObserved(ends)
          // Our GoAway closes libp2p's muxer, which then sends none: ours is seen on a second connection.
          const again = yield* ourServer()
          yield* ourGoAwayObserved(again)
        })
      ),
    120_000
  )

  for (const ours of ["client", "server"] as const) {
    it.live(`our pings are answered by libp2p-yamux, and its keepalive pings by us (ours the ${ours})`, () =>
      withoutLeaks(
        Effect.gen(function* () {
          const options: EndsOptions = {
            mux: { keepAliveInterval: Duration.millis(20), keepAliveTimeout: Duration.seconds(5) },
            libp2p: { keepAliveInterval: 20 }
          }
          const ends = yield* ours === "client" ? ourClient(options) : ourServer(options)
          const { muxer, connection } = ends.libp2p
          const rtt = yield* ends.session.ping.pipe(within("5 seconds", "our ping's answer"))
          assert.isAtLeast(rtt, 0)
          // Each side sends its next keepalive ping only once the last one was answered (or, ours, timed out).
          const pings = Effect.sync(() => ({
            ours: pingsAnswered(connection.framesIn, connection.framesOut),
            theirs: pingsAnswered(connection.framesOut, connection.framesIn)
          }))
          const seen = yield* eventually(
            "5 keepalive pings each way",
            pings,
            (p) => p.ours.sent >= 5 && p.theirs.sent >= 5
          )
          for (const [side, p] of Object.entries(seen)) {
            assert.isAtLeast(
              p.answered,
              p.sent - 1,
              `${side}: every ping but the last one answered, with its opaque value`
            )
            assert.strictEqual(p.acks, p.answered, `${side}: no answer to a ping never sent`)
          }
          assert.isAtLeast(muxer.getRTT(), 0, "libp2p measured a round trip")
          assert.strictEqual(muxer.status, "open")
          assert.strictEqual(connection.error, undefined)
          // No graceful close here: with a ping of libp2p's always in flight, a GoAway either way would race
          // with it (see libp2pPingsAnswered). The scope's close resets the connection.
        })
      )
    )
  }

  for (const ours of ["client", "server"] as const) {
    it.live(
      `when libp2p-yamux goes away and ends the connection, our ${ours} ends cleanly, with a FIN, not a reset`,
      () =>
        withoutLeaks(
          Effect.gen(function* () {
            const ends = yield* ours === "client" ? ourClient() : ourServer()
            yield* libp2pPingsAnswered(ends)
            // libp2p's own order: its muxer's close (GoAway), then its connection's (FIN; its socket then waits
            // for ours).
            yield* libp2pCall("close", () => ends.libp2p.muxer.close())
            yield* libp2pCall("end the connection", () => ends.libp2p.connection.close()).pipe(
              within("5 seconds", "libp2p's socket to close")
            )
            const ended = yield* Effect.exit(ends.session.closed.pipe(within("5 seconds", "our session to end")))
            assert.isTrue(Exit.isSuccess(ended), `our session ended cleanly: ${String(ended)}`)
            assert.strictEqual((yield* ends.session.stats).goAwayReceived, 0)
            assert.strictEqual(
              ends.libp2p.connection.error?.message,
              undefined,
              "libp2p's socket closed without an error: our side answered its FIN with a FIN"
            )
          })
        )
    )
  }
})
