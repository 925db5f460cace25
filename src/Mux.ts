/**
 * A flow-controlled stream multiplexer over any {@link Duplex.Duplex}, wire-compatible with yamux.
 *
 * Multiplexers with per-stream credit deadlock when a peer stops reading frames because one stream's
 * consumer is slow: the window update that would unblock everything is never read. `Mux` reads and
 * dispatches every frame at once, into per-stream buffers bounded by the window each stream advertised,
 * and returns credit only as the application consumes. So a stream whose consumer never reads stops only
 * itself, and memory stays within streams × window (and `maxBufferedBytes`).
 *
 * The wire format is the yamux specification's (hashicorp/yamux `spec.md`): a 12-byte header (version 0;
 * types Data, WindowUpdate, Ping, GoAway; flags SYN, ACK, FIN, RST), odd stream ids for the client and
 * even for the server, a 256 KiB initial window. It interoperates with other yamux implementations
 * (the tests run against `@chainsafe/libp2p-yamux`).
 *
 * @module fullduplex/Mux
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type * as Duplex from "./Duplex.js"
import type { DuplexError } from "./DuplexError.js"
import { invalidOptions } from "./internal/errors.js"

/**
 * The session's machinery (`internal/yamux/`: codec, credit, inbound, outbound, streams), loaded at the first
 * `make`: a program that imports the root module and starts no session does not load it. Once loaded, `make`
 * takes it without waiting.
 */
type SessionModule = typeof import("./internal/yamux/session.js")
let sessionModule: SessionModule | undefined
const loadSession: Effect.Effect<SessionModule> = Effect.suspend(() =>
  sessionModule !== undefined
    ? Effect.succeed(sessionModule)
    : Effect.promise(() => import("./internal/yamux/session.js")).pipe(
        Effect.tap((module) => Effect.sync(() => (sessionModule = module)))
      )
)

/**
 * "Each stream has an initial window size of 256KB" (yamux spec, "Flow Control"): the credit a peer has
 * on a new stream before any window update.
 *
 * **Example** (Windows of four initial windows from the first byte)
 *
 * ```ts
 * import { type Duplex, Mux } from "fullduplex"
 *
 * const session = (conn: Duplex.Duplex) => Mux.client(conn, { windowBytes: 4 * Mux.INITIAL_STREAM_WINDOW_BYTES })
 * ```
 *
 * @category constants
 * @since 0.1.0
 */
export const INITIAL_STREAM_WINDOW_BYTES: number = 256 * 1024

/**
 * How far a stream's receive window may grow by default: 4 MiB, sixteen initial windows. With credit
 * returned per half window, one stream over TCP loopback ran a median 1.13× faster with 4 MiB than with
 * 1 MiB, and 16 streams 1.15×; 16 MiB was no faster (5 interleaved rounds of 1 GiB, server and client in
 * processes of their own, the server's `--max-window` option of `benchmarks/endpoints/fd-server.ts`;
 * docs/ARCHITECTURE.md, "Window tuning", has the commands). A window grows only while
 * its reader keeps up and its sender waits for credit, and only within `maxBufferedBytes`, so a session
 * of 256 slow streams still commits 256 × 256 KiB.
 *
 * **Example** (Letting windows grow further, for a fast long link)
 *
 * ```ts
 * import { type Duplex, Mux } from "fullduplex"
 *
 * const session = (conn: Duplex.Duplex) => Mux.client(conn, { maxWindowBytes: 4 * Mux.DEFAULT_MAX_WINDOW_BYTES })
 * ```
 *
 * @category constants
 * @since 0.1.0
 */
export const DEFAULT_MAX_WINDOW_BYTES = 4 * 1024 * 1024

/**
 * The largest Data frame sent by default: 256 KiB, one initial window.
 *
 * **Example** (Smaller frames, so that streams interleave more finely)
 *
 * ```ts
 * import { type Duplex, Mux } from "fullduplex"
 *
 * const session = (conn: Duplex.Duplex) => Mux.client(conn, { maxFrameBytes: Mux.DEFAULT_MAX_FRAME_BYTES / 16 })
 * ```
 *
 * @category constants
 * @since 0.1.0
 */
export const DEFAULT_MAX_FRAME_BYTES = 256 * 1024

/**
 * Streams open at once by default, either side's: 256, the accept backlog of hashicorp/yamux.
 *
 * **Example** (A server that allows fewer streams per connection)
 *
 * ```ts
 * import { type Duplex, Mux } from "fullduplex"
 *
 * const session = (conn: Duplex.Duplex) =>
 *   Mux.server(conn, { maxConcurrentStreams: Mux.DEFAULT_MAX_CONCURRENT_STREAMS / 4 })
 * ```
 *
 * @category constants
 * @since 0.1.0
 */
export const DEFAULT_MAX_CONCURRENT_STREAMS = 256

/**
 * How long a stream may wait with zero credit before its write fails `StallDetected`, by default: 30 s.
 *
 * **Example** (Failing writes to a stream whose reader is gone sooner)
 *
 * ```ts
 * import { Duration } from "effect"
 * import { type Duplex, Mux } from "fullduplex"
 *
 * const session = (conn: Duplex.Duplex) =>
 *   Mux.client(conn, { stallTimeout: Duration.toMillis(Mux.DEFAULT_STALL_TIMEOUT) / 3 })
 * ```
 *
 * @category constants
 * @since 0.1.0
 */
export const DEFAULT_STALL_TIMEOUT: Duration.Duration = Duration.seconds(30)

/**
 * How often a keepalive ping is sent by default: 30 s, hashicorp/yamux's `KeepAliveInterval`.
 *
 * **Example** (Pinging more often than by default)
 *
 * ```ts
 * import { Duration } from "effect"
 * import { type Duplex, Mux } from "fullduplex"
 *
 * const session = (conn: Duplex.Duplex) =>
 *   Mux.client(conn, { keepAliveInterval: Duration.toMillis(Mux.DEFAULT_KEEP_ALIVE_INTERVAL) / 6 })
 * ```
 *
 * @category constants
 * @since 0.1.0
 */
export const DEFAULT_KEEP_ALIVE_INTERVAL: Duration.Duration = Duration.seconds(30)

/**
 * How long a ping may go unanswered before the peer is declared dead, by default: 10 s.
 *
 * **Example** (A peer on a slow link gets longer to answer a ping)
 *
 * ```ts
 * import { Duration } from "effect"
 * import { type Duplex, Mux } from "fullduplex"
 *
 * const session = (conn: Duplex.Duplex) =>
 *   Mux.client(conn, { keepAliveTimeout: Duration.toMillis(Mux.DEFAULT_KEEP_ALIVE_TIMEOUT) * 3 })
 * ```
 *
 * @category constants
 * @since 0.1.0
 */
export const DEFAULT_KEEP_ALIVE_TIMEOUT: Duration.Duration = Duration.seconds(10)

/**
 * How long a session that ends on a protocol error (or a keepalive timeout) gives its GoAway and FIN to
 * reach the peer before it aborts the connection, by default: 1 s, the `goAwayTimeout` of Go's
 * `x/net/http2` server, which closes a connection that long after its GoAway. A peer that does not read
 * holds the connection no longer than this.
 *
 * **Example** (Aborting at once after a protocol error)
 *
 * ```ts
 * import { type Duplex, Mux } from "fullduplex"
 *
 * const strict = (conn: Duplex.Duplex) => Mux.server(conn, { errorCloseTimeout: 0 })
 * const lenient = (conn: Duplex.Duplex) => Mux.server(conn, { errorCloseTimeout: Mux.DEFAULT_ERROR_CLOSE_TIMEOUT })
 * ```
 *
 * @category constants
 * @since 0.1.0
 */
export const DEFAULT_ERROR_CLOSE_TIMEOUT: Duration.Duration = Duration.seconds(1)

/**
 * How long an `open` at a limit waits for a slot by default: 10 s, the
 * {@link DEFAULT_KEEP_ALIVE_TIMEOUT}. A slot frees the moment any stream ends, so a burst of short streams
 * drains well within it; a session whose streams do not end for that long is stuck or overloaded, and its
 * caller gets a retryable `StreamRefused` rather than a wait with no end (hashicorp/yamux's `OpenStream`
 * waits for its SYN budget bounded by nothing but the caller's context).
 *
 * **Example** (Waiting longer for a slot than by default)
 *
 * ```ts
 * import { Duration } from "effect"
 * import { type Duplex, Mux } from "fullduplex"
 *
 * const session = (conn: Duplex.Duplex) =>
 *   Mux.client(conn, { openTimeout: Duration.toMillis(Mux.DEFAULT_OPEN_TIMEOUT) * 3 })
 * ```
 *
 * @category constants
 * @since 0.1.0
 */
export const DEFAULT_OPEN_TIMEOUT: Duration.Duration = Duration.seconds(10)

/**
 * The churn budget by default: 1024 streams (four times {@link DEFAULT_MAX_CONCURRENT_STREAMS}) that the
 * peer may open and then reset, or have refused, in a burst. h2o's `reset-budget` is likewise a multiple
 * of its stream limit.
 *
 * **Example** (A stricter churn budget for untrusted peers)
 *
 * ```ts
 * import { type Duplex, Mux } from "fullduplex"
 *
 * const session = (conn: Duplex.Duplex) =>
 *   Mux.server(conn, {
 *     maxStreamChurn: Mux.DEFAULT_MAX_STREAM_CHURN / 4,
 *     streamChurnPerSecond: Mux.DEFAULT_STREAM_CHURN_PER_SECOND / 4
 *   })
 * ```
 *
 * @category constants
 * @since 0.1.0
 */
export const DEFAULT_MAX_STREAM_CHURN = 1024

/**
 * How fast the churn budget refills by default: 256 streams a second, one stream limit a second.
 *
 * **Example** (A budget that refills twice as fast)
 *
 * ```ts
 * import { type Duplex, Mux } from "fullduplex"
 *
 * const session = (conn: Duplex.Duplex) =>
 *   Mux.server(conn, { streamChurnPerSecond: 2 * Mux.DEFAULT_STREAM_CHURN_PER_SECOND })
 * ```
 *
 * @category constants
 * @since 0.1.0
 */
export const DEFAULT_STREAM_CHURN_PER_SECOND = 256

/**
 * Options of a session.
 *
 * **Example** (A client session with larger windows and a keepalive)
 *
 * ```ts
 * import { type Duplex, Mux } from "fullduplex"
 *
 * const options: Mux.SessionOptions = {
 *   role: "client",
 *   windowBytes: 1024 * 1024,
 *   maxConcurrentStreams: 64,
 *   keepAliveInterval: "10 seconds",
 *   label: "api mux"
 * }
 * const session = (conn: Duplex.Duplex) => Mux.make(conn, options)
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface SessionOptions {
  /** `client` opens odd stream ids, `server` even ones; the two ends of a connection must differ. */
  readonly role: "client" | "server"
  /**
   * Each stream's receive window, in bytes, at least {@link INITIAL_STREAM_WINDOW_BYTES} (256 KiB, the
   * default); the bytes beyond it are announced with the stream's SYN or ACK. A stream buffers at most this
   * much of what it has not read.
   */
  readonly windowBytes?: number | undefined
  /**
   * How far a stream's receive window may grow, in bytes, at least `windowBytes`. A stream whose reader
   * keeps up while its sender waits for credit has its window doubled at a window update, up to this,
   * while `maxBufferedBytes` allows; a window never shrinks. Equal to `windowBytes`, windows are fixed.
   * Default the larger of `windowBytes` and {@link DEFAULT_MAX_WINDOW_BYTES} (4 MiB).
   */
  readonly maxWindowBytes?: number | undefined
  /** The largest Data frame sent, in bytes (≥ 1 KiB). Default {@link DEFAULT_MAX_FRAME_BYTES} (256 KiB). */
  readonly maxFrameBytes?: number | undefined
  /**
   * Streams open at once, either side's. A stream the peer opens beyond it is reset (the peer sees
   * `StreamRefused`); `open` beyond it waits up to `openTimeout` for a slot, then fails `StreamRefused`.
   * Default {@link DEFAULT_MAX_CONCURRENT_STREAMS} (256).
   */
  readonly maxConcurrentStreams?: number | undefined
  /**
   * The most the session buffers of what the application has not read, in bytes: streams the peer opens
   * beyond `maxBufferedBytes / windowBytes` are reset, and our `open` beyond it waits as it does at
   * `maxConcurrentStreams`. Default `maxConcurrentStreams × windowBytes`.
   */
  readonly maxBufferedBytes?: number | undefined
  /**
   * How long an `open` at a limit (`maxConcurrentStreams`, or `maxBufferedBytes / windowBytes`) waits for
   * a slot before it fails `StreamRefused` (`why: "limit"`, retryable, with `waitedMillis`). Waiting opens
   * are served first come first served, and at most `maxConcurrentStreams` of them wait: one more fails at
   * once. `0` fails at once at the limit, as a caller with a retry policy of its own may want. Default
   * {@link DEFAULT_OPEN_TIMEOUT} (10 s).
   *
   * **Example** (Failing fast at the limit, to retry with a policy of one's own)
   *
   * ```ts
   * import { Duplex, Mux } from "fullduplex"
   * import { Effect, Schedule } from "effect"
   *
   * const program = Effect.scoped(
   *   Effect.gen(function* () {
   *     const [a] = yield* Duplex.pair()
   *     const session = yield* Mux.client(a, { maxConcurrentStreams: 16, openTimeout: 0 })
   *     return yield* session.open.pipe(
   *       Effect.retry({
   *         while: (error) => error.reason._tag === "StreamRefused" && error.reason.why === "limit",
   *         schedule: Schedule.exponential("10 millis"),
   *         times: 5
   *       })
   *     )
   *   })
   * )
   * ```
   */
  readonly openTimeout?: Duration.Input | undefined
  /** A write waiting this long with zero credit fails `StallDetected`. Default {@link DEFAULT_STALL_TIMEOUT} (30 s). */
  readonly stallTimeout?: Duration.Input | undefined
  /** How often to ping the peer; `0` disables keepalive. Default {@link DEFAULT_KEEP_ALIVE_INTERVAL} (30 s). */
  readonly keepAliveInterval?: Duration.Input | undefined
  /** A ping unanswered this long ends the session with `Timeout`. Default {@link DEFAULT_KEEP_ALIVE_TIMEOUT} (10 s). */
  readonly keepAliveTimeout?: Duration.Input | undefined
  /**
   * After a protocol error or a keepalive timeout, how long the GoAway and FIN have to be written (and
   * read) before the connection is aborted, reading or not. Default {@link DEFAULT_ERROR_CLOSE_TIMEOUT} (1 s).
   */
  readonly errorCloseTimeout?: Duration.Input | undefined
  /**
   * The churn budget: how many streams the peer may open and then reset (or send beyond
   * `maxConcurrentStreams`, to be refused) in a burst. Each spends one; the budget refills at
   * `streamChurnPerSecond`. Spent, the session ends with `ProtocolError` and GoAway (code 1): the bound on
   * the HTTP/2 Rapid Reset pattern. Default {@link DEFAULT_MAX_STREAM_CHURN} (1024).
   */
  readonly maxStreamChurn?: number | undefined
  /** How many streams a second the churn budget regains. Default {@link DEFAULT_STREAM_CHURN_PER_SECOND} (256). */
  readonly streamChurnPerSecond?: number | undefined
  /** Name for diagnostics. Default `"mux <role> over <duplex label>"`. */
  readonly label?: string | undefined
}

/**
 * Counters and gauges of a session.
 *
 * **Example** (Logging a session's counters)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Mux } from "fullduplex"
 *
 * const report = (session: Mux.Session) =>
 *   Effect.flatMap(session.stats, (stats: Mux.Stats) => Effect.log(session.label, stats))
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface Stats {
  /** Streams open (not yet closed both ways), opened by either side; accepted or waiting to be. */
  readonly streams: number
  /** Our opens waiting for a slot (at most `maxConcurrentStreams`). */
  readonly waitingOpens: number
  /** Bytes received and not yet read, over every stream. */
  readonly bufferedBytes: number
  /** The most `bufferedBytes` has been. */
  readonly peakBufferedBytes: number
  /** Control frames waiting to be written. */
  readonly controlQueued: number
  /** Frames read from the peer, of every type. */
  readonly framesIn: number
  /** Frames written to the peer, of every type. */
  readonly framesOut: number
  /** Data frames written. */
  readonly dataFramesOut: number
  /** WindowUpdate frames written: credit returned to the peer. */
  readonly windowUpdatesOut: number
  /** The code of the peer's GoAway (0 normal, 1 protocol error, 2 internal error), once one arrived. */
  readonly goAwayReceived: number | undefined
  /** The code of our GoAway, once one was sent. */
  readonly goAwaySent: number | undefined
}

/**
 * A yamux session: open and accept streams, each a {@link Duplex.Duplex}.
 *
 * **Details**
 *
 * - `open` opens a stream (SYN) and `accept` waits for one the peer opened; once no more can come (our
 *   `goAway` is out, or the session ended gracefully), `accept` fails `SessionEnded`, the end of a loop of
 *   accepts and not a fault. Each stream belongs to the caller's scope: closing it resets (RST) a stream not
 *   closed both ways.
 * - At `maxConcurrentStreams` (or as many streams as `maxBufferedBytes` leaves room for), `open` waits for
 *   a slot, first come first served, up to `openTimeout` (default 10 s); then it fails `StreamRefused`
 *   (`why: "limit"`, retryable). With `openTimeout: 0` it fails at once.
 * - A stream's `end` sends FIN, after every byte written; its `abort` sends RST and drops what it had
 *   buffered (and the credit with it). Writes wait for credit, and fail `StallDetected` after
 *   `stallTimeout` without any.
 * - `goAway` announces that no new stream will be accepted; streams open go on. After the peer's
 *   `goAway`, `open` fails `StreamRefused` (retryable).
 * - `close` is `goAway`, then waits until every stream is closed both ways, then ends the session
 *   gracefully: keepalive stops, what was queued is written, then FIN (the connection's half-close), and
 *   nothing after it. The peer's EOF with no stream left ends it the same way. Either way `closed`
 *   succeeds once our FIN is written, however long the peer keeps its end open, so closing the scope
 *   right after it resets nothing.
 * - A protocol error from the peer (credit overrun, unknown type or version, a bad id, stream churn past
 *   the budget) ends the session: GoAway with code 1, and every stream fails `ProtocolError` after the
 *   bytes it already had. The GoAway and FIN get `errorCloseTimeout` (1 s) to reach the peer; then the
 *   connection is aborted, whether the peer reads or not. `closed` then fails with the session's error.
 *
 * **Example** (A server handler that serves streams until the peer closes)
 *
 * ```ts
 * import { Effect, Stream } from "effect"
 * import { Mux, Tcp } from "fullduplex"
 *
 * const server = Tcp.serve({ port: 0 }, (conn) =>
 *   Effect.scoped(
 *     Effect.gen(function* () {
 *       const session = yield* Mux.server(conn)
 *       yield* session.accept.pipe(
 *         Effect.flatMap((stream) =>
 *           Effect.forkScoped(Stream.run(stream.readable, stream.sink).pipe(Effect.andThen(stream.end)))
 *         ),
 *         Effect.forever,
 *         // The client's session closed: the handler returns, and the connection counts as completed.
 *         Effect.catchReason("DuplexError", "SessionEnded", () => Effect.void)
 *       )
 *     })
 *   )
 * )
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface Session {
  readonly label: string
  /**
   * Opens a stream, owned by the caller's scope. Below the limits it is opened at once. At a limit, or
   * behind other opens already waiting (none is overtaken, even by a slot free at that moment), it waits
   * in line for a slot (a stream closed both ways or reset, or buffer room read back) up to
   * `openTimeout` (default {@link DEFAULT_OPEN_TIMEOUT}, 10 s), then fails `StreamRefused` with
   * `why: "limit"`, `limit` and `waitedMillis`. At most `maxConcurrentStreams` opens wait: one more, or any
   * with `openTimeout: 0`, fails `StreamRefused` (`limit`) at once. Every refusal is retryable.
   *
   * **Interruption**
   *
   * An open interrupted while it waits leaves the line; nothing was sent, and the slot goes to the next in
   * line. Interrupted as its stream was being opened for it, the stream is reset.
   *
   * **Closing**
   *
   * Waiting opens fail with the session's error when it fails, and `StreamRefused` when a GoAway is sent
   * (`why: "closing"`) or received (`why: "goAway"`), as an open would at that moment.
   */
  readonly open: Effect.Effect<Duplex.Duplex, DuplexError, Scope.Scope>
  /** The next stream the peer opened; `SessionEnded` once no more can come (see the details). */
  readonly accept: Effect.Effect<Duplex.Duplex, DuplexError, Scope.Scope>
  /** Round-trip time of a ping, in milliseconds. */
  readonly ping: Effect.Effect<number, DuplexError>
  readonly goAway: Effect.Effect<void>
  readonly close: Effect.Effect<void, DuplexError>
  /** Completes when the session ends: succeeds once it ended gracefully, fails with its error otherwise. */
  readonly closed: Effect.Effect<void, DuplexError>
  readonly stats: Effect.Effect<Stats>
}

/** A window size: a whole number of bytes from `min` to 4 GiB - 1 (it travels in a 32-bit length field). */
const windowError = (
  label: string,
  option: string,
  value: number,
  min: number,
  minText: string
): DuplexError | undefined =>
  Number.isInteger(value) && value >= min && value <= 0xffff_ffff
    ? undefined
    : invalidOptions(label, option, value, `a whole number of bytes from ${minText} to 4 GiB - 1`)

const positiveMillis = (
  label: string,
  option: string,
  value: Duration.Input | undefined,
  fallback: Duration.Duration,
  zeroAllowed: boolean
): number | DuplexError => {
  const millis = Duration.toMillis(value ?? fallback)
  return (zeroAllowed ? millis >= 0 : millis > 0) && Number.isFinite(millis)
    ? millis
    : invalidOptions(label, option, value, zeroAllowed ? "a finite duration ≥ 0" : "a finite duration above zero")
}

/**
 * Starts a yamux session over a duplex.
 *
 * **When to use**
 *
 * To carry many independent conversations over one connection (one TCP connection to a service, a child
 * process's stdio), each with its own flow control, none blocking another.
 *
 * **Details**
 *
 * The session owns the duplex until its scope closes (over a TCP connection or a pair, nothing else may
 * read it meanwhile). Memory: each stream buffers at most its window of unread data. A window starts at
 * `windowBytes` and grows, doubling at a window update while the stream's reader keeps up and its sender
 * waits for credit, up to `maxWindowBytes`; the session commits at most `maxBufferedBytes` (default
 * `maxConcurrentStreams × windowBytes`) to buffers and credit, growth included. Add the control frames
 * of 12 bytes waiting to be written: at most 4096 while the connection takes no more (beyond that the peer
 * is not reading, and the session fails), and at most the frames of one read (a read of 64 KiB holds
 * 5461) while it does; and a 256 KiB send buffer. Credit is returned once half the window has been read
 * since the last update, never in smaller pieces. A write likewise sends no Data frame smaller than
 * min(the peer's window / 2, `maxFrameBytes`) while more of it waits for credit, for at most 20 ms, taking
 * the peer's window (which yamux does not announce) to be the most credit it has let the stream hold, or
 * after a 20 ms hold the credit then held. Streams that end do not add to it: a peer that opens
 * and resets streams is held to the churn budget (`maxStreamChurn`, refilled at `streamChurnPerSecond`),
 * and one that opens streams past `maxConcurrentStreams` has them refused, from the same budget. Our own
 * opens at a limit wait in a line of at most `maxConcurrentStreams` (a few dozen bytes each, their
 * deadlines kept by one timer for the session); one more is refused at once.
 *
 * **Closing**
 *
 * Closing the scope ends the session at once: streams still open fail, the connection is aborted. Call
 * `close` first for a graceful end. A session whose peer ends the connection with no stream left ends
 * cleanly, and answers with FIN.
 *
 * **Gotchas**
 *
 * `close` waits for every stream to finish, as long as that takes; bound it with `Effect.timeout` (the
 * scope then aborts). Some implementations read a GoAway as the end of every stream: `@chainsafe/libp2p-yamux`
 * ends its streams at once, without FIN, on GoAway code 0. With such a peer, finish the streams before
 * `goAway` or `close`.
 *
 * **Example** (A stream each way over an in-memory pair)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Duplex, Mux } from "fullduplex"
 *
 * const program = Effect.scoped(
 *   Effect.gen(function* () {
 *     const [a, b] = yield* Duplex.pair()
 *     const client = yield* Mux.make(a, { role: "client" })
 *     const server = yield* Mux.make(b, { role: "server" })
 *     const outgoing = yield* client.open
 *     yield* outgoing.write(new TextEncoder().encode("hello"))
 *     yield* outgoing.end
 *     const incoming = yield* server.accept
 *     return yield* incoming.read // Option.some(bytes of "hello")
 *   })
 * )
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = (
  duplex: Duplex.Duplex,
  options: SessionOptions
): Effect.Effect<Session, DuplexError, Scope.Scope> =>
  Effect.suspend(() => {
    const label = options.label ?? `mux ${options.role} over ${duplex.label}`
    const windowBytes = options.windowBytes ?? INITIAL_STREAM_WINDOW_BYTES
    const badWindow = windowError(
      label,
      "windowBytes",
      windowBytes,
      INITIAL_STREAM_WINDOW_BYTES,
      `${INITIAL_STREAM_WINDOW_BYTES} (the yamux initial window)`
    )
    if (badWindow !== undefined) return Effect.fail(badWindow)
    const maxWindowBytes = options.maxWindowBytes ?? Math.max(windowBytes, DEFAULT_MAX_WINDOW_BYTES)
    const badMax = windowError(label, "maxWindowBytes", maxWindowBytes, windowBytes, `windowBytes (${windowBytes})`)
    if (badMax !== undefined) return Effect.fail(badMax)
    const maxFrameBytes = options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES
    if (!Number.isInteger(maxFrameBytes) || maxFrameBytes < 1024) {
      return Effect.fail(invalidOptions(label, "maxFrameBytes", maxFrameBytes, "a whole number of bytes ≥ 1024"))
    }
    const maxConcurrentStreams = options.maxConcurrentStreams ?? DEFAULT_MAX_CONCURRENT_STREAMS
    if (!Number.isInteger(maxConcurrentStreams) || maxConcurrentStreams < 1) {
      return Effect.fail(invalidOptions(label, "maxConcurrentStreams", maxConcurrentStreams, "a whole number ≥ 1"))
    }
    const maxBufferedBytes = options.maxBufferedBytes ?? maxConcurrentStreams * windowBytes
    if (!Number.isFinite(maxBufferedBytes) || maxBufferedBytes < windowBytes) {
      return Effect.fail(
        invalidOptions(label, "maxBufferedBytes", maxBufferedBytes, `a number of bytes ≥ windowBytes (${windowBytes})`)
      )
    }
    const stallMillis = positiveMillis(label, "stallTimeout", options.stallTimeout, DEFAULT_STALL_TIMEOUT, false)
    if (typeof stallMillis !== "number") return Effect.fail(stallMillis)
    const keepAliveIntervalMillis = positiveMillis(
      label,
      "keepAliveInterval",
      options.keepAliveInterval,
      DEFAULT_KEEP_ALIVE_INTERVAL,
      true
    )
    if (typeof keepAliveIntervalMillis !== "number") return Effect.fail(keepAliveIntervalMillis)
    const keepAliveTimeoutMillis = positiveMillis(
      label,
      "keepAliveTimeout",
      options.keepAliveTimeout,
      DEFAULT_KEEP_ALIVE_TIMEOUT,
      false
    )
    if (typeof keepAliveTimeoutMillis !== "number") return Effect.fail(keepAliveTimeoutMillis)
    const errorCloseMillis = positiveMillis(
      label,
      "errorCloseTimeout",
      options.errorCloseTimeout,
      DEFAULT_ERROR_CLOSE_TIMEOUT,
      true
    )
    if (typeof errorCloseMillis !== "number") return Effect.fail(errorCloseMillis)
    const openTimeoutMillis = positiveMillis(label, "openTimeout", options.openTimeout, DEFAULT_OPEN_TIMEOUT, true)
    if (typeof openTimeoutMillis !== "number") return Effect.fail(openTimeoutMillis)
    const maxStreamChurn = options.maxStreamChurn ?? DEFAULT_MAX_STREAM_CHURN
    if (!Number.isInteger(maxStreamChurn) || maxStreamChurn < 1) {
      return Effect.fail(invalidOptions(label, "maxStreamChurn", maxStreamChurn, "a whole number ≥ 1"))
    }
    const streamChurnPerSecond = options.streamChurnPerSecond ?? DEFAULT_STREAM_CHURN_PER_SECOND
    if (!Number.isFinite(streamChurnPerSecond) || streamChurnPerSecond < 0) {
      return Effect.fail(
        invalidOptions(label, "streamChurnPerSecond", streamChurnPerSecond, "a finite number of streams ≥ 0")
      )
    }
    if (options.role !== "client" && options.role !== "server") {
      return Effect.fail(invalidOptions(label, "role", options.role, `"client" or "server"`))
    }
    return Effect.flatMap(loadSession, ({ makeSession }) =>
      makeSession(duplex, {
        role: options.role,
        label,
        windowBytes,
        maxWindowBytes,
        maxFrameBytes,
        maxConcurrentStreams,
        maxBufferedBytes,
        stallMillis,
        keepAliveIntervalMillis,
        keepAliveTimeoutMillis,
        errorCloseMillis,
        maxStreamChurn,
        streamChurnPerSecond,
        openTimeoutMillis
      })
    )
  })

/**
 * A session in the client role (odd stream ids): `make(duplex, { ...options, role: "client" })`.
 *
 * **Example** (A stream over a TCP connection)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Mux, Tcp } from "fullduplex"
 *
 * const program = Effect.scoped(
 *   Effect.gen(function* () {
 *     const conn = yield* Tcp.connect({ port: 4000 })
 *     const session = yield* Mux.client(conn)
 *     const stream = yield* session.open
 *     yield* stream.write(new TextEncoder().encode("hello"))
 *     yield* stream.end
 *     yield* session.close
 *   })
 * )
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const client = (
  duplex: Duplex.Duplex,
  options: Omit<SessionOptions, "role"> = {}
): Effect.Effect<Session, DuplexError, Scope.Scope> => make(duplex, { ...options, role: "client" })

/**
 * A session in the server role (even stream ids): `make(duplex, { ...options, role: "server" })`.
 *
 * **Example** (Echoing every stream of every connection)
 *
 * ```ts
 * import { Effect, Stream } from "effect"
 * import { Mux, Tcp } from "fullduplex"
 *
 * const server = Tcp.serve({ port: 0 }, (conn) =>
 *   Effect.scoped(
 *     Effect.gen(function* () {
 *       const session = yield* Mux.server(conn, { maxConcurrentStreams: 64 })
 *       yield* session.accept.pipe(
 *         Effect.flatMap((stream) => Effect.forkScoped(Stream.run(stream.readable, stream.sink))),
 *         Effect.forever,
 *         Effect.catchReason("DuplexError", "SessionEnded", () => Effect.void)
 *       )
 *     })
 *   )
 * )
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const server = (
  duplex: Duplex.Duplex,
  options: Omit<SessionOptions, "role"> = {}
): Effect.Effect<Session, DuplexError, Scope.Scope> => make(duplex, { ...options, role: "server" })
