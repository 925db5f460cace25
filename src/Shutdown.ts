/**
 * The asymmetric terminal handshake: a server that goes away without losing a request.
 *
 * TCP's own termination is symmetric, and that is not enough: if a client half-closes after its last
 * request at the moment the server half-closes, the server may have closed before the request arrived,
 * and the client reads the server's FIN as "no more responses". The cure is asymmetric. The server
 * announces in band that it is going away and keeps serving; the client stops starting requests, lets the
 * ones in flight finish, and half-closes; the server answers everything it read, then closes; a client
 * that does not comply within `grace` is cut.
 *
 * The conversation is request/response over `Framing`: each request is a data frame, answered by one data
 * frame in order; the notice is a control frame ({@link GOING_AWAY}). With it, every request ends in one
 * of two ways the caller can tell apart: answered, or `NotProcessed` (never sent, safe to retry). None
 * ends in an ambiguous reset.
 *
 * **Wire format**
 *
 * Every message is a `Framing` frame (a kind byte, a 32-bit big-endian length, the payload):
 *
 * | who | frame | payload | when |
 * | --- | --- | --- | --- |
 * | server | control | {@link PREFACE}: `0x00 0x01` (preface, protocol version 1) | first, as soon as it accepts |
 * | client | data | a request | only after the preface has arrived |
 * | server | data | the answer to the oldest unanswered request | in order |
 * | server | control | {@link GOING_AWAY}: `0x01` | once, when it starts shutting down |
 *
 * The preface is what makes a connection that dies early unambiguous, as HTTP/2's mandatory server
 * preface does (RFC 9113 §3.4): a client sends nothing before it has read the preface, so a connection
 * reset before it (a server shutting down with connections still in its listen backlog, which the kernel
 * resets when the listener closes; a server over its connection limit) carried no request, and every
 * request queued on it fails `NotProcessed`. The notice plays the part of HTTP/2's GOAWAY: requests
 * written before it are answered, requests after it are not sent.
 *
 * **Bounds**
 *
 * A server reads ahead of its handler at most `maxPendingRequests` requests and `maxPendingBytes` bytes
 * (it stops reading at either limit: backpressure, not buffering), and a response that the client does
 * not read for `stallTimeout` cuts the connection with `StallDetected`: a client that sends and never
 * reads holds a bounded amount of memory for a bounded time (see {@link server}).
 *
 * @module fullduplex/Shutdown
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import type * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Latch from "effect/Latch"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import type * as Scope from "effect/Scope"
import type { Duplex } from "./Duplex.js"
import {
  Closed,
  DuplexError,
  FrameTooLarge,
  NotProcessed,
  ProtocolError,
  StallDetected,
  Timeout
} from "./DuplexError.js"
import * as Framing from "./Framing.js"
import { inboundPipeOf, outboundPortOf } from "./internal/bytePipe.js"
import { checkFinitePositiveDuration, invalidOptions, stalledDirection } from "./internal/errors.js"
import * as ServerRole from "./internal/shutdownServer.js"
import * as Tcp from "./Tcp.js"
import * as Watchdog from "./Watchdog.js"

/**
 * The payload of the "going away" control frame: one byte, `0x01`.
 *
 * **Example** (Recognising the notice among control frames)
 *
 * ```ts
 * import { Framing, Shutdown } from "fullduplex"
 *
 * const isNotice = (frame: Framing.Frame): boolean =>
 *   Framing.isControl(frame) && frame.payload.length === 1 && frame.payload[0] === Shutdown.GOING_AWAY[0]
 * ```
 *
 * @category constants
 * @since 0.1.0
 */
export const GOING_AWAY: Uint8Array = Uint8Array.of(0x01)

/**
 * The payload of the server's preface, the control frame it sends first on every connection: `0x00`
 * (preface) then `0x01` (protocol version 1). A client sends no request before it has read it.
 *
 * **Example** (What a server in the server role sends first)
 *
 * ```ts
 * import { Framing, Shutdown } from "fullduplex"
 *
 * const prefaceOnTheWire: Uint8Array = Framing.encode(Framing.control(Shutdown.PREFACE))
 * ```
 *
 * @category constants
 * @since 0.1.0
 */
export const PREFACE: Uint8Array = Uint8Array.of(0x00, 0x01)

/**
 * How long a client waits for the server's preface by default before it gives up on the connection: 10 s,
 * the same as `Tcp.DEFAULT_CONNECT_TIMEOUT`, since the preface is the last step of opening the connection.
 *
 * **Example** (A client that gives a slow server longer)
 *
 * ```ts
 * import { Duration } from "effect"
 * import { type Duplex, Shutdown } from "fullduplex"
 *
 * const patient = (conn: Duplex.Duplex) =>
 *   Shutdown.client(conn, { prefaceTimeout: Duration.toMillis(Shutdown.DEFAULT_PREFACE_TIMEOUT) * 3 })
 * ```
 *
 * @category constants
 * @since 0.1.0
 */
export const DEFAULT_PREFACE_TIMEOUT: Duration.Duration = Tcp.DEFAULT_CONNECT_TIMEOUT

/**
 * How many requests a server reads ahead of its handler by default: 64, the client's
 * {@link DEFAULT_MAX_IN_FLIGHT}, so that a client pipelining at its default depth never waits on the
 * server's read-ahead.
 *
 * **Example** (A server that reads further ahead, for clients that pipeline deeper)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Shutdown } from "fullduplex"
 *
 * const server = Shutdown.serve({
 *   port: 0,
 *   handle: (request) => Effect.succeed(request),
 *   maxPendingRequests: 4 * Shutdown.DEFAULT_MAX_PENDING_REQUESTS
 * })
 * ```
 *
 * @category constants
 * @since 0.1.0
 */
export const DEFAULT_MAX_PENDING_REQUESTS = 64

/**
 * How long a write to the client (an answer, the preface, the notice) may make no progress before the
 * server cuts the connection with `StallDetected`, by default: 10 s, `Watchdog.DEFAULT_STALL_TIMEOUT`, the
 * limit `Echo.serve` applies to the same kind of peer.
 *
 * **Example** (Cutting clients that do not read their answers sooner)
 *
 * ```ts
 * import { Duration, Effect } from "effect"
 * import { Shutdown } from "fullduplex"
 *
 * const server = Shutdown.serve({
 *   port: 0,
 *   handle: (request) => Effect.succeed(request),
 *   stallTimeout: Duration.toMillis(Shutdown.DEFAULT_STALL_TIMEOUT) / 2
 * })
 * ```
 *
 * @category constants
 * @since 0.1.0
 */
export const DEFAULT_STALL_TIMEOUT: Duration.Duration = Watchdog.DEFAULT_STALL_TIMEOUT

/**
 * How long a server waits, after its notice, for the client to half-close: 10 s, the same as
 * `Tcp.DEFAULT_SHUTDOWN_GRACE` (and Kubernetes' default termination grace is 30 s, of which a server should
 * keep some for itself).
 *
 * **Example** (A longer grace, within Kubernetes' 30 s)
 *
 * ```ts
 * import { Duration, Effect } from "effect"
 * import { Shutdown } from "fullduplex"
 *
 * const server = Shutdown.serve({
 *   port: 0,
 *   handle: (request) => Effect.succeed(request),
 *   grace: Duration.toMillis(Shutdown.DEFAULT_GRACE) * 2
 * })
 * ```
 *
 * @category constants
 * @since 0.1.0
 */
export const DEFAULT_GRACE: Duration.Duration = Duration.seconds(10)

/**
 * How many requests a client queues before `request` waits: 64.
 *
 * **Example** (A client that queues more requests before it waits)
 *
 * ```ts
 * import { type Duplex, Shutdown } from "fullduplex"
 *
 * const client = (conn: Duplex.Duplex) => Shutdown.client(conn, { maxQueued: 4 * Shutdown.DEFAULT_MAX_QUEUED })
 * ```
 *
 * @category constants
 * @since 0.1.0
 */
export const DEFAULT_MAX_QUEUED = 64

/**
 * After the notice, how long the whole connection has to finish (the client's half-close, every answer
 * written and read, our FIN) by default: 30 s, Kubernetes' default termination grace period.
 *
 * **Example** (Draining for at most ten seconds)
 *
 * ```ts
 * import { Duration, Effect } from "effect"
 * import { Shutdown } from "fullduplex"
 *
 * const drainTimeout = Math.min(Duration.toMillis(Shutdown.DEFAULT_DRAIN_TIMEOUT), 10_000)
 * const server = Shutdown.serve({ port: 0, handle: (request) => Effect.succeed(request), drainTimeout })
 * ```
 *
 * @category constants
 * @since 0.1.0
 */
export const DEFAULT_DRAIN_TIMEOUT: Duration.Duration = Duration.seconds(30)

/**
 * Requests read ahead of the handler by default, in bytes: 1 MiB (the server stops reading once the
 * requests read and not yet answered reach it).
 *
 * **Example** (A server for large requests)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Shutdown } from "fullduplex"
 *
 * const server = Shutdown.serve({
 *   port: 0,
 *   handle: (request) => Effect.succeed(request),
 *   maxPendingBytes: 16 * Shutdown.DEFAULT_MAX_PENDING_BYTES
 * })
 * ```
 *
 * @category constants
 * @since 0.1.0
 */
export const DEFAULT_MAX_PENDING_BYTES = 1024 * 1024

/**
 * How many requests a client sends ahead of their answers by default: 64.
 *
 * **Example** (A client that waits for each answer before the next request)
 *
 * ```ts
 * import { type Duplex, Shutdown } from "fullduplex"
 *
 * const lockstep = (conn: Duplex.Duplex) => Shutdown.client(conn, { maxInFlight: 1 })
 * const deep = (conn: Duplex.Duplex) => Shutdown.client(conn, { maxInFlight: 2 * Shutdown.DEFAULT_MAX_IN_FLIGHT })
 * ```
 *
 * @category constants
 * @since 0.1.0
 */
export const DEFAULT_MAX_IN_FLIGHT = 64

/** What `Shutdown.serve` adds to `drainTimeout` for the server's own backstop (`shutdownGrace`). */
const BACKSTOP_MILLIS = 1000

/**
 * After the grace, how long the server must have waited on a silent client before it cuts it: a FIN may be
 * on its way behind the last requests (a socket paused by a full buffer needs a moment to deliver it), so
 * the verdict "did not half-close" takes this long of silence while the server has nothing else to read.
 */
const SILENCE_MILLIS = 250

/** How often the silence is sampled. */
const SILENCE_TICK_MILLIS = 50

// ---------------------------------------------------------------------------------------------------------
// Server role
// ---------------------------------------------------------------------------------------------------------

/**
 * Options of the server role.
 *
 * **Example** (Options for the server role, shared by `server`, `handler` and `serve`)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Shutdown, Tcp } from "fullduplex"
 *
 * const options: Shutdown.ServerOptions<never, never> = {
 *   handle: (request) => Effect.succeed(request.slice().reverse()),
 *   grace: "5 seconds",
 *   drainTimeout: "20 seconds",
 *   maxPendingRequests: 16
 * }
 * const server = Tcp.serve({ port: 0, shutdownGrace: "21 seconds" }, Shutdown.handler(options))
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface ServerOptions<E, R> extends Framing.FramingOptions {
  /** Answers one request. Requests are answered one at a time, in the order they arrive. */
  readonly handle: (request: Uint8Array) => Effect.Effect<Uint8Array, E, R>
  /**
   * After the notice, how long the client has to half-close before the connection is aborted.
   * Default {@link DEFAULT_GRACE} (10 s).
   */
  readonly grace?: Duration.Input | undefined
  /**
   * After the notice, how long the whole connection has to finish (answers written and read, our FIN)
   * before it is aborted; at least `grace`. Default {@link DEFAULT_DRAIN_TIMEOUT} (30 s).
   */
  readonly drainTimeout?: Duration.Input | undefined
  /**
   * Requests read and not yet answered, in bytes: the server reads ahead of the handler (so that it sees
   * the client's half-close while it works) while they total less than this; the request that reaches it
   * is the last one read until answers make room. Default {@link DEFAULT_MAX_PENDING_BYTES} (1 MiB).
   */
  readonly maxPendingBytes?: number | undefined
  /**
   * Requests read and not yet answered, in number: the server reads no further while this many wait.
   * Default {@link DEFAULT_MAX_PENDING_REQUESTS} (64).
   */
  readonly maxPendingRequests?: number | undefined
  /**
   * How long a write to the client (an answer, the preface, the notice) may wait for room with no byte
   * accepted before the connection is aborted with `StallDetected`: the client does not read its answers.
   * A finite duration above zero. Default {@link DEFAULT_STALL_TIMEOUT} (10 s).
   */
  readonly stallTimeout?: Duration.Input | undefined
}

/**
 * How far a server read ahead of its handler: the most requests, and bytes of requests, read and not yet
 * answered at once (on one connection; for {@link serve}, the most on any one connection).
 *
 * **Details**
 *
 * The server stops reading while `maxPendingRequests` requests wait, or while they total
 * `maxPendingBytes` or more, so `peakRequests ≤ maxPendingRequests` and
 * `peakBytes < maxPendingBytes + maxFrameBytes` (the request that crosses the byte limit is read whole).
 *
 * **Example** (Checking that the server read no further than its limits)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Shutdown } from "fullduplex"
 *
 * const report = (server: Shutdown.ShutdownServer) =>
 *   Effect.flatMap(server.readAhead, (ahead: Shutdown.ReadAhead) =>
 *     Effect.log(`read ahead at most ${ahead.peakRequests} requests, ${ahead.peakBytes} bytes`)
 *   )
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface ReadAhead {
  readonly peakRequests: number
  readonly peakBytes: number
}

/**
 * How a served connection ended, when it ended well.
 *
 * **Example** (Logging how a connection drained)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Shutdown } from "fullduplex"
 *
 * const logReport = (report: Shutdown.ServerReport) =>
 *   Effect.log(
 *     report.noticeSent
 *       ? `${report.answered} answered, drained in ${report.drainMillis ?? 0} ms`
 *       : `${report.answered} answered before the client left`
 *   )
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface ServerReport {
  /** Requests read, and each answered. */
  readonly answered: number
  /** Whether `goingAway` was called before the client's EOF. */
  readonly noticeSent: boolean
  /** From the notice to the client's EOF, when the notice was sent. */
  readonly drainMillis?: number | undefined
}

/**
 * One connection in the server role.
 *
 * **Example** (Serving one connection and telling the client when to go)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { type Duplex, Shutdown } from "fullduplex"
 *
 * const serveOne = (conn: Duplex.Duplex, stopping: Effect.Effect<void>) =>
 *   Effect.scoped(
 *     Effect.gen(function* () {
 *       const served: Shutdown.ServerConnection<never> = yield* Shutdown.server(conn, {
 *         handle: (request) => Effect.succeed(request)
 *       })
 *       yield* Effect.forkScoped(Effect.andThen(stopping, served.goingAway))
 *       const report = yield* served.done
 *       const ahead = yield* served.readAhead
 *       return { report, ahead }
 *     })
 *   )
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface ServerConnection<E> {
  /**
   * Sends the "going away" notice and starts the grace period; the connection keeps working. Idempotent,
   * and a no-op once the client has half-closed. It does not wait for the notice to be written.
   */
  readonly goingAway: Effect.Effect<void>
  /**
   * Waits for the end: the client's EOF, every request read answered, our FIN sent. Fails with the
   * handler's error, the connection's, or `Timeout` when the connection was cut: the client did not
   * half-close within `grace` of the notice, or the connection did not finish within `drainTimeout`.
   */
  readonly done: Effect.Effect<ServerReport, DuplexError | E>
  /** How far the server has read ahead of the handler on this connection so far. */
  readonly readAhead: Effect.Effect<ReadAhead>
}

interface ServerLimits {
  readonly graceMillis: number
  readonly drainMillis: number
  readonly maxPendingBytes: number
  readonly maxPendingRequests: number
  readonly stallMillis: number
}

const checkServerOptions = (
  label: string,
  options: Pick<
    ServerOptions<unknown, unknown>,
    "grace" | "drainTimeout" | "maxPendingBytes" | "maxPendingRequests" | "stallTimeout"
  >
): ServerLimits | DuplexError => {
  const graceMillis = Duration.toMillis(options.grace ?? DEFAULT_GRACE)
  if (!(graceMillis >= 0 && Number.isFinite(graceMillis))) {
    return invalidOptions(label, "grace", options.grace, "a finite duration ≥ 0")
  }
  const drainMillis =
    options.drainTimeout === undefined
      ? Math.max(Duration.toMillis(DEFAULT_DRAIN_TIMEOUT), graceMillis)
      : Duration.toMillis(options.drainTimeout)
  if (!(drainMillis >= graceMillis && Number.isFinite(drainMillis))) {
    return invalidOptions(label, "drainTimeout", options.drainTimeout, `a finite duration ≥ grace (${graceMillis} ms)`)
  }
  const maxPendingBytes = options.maxPendingBytes ?? DEFAULT_MAX_PENDING_BYTES
  if (!(Number.isInteger(maxPendingBytes) && maxPendingBytes >= 1)) {
    return invalidOptions(label, "maxPendingBytes", maxPendingBytes, "a whole number of bytes ≥ 1")
  }
  const maxPendingRequests = options.maxPendingRequests ?? DEFAULT_MAX_PENDING_REQUESTS
  if (!(Number.isInteger(maxPendingRequests) && maxPendingRequests >= 1)) {
    return invalidOptions(label, "maxPendingRequests", maxPendingRequests, "a whole number ≥ 1")
  }
  const badStall = checkFinitePositiveDuration(label, "stallTimeout", options.stallTimeout)
  if (badStall !== undefined) return badStall
  const stallMillis = Duration.toMillis(options.stallTimeout ?? DEFAULT_STALL_TIMEOUT)
  return { graceMillis, drainMillis, maxPendingBytes, maxPendingRequests, stallMillis }
}

/**
 * The limits of the server role with the frame limit, checked in the order the fiber-based role checks
 * them (its own, then `Framing.make`'s).
 */
const checkRoleLimits = (
  label: string,
  options: Pick<
    ServerOptions<unknown, unknown>,
    "grace" | "drainTimeout" | "maxPendingBytes" | "maxPendingRequests" | "stallTimeout" | "maxFrameBytes"
  >
): ServerRole.Limits | DuplexError => {
  const limits = checkServerOptions(label, options)
  if (limits instanceof DuplexError) return limits
  const maxFrameBytes = options.maxFrameBytes ?? Framing.DEFAULT_MAX_FRAME_BYTES
  if (!Number.isInteger(maxFrameBytes) || maxFrameBytes < 0 || maxFrameBytes > Framing.MAX_FRAME_BYTES_LIMIT) {
    return invalidOptions(label, "maxFrameBytes", maxFrameBytes, "a whole number of bytes from 0 to 4 GiB - 1")
  }
  return { ...limits, maxFrameBytes }
}

/** The most requests and bytes read ahead, over the connections of one server (mutable). */
class Peaks {
  requests = 0
  bytes = 0
  note(requests: number, bytes: number): void {
    if (requests > this.requests) this.requests = requests
    if (bytes > this.bytes) this.bytes = bytes
  }
  snapshot(): ReadAhead {
    return { peakRequests: this.requests, peakBytes: this.bytes }
  }
}

/**
 * Serves requests on a connection in the server role, until the client half-closes.
 *
 * **When to use**
 *
 * For a request/response server that must be able to stop without losing requests: deployments,
 * restarts, scale-down. Call `goingAway` on the returned connection when the server is stopping; with
 * `Tcp.serve`, {@link handler} does that when the server shuts down.
 *
 * **Details**
 *
 * The server first sends its preface ({@link PREFACE}); a client in the client role sends nothing before
 * it. Then requests are read ahead of the handler, and `handle` runs on each, in order, one at a time, and
 * its response is sent. At the client's EOF the server answers what is left, then half-closes (after every
 * response is flushed) and `done` succeeds. Over a duplex with ports (TCP, `Duplex.pair`, a subprocess)
 * the connection is driven by callbacks, with no fiber of its own except one per request being handled;
 * otherwise a reader and a worker fiber. `goingAway` sends the notice, in
 * order with the responses, and leaves the connection fully working: everything the client sends until its
 * EOF is read and answered. Two limits run from the notice:
 *
 * - `grace`: if the client's EOF has not been read by then, the client is judged by its silence: the
 *   connection is aborted once the reader has waited on the client (everything it sent read) for 250 ms
 *   with no byte arriving. While the server is busy or behind its own backlog, the client's FIN may be
 *   queued behind its requests, so that time does not count.
 * - `drainTimeout`: if the whole connection has not finished by then (a slow handler, a client that
 *   half-closed but does not read its answers, a client that keeps the server behind and never
 *   half-closes), it is aborted. The timer also starts when `goingAway` comes after the client's EOF.
 *
 * Either way `done` fails `Timeout`, saying which. A control frame from the client, or anything that is
 * not a frame, fails `ProtocolError` (or `FrameTooLarge`, `FrameTruncated`).
 *
 * **Bounds** (a client that sends and never reads)
 *
 * - Read-ahead: the reader stops reading (the duplex's inbound buffer fills, then the transport's window
 *   closes and the client is held back) while `maxPendingRequests` requests are read and not yet answered,
 *   or while they total `maxPendingBytes` or more. A request counts from the moment it is read until its
 *   answer has been written. `readAhead` reports the peaks.
 * - Stall limit: when a write to the client (an answer, the preface or the notice) has waited for room for
 *   `stallTimeout` with no byte accepted, the connection is aborted (a TCP socket is destroyed with RST) and
 *   `done` fails `StallDetected`, naming both directions. This is a one-way limit: a client that does
 *   not read its answers is cut whether or not it still sends. Over TCP the kernel accepts bytes in bursts
 *   (about a third of the send buffer at a time), so a client reading slower than about (send buffer / 3)
 *   per `stallTimeout` looks stalled, as with `Watchdog`.
 * - Memory per connection, at most: the requests read ahead (≤ `maxPendingRequests` of them, fewer than
 *   `maxPendingBytes + maxFrameBytes` bytes: 64 and 5 MiB by default), what is left of the last chunk read
 *   in the frame decoder and the duplex's inbound buffer (each at most the duplex's `highWaterMark`,
 *   64 KiB for TCP), and the answer being written (handed over by reference until the transport takes it),
 *   for at most `stallTimeout` once the client stops reading.
 *
 * **Interruption**
 *
 * Closing the scope stops the connection: the handler's fiber and the timers are interrupted, nothing more
 * is read or written; the duplex is then closed by its own scope.
 *
 * **Closing**
 *
 * `done` sends our FIN only after the client's: the server never half-closes while a request could still
 * arrive. Close the duplex afterwards as usual (`Close.lingering`; with nothing left unread it completes
 * at once).
 *
 * **Example** (An upper-casing server that stops on demand)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Duplex, Shutdown } from "fullduplex"
 *
 * const upper = (request: Uint8Array) =>
 *   Effect.succeed(new TextEncoder().encode(new TextDecoder().decode(request).toUpperCase()))
 *
 * const serveOne = (conn: Duplex.Duplex, stopping: Effect.Effect<void>) =>
 *   Effect.scoped(
 *     Effect.gen(function* () {
 *       const served = yield* Shutdown.server(conn, { handle: upper, grace: "5 seconds" })
 *       yield* Effect.forkScoped(Effect.andThen(stopping, served.goingAway))
 *       return yield* served.done
 *     })
 *   )
 * ```
 *
 * @category server
 * @since 0.1.0
 */
export const server = <E, R>(
  duplex: Duplex,
  options: ServerOptions<E, R>
): Effect.Effect<ServerConnection<E>, DuplexError, Scope.Scope | R> => serverWith(duplex, options, new Peaks())

const serverWith = <E, R>(
  duplex: Duplex,
  options: ServerOptions<E, R>,
  /** Where the peaks of the read-ahead are noted too: the server's, for `serve`. */
  serverPeaks: Peaks
): Effect.Effect<ServerConnection<E>, DuplexError, Scope.Scope | R> =>
  Effect.gen(function* () {
    const limits = checkRoleLimits(duplex.label, options)
    if (limits instanceof DuplexError) return yield* limits
    const pipe = inboundPipeOf(duplex)
    const port = outboundPortOf(duplex)
    if (pipe === undefined || port === undefined) return yield* serverFibers(duplex, options, limits, serverPeaks)
    const role = new ServerRole.Role(options.handle, limits, serverPeaks)
    const context = yield* Effect.context<R>()
    const clock = yield* Clock.Clock
    const ended = Deferred.makeUnsafe<ServerReport, DuplexError | E>()
    const connection = new ServerRole.Connection(role, duplex, pipe, port, context, clock, (exit) =>
      Deferred.doneUnsafe(ended, exit)
    )
    yield* Effect.addFinalizer(() =>
      Effect.andThen(
        connection.interrupted,
        Effect.sync(() => Deferred.doneUnsafe(ended, Exit.interrupt()))
      )
    )
    connection.start()
    return {
      goingAway: Effect.sync(() => connection.goingAwayUnsafe()),
      done: Deferred.await(ended),
      readAhead: Effect.sync(() => connection.readAhead())
    }
  })

/**
 * The server role as two fibers (a reader and a worker) and a stall poll: for a duplex without ports,
 * whose bytes can only be read and written by fibers.
 */
const serverFibers = <E, R>(
  duplex: Duplex,
  options: ServerOptions<E, R>,
  limits: ServerLimits,
  /** Where the peaks of the read-ahead are noted too: the server's, for `serve`. */
  serverPeaks: Peaks
): Effect.Effect<ServerConnection<E>, DuplexError, Scope.Scope | R> =>
  Effect.gen(function* () {
    const label = duplex.label
    const { graceMillis, drainMillis, maxPendingBytes, maxPendingRequests, stallMillis } = limits
    const framed = yield* Framing.make(duplex, options)
    const handle = options.handle
    const scope = yield* Effect.scope

    let noticeAt: number | undefined
    let drainMillisTaken: number | undefined
    let finished = false
    /** What the reader is waiting on: the client (`peer`), room in the read-ahead (`backlog`), or nothing. */
    let reader: "peer" | "backlog" | "busy" | "eof" = "busy"
    /** Set when the grace has ended without the client's EOF: a drain cut is then the client's doing too. */
    let graceOver = false
    /** Set once our FIN is out after every answer: nothing may cut the connection any more. */
    let closedCleanly = false
    /** Why the connection was cut, once it was. */
    let cut: "grace" | "drain" | "stall" | undefined
    /** The diagnosis, when the stall limit cut the connection. */
    let stallError: DuplexError | undefined
    const timers: Array<Fiber.Fiber<unknown>> = []
    /** Requests read and not yet answered: at most `maxPendingRequests` (the read-ahead). */
    const pending = yield* Queue.unbounded<Uint8Array, Cause.Done>()
    /** Requests read and not yet answered (from the read to the end of the answer's write), and their bytes. */
    let pendingRequests = 0
    let pendingBytes = 0
    const connectionPeaks = new Peaks()
    /** Opened by the worker whenever an answer makes room in the read-ahead. */
    const room = Latch.makeUnsafe(false)
    const hasRoom = () => pendingRequests < maxPendingRequests && pendingBytes < maxPendingBytes
    /** Opened once the preface is written: nothing may go out before it, the notice included. */
    const prefaceSent = Latch.makeUnsafe(false)

    const cutNow = (why: "grace" | "drain"): Effect.Effect<void> =>
      Effect.suspend(() => {
        if (finished || closedCleanly || cut !== undefined) return Effect.void
        // A drain cut of a client that never half-closed, though the grace was over, is the grace's verdict.
        cut = why === "drain" && graceOver && reader !== "eof" ? "grace" : why
        return framed.abort
      })

    /**
     * The stall limit: a write to the client that has waited for room with no byte accepted for
     * `stallMillis` aborts the connection. Sampled ten times per limit, as `Watchdog` does; unlike the
     * watchdog it watches only our outbound direction, since a client that stops reading holds the
     * server's answers whether or not it keeps sending.
     */
    const watchStall = Effect.gen(function* () {
      const pollMillis = Math.max(1, Math.floor(stallMillis / 10))
      let since: number | undefined
      let acceptedAtStart = 0
      while (true) {
        yield* Effect.sleep(pollMillis)
        const stats = yield* duplex.stats
        const now = yield* Clock.currentTimeMillis
        if (!stats.outbound.blocked) {
          since = undefined
        } else if (since === undefined || stats.outbound.bytes !== acceptedAtStart) {
          since = now
          acceptedAtStart = stats.outbound.bytes
        } else if (now - since >= stallMillis) {
          if (finished || closedCleanly || cut !== undefined) return
          cut = "stall"
          stallError = new DuplexError({
            reason: new StallDetected({
              label: `${label}: an answer waited ${now - since} ms for the client to read (the client does not read its answers)`,
              stalledMillis: now - since,
              directions: [stalledDirection(label, "outbound", stats), stalledDirection(label, "inbound", stats)]
            })
          })
          return yield* framed.abort
        }
      }
    })

    const readNext: Effect.Effect<Option.Option<Framing.Frame>, DuplexError> = Effect.suspend(() => {
      reader = "peer"
      return Effect.ensuring(
        framed.read,
        Effect.sync(() => {
          reader = "busy"
        })
      )
    })

    const readLoop = Effect.gen(function* () {
      while (true) {
        // Backpressure, not buffering: with the read-ahead full the reader does not read, so the duplex's
        // inbound buffer fills and the client is held back by the transport's window.
        while (!hasRoom()) {
          reader = "backlog"
          room.closeUnsafe()
          yield* room.await
        }
        const frame = yield* readNext
        if (Option.isNone(frame)) break
        if (frame.value._tag === "Control") {
          return yield* new DuplexError({
            reason: new ProtocolError({ label, problem: "a control frame from the client (only servers send them)" })
          })
        }
        pendingRequests++
        pendingBytes += frame.value.payload.length
        connectionPeaks.note(pendingRequests, pendingBytes)
        serverPeaks.note(pendingRequests, pendingBytes)
        yield* Queue.offer(pending, frame.value.payload)
      }
      reader = "eof"
      if (noticeAt !== undefined) drainMillisTaken = (yield* Clock.currentTimeMillis) - noticeAt
      yield* Queue.end(pending)
    })

    const answerLoop = Effect.gen(function* () {
      // The preface first: until it arrives a client sends nothing, so a connection lost before it
      // carried no request.
      yield* framed.send(Framing.control(PREFACE))
      prefaceSent.openUnsafe()
      let answered = 0
      while (true) {
        const next = yield* Effect.exit(Queue.take(pending))
        if (Exit.isFailure(next)) break // the client's EOF, and every request before it answered
        const response = yield* handle(next.value)
        yield* framed.send(Framing.data(response))
        answered++
        pendingRequests--
        pendingBytes -= next.value.length
        room.openUnsafe()
      }
      // Only now, after the client's FIN and every answer: no request can be left behind by our FIN.
      yield* framed.end
      closedCleanly = true
      return answered
    })

    const serveLoop = Effect.all([readLoop, answerLoop], { concurrency: 2 }).pipe(
      Effect.map(([, answered]): ServerReport => ({
        answered,
        noticeSent: noticeAt !== undefined,
        drainMillis: drainMillisTaken
      })),
      Effect.catch((error) =>
        Effect.fail(
          cut === undefined
            ? error
            : cut === "stall"
              ? (stallError ?? error)
              : new DuplexError({
                  reason: new Timeout({
                    label,
                    operation:
                      cut === "grace"
                        ? "shutdown grace (the client did not half-close after the notice)"
                        : "shutdown drain (the connection did not finish after the notice)",
                    timeoutMillis: cut === "grace" ? graceMillis : drainMillis
                  })
                })
        )
      ),
      Effect.ensuring(
        Effect.suspend(() => {
          finished = true
          return Fiber.interruptAll(timers)
        })
      )
    )
    timers.push(yield* Effect.forkIn(watchStall, scope))
    const loop = yield* Effect.forkScoped(serveLoop, { startImmediately: true })

    const inboundBytes = Effect.map(duplex.stats, (stats) => stats.inbound.bytes)
    /** The reader's state now (a function, so that the compiler does not narrow it across waits). */
    const readerNow = () => reader
    /**
     * The grace's verdict. At its end, a client whose EOF has been read complied. Otherwise it is judged by
     * silence: cut once the server has been waiting on it (everything it sent read) for {@link
     * SILENCE_MILLIS} with no byte arriving. While bytes arrive, or while the server is busy or behind its
     * own backlog, the silence does not count.
     */
    const judgeAfterGrace = Effect.gen(function* () {
      yield* Effect.sleep(graceMillis)
      if (readerNow() === "eof") return
      graceOver = true
      let lastBytes = yield* inboundBytes
      let quietSince = yield* Clock.currentTimeMillis
      while (readerNow() !== "eof") {
        yield* Effect.sleep(SILENCE_TICK_MILLIS)
        const bytes = yield* inboundBytes
        const now = yield* Clock.currentTimeMillis
        if (bytes !== lastBytes || readerNow() !== "peer") {
          lastBytes = bytes
          quietSince = now
        } else if (now - quietSince >= SILENCE_MILLIS) {
          return yield* cutNow("grace")
        }
      }
    })
    const startTimers = (withNotice: boolean) =>
      Effect.gen(function* () {
        // The notice goes out in its own fiber: behind a response that waits for the client to read, it
        // must not hold back the timers, which start now.
        if (withNotice) {
          const notice = Effect.andThen(prefaceSent.await, framed.send(Framing.control(GOING_AWAY)))
          timers.push(yield* Effect.forkIn(Effect.ignore(notice), scope))
          timers.push(yield* Effect.forkIn(judgeAfterGrace, scope))
        }
        timers.push(yield* Effect.forkIn(Effect.andThen(Effect.sleep(drainMillis), cutNow("drain")), scope))
      })

    const goingAway: Effect.Effect<void> = Effect.uninterruptible(
      Effect.suspend(() => {
        if (noticeAt !== undefined || finished || closedCleanly) return Effect.void
        return Effect.gen(function* () {
          noticeAt = yield* Clock.currentTimeMillis
          // After the client's EOF there is nobody to tell, but the answers still owed are bounded too.
          yield* startTimers(reader !== "eof")
        })
      })
    )

    return { goingAway, done: Fiber.join(loop), readAhead: Effect.sync(() => connectionPeaks.snapshot()) }
  })

/**
 * A `Tcp.serve` handler in the server role: it sends the notice when the server starts shutting down.
 *
 * **When to use**
 *
 * With `Tcp.serve`, so that a server-wide graceful shutdown (its scope closing, or `server.shutdown`)
 * tells every connection, and drains each within `grace`. {@link serve} is `Tcp.serve` with this handler
 * and a matching `shutdownGrace`.
 *
 * **Details**
 *
 * Each connection runs {@link server}; when `info.shuttingDown` completes, `goingAway`. Give `Tcp.serve` a
 * `shutdownGrace` longer than `drainTimeout`, or the server interrupts connections that are still
 * draining.
 *
 * **Example** (A server that drains on shutdown)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Shutdown, Tcp } from "fullduplex"
 *
 * const server = Tcp.serve(
 *   { port: 0, shutdownGrace: "31 seconds" }, // longer than the drain timeout (30 s by default)
 *   Shutdown.handler({ handle: (request) => Effect.succeed(request), grace: "5 seconds" })
 * )
 * ```
 *
 * @category server
 * @since 0.1.0
 */
export const handler = <E, R>(options: ServerOptions<E, R>): Tcp.Handler<DuplexError | E, R> =>
  handlerWith(options, new Peaks())

const handlerWith = <E, R>(options: ServerOptions<E, R>, peaks: Peaks): Tcp.Handler<DuplexError | E, R> => {
  /** Made at the first connection whose options check: shared by every connection of the server. */
  let role: ServerRole.Role<E, R> | undefined
  return (duplex, info) => {
    const pipe = inboundPipeOf(duplex)
    const port = outboundPortOf(duplex)
    if (pipe === undefined || port === undefined) {
      return Effect.scoped(
        Effect.gen(function* () {
          const served = yield* serverWith(duplex, options, peaks)
          yield* Effect.forkScoped(Effect.andThen(info.shuttingDown, served.goingAway))
          return yield* served.done
        })
      )
    }
    return Effect.withFiber((fiber) => {
      if (role === undefined) {
        const limits = checkRoleLimits(duplex.label, options)
        if (limits instanceof DuplexError) return Exit.fail(limits)
        role = new ServerRole.Role(options.handle, limits, peaks)
      }
      const shared = role
      // The handler fiber waits here, in one callback, for the whole connection: the connection is an
      // object driven by its pipe, its port and the server's sweep and shutdown watch.
      return Effect.callback<ServerReport, DuplexError | E>((resume) => {
        const connection = new ServerRole.Connection(
          shared,
          duplex,
          pipe,
          port,
          fiber.context as Context.Context<R>,
          fiber.getRef(Clock.Clock),
          resume
        )
        connection.start()
        if (connection.phase !== "Closed") shared.watchShutdown(connection, info.shuttingDown)
        return connection.interrupted
      })
    })
  }
}

/**
 * Options of {@link serve}: those of `Tcp.serve` (except `shutdownGrace`, derived from `grace`) and those
 * of the server role.
 *
 * **Example** (A service on a Unix socket)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Shutdown } from "fullduplex"
 *
 * const options: Shutdown.ServeOptions<never, never> = {
 *   path: "/tmp/service.sock",
 *   maxConnections: 128,
 *   handle: (request) => Effect.succeed(request),
 *   grace: "5 seconds"
 * }
 * const server = Shutdown.serve(options)
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface ServeOptions<E, R> extends Omit<Tcp.ServeOptions, "shutdownGrace">, ServerOptions<E, R> {}

/**
 * A server in the server role: a `Tcp.Server` with how far it read ahead on any connection.
 *
 * **Example** (Shutting a service down on demand)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Shutdown } from "fullduplex"
 *
 * const program = (stop: Effect.Effect<void>) =>
 *   Effect.scoped(
 *     Effect.gen(function* () {
 *       const server: Shutdown.ShutdownServer = yield* Shutdown.serve({
 *         port: 0,
 *         handle: (request) => Effect.succeed(request)
 *       })
 *       yield* stop
 *       yield* server.shutdown
 *       return yield* server.readAhead
 *     })
 *   )
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface ShutdownServer extends Tcp.Server {
  /** The most requests, and bytes of requests, any one connection had read and not yet answered at once. */
  readonly readAhead: Effect.Effect<ReadAhead>
}

/**
 * A TCP server in the server role: on shutdown it tells every client and drains them within `grace`.
 *
 * **When to use**
 *
 * For a request/response service that must stop (deploy, restart) without failing a request in flight.
 *
 * **Details**
 *
 * `Tcp.serve` with {@link handler}, and `shutdownGrace` set to `drainTimeout` plus one second, so that
 * connections draining on time are never interrupted. At shutdown (scope close or `server.shutdown`) the server stops
 * accepting and every connection gets the notice; a client that half-closes in time has every request it
 * sent answered; one that does not is aborted at `grace` and reported (a `ConnectionClosed` event with
 * `ending: "failed"` and a `Timeout`).
 *
 * Connections that the kernel completed but the server had not accepted when it stopped (its listen
 * backlog) are reset by the kernel as the listener closes, and those that arrive while it shuts down are
 * refused. Neither has received the preface, so a client in the client role sent nothing on them: every
 * request queued there fails `NotProcessed` and can be retried elsewhere.
 *
 * A client that sends and never reads is bounded as with {@link server}: the read-ahead per connection
 * (`maxPendingRequests`, `maxPendingBytes`) and the stall limit (`stallTimeout`, 10 s by default, the same
 * as `Echo.serve`'s), after which the connection is aborted and reported (`ending: "failed"` with
 * `StallDetected`). `readAhead` reports the most any connection read ahead.
 *
 * **Example** (An echo-by-message service that stops cleanly)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Shutdown } from "fullduplex"
 *
 * const program = Effect.scoped(
 *   Effect.gen(function* () {
 *     const server = yield* Shutdown.serve({ port: 0, grace: "5 seconds", handle: (request) => Effect.succeed(request) })
 *     yield* Effect.sleep("1 minute")
 *     yield* server.shutdown // every client is told, and drained
 *   })
 * )
 * ```
 *
 * @category server
 * @since 0.1.0
 */
export const serve = <E, R>(options: ServeOptions<E, R>): Effect.Effect<ShutdownServer, DuplexError, Scope.Scope | R> =>
  Effect.suspend(() => {
    const limits = checkServerOptions(options.label ?? "Shutdown.serve", options)
    if (limits instanceof DuplexError) return Effect.fail(limits)
    const { handle, grace, drainTimeout, maxPendingBytes, maxPendingRequests, stallTimeout, maxFrameBytes, ...listen } =
      options
    const peaks = new Peaks()
    return Tcp.serve(
      { ...listen, shutdownGrace: limits.drainMillis + BACKSTOP_MILLIS },
      handlerWith(
        { handle, grace, drainTimeout, maxPendingBytes, maxPendingRequests, stallTimeout, maxFrameBytes },
        peaks
      )
    ).pipe(Effect.map((tcp): ShutdownServer => ({ ...tcp, readAhead: Effect.sync(() => peaks.snapshot()) })))
  })

// ---------------------------------------------------------------------------------------------------------
// Client role
// ---------------------------------------------------------------------------------------------------------

/**
 * Options of the client role.
 *
 * **Example** (A client with a small queue and a short preface timeout)
 *
 * ```ts
 * import { type Duplex, Shutdown } from "fullduplex"
 *
 * const options: Shutdown.ClientOptions = { maxQueued: 8, maxInFlight: 8, prefaceTimeout: "2 seconds" }
 * const client = (conn: Duplex.Duplex) => Shutdown.client(conn, options)
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface ClientOptions extends Framing.FramingOptions {
  /** Requests queued, not yet sent, before `request` waits for room. Default {@link DEFAULT_MAX_QUEUED} (64). */
  readonly maxQueued?: number | undefined
  /**
   * Requests sent and not yet answered before the writer waits for answers. Default
   * {@link DEFAULT_MAX_IN_FLIGHT} (64).
   */
  readonly maxInFlight?: number | undefined
  /**
   * How long to wait for the server's preface before giving up on the connection: it is then aborted, the
   * requests queued fail `NotProcessed` (none was sent) and `close` fails `Timeout`. A finite duration above
   * zero. Default {@link DEFAULT_PREFACE_TIMEOUT} (10 s).
   */
  readonly prefaceTimeout?: Duration.Input | undefined
}

/**
 * What a client did, as `close` reports it.
 *
 * **Example** (Checking that every request was answered)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Shutdown } from "fullduplex"
 *
 * const closeChecked = (client: Shutdown.Client) =>
 *   Effect.flatMap(client.close, (report: Shutdown.ClientReport) =>
 *     report.answered === report.sent
 *       ? Effect.succeed(report)
 *       : Effect.fail(`${report.sent - report.answered} requests were not answered`)
 *   )
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface ClientReport {
  /** Requests written to the connection. */
  readonly sent: number
  /** Requests answered. With a server in the server role, equal to `sent` after a clean close. */
  readonly answered: number
  /** Requests that failed `NotProcessed`: never sent, safe to retry. */
  readonly notProcessed: number
  /** Whether the server's notice arrived. */
  readonly noticeReceived: boolean
}

/**
 * One connection in the client role.
 *
 * **Example** (Moving to a new connection when the server goes away)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Shutdown } from "fullduplex"
 *
 * const requestThenLeave = (client: Shutdown.Client, payload: Uint8Array) =>
 *   Effect.gen(function* () {
 *     const answer = yield* client.request(payload)
 *     yield* Effect.forkScoped(Effect.andThen(client.goingAway, Effect.log(`${client.label}: going away`)))
 *     yield* client.close
 *     return answer
 *   })
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface Client {
  readonly label: string
  /**
   * Sends a request and waits for its response. Requests from any number of fibers are pipelined, in the
   * order they are called; none is sent before the server's preface. Fails `NotProcessed` (never sent,
   * safe to retry) when the server's notice, your `close`, or the end of the connection came first
   * (including a connection that ended before the preface, or whose preface did not come in time).
   */
  readonly request: (payload: Uint8Array) => Effect.Effect<Uint8Array, DuplexError>
  /**
   * Completes when the server's notice arrives: the moment to open a new connection for new requests. It
   * never completes if the connection ends without a notice; wait on `close` (or a request) for that.
   */
  readonly goingAway: Effect.Effect<void>
  /**
   * Closes gracefully: no new requests (they fail `NotProcessed`), the queued ones are sent, then a
   * half-close, then every response is read until the server's EOF. Idempotent. It waits for the server
   * as long as the server takes; bound it with `Effect.timeout` if need be (the scope then aborts).
   */
  readonly close: Effect.Effect<ClientReport, DuplexError>
  /** What the client has done so far. */
  readonly report: Effect.Effect<ClientReport>
}

interface Pending {
  /** Emptied once written, so that an abandoned request waiting for its answer holds no payload. */
  payload: Uint8Array
  readonly answer: Deferred.Deferred<Uint8Array, DuplexError>
  cancelled: boolean
}

type ClientState = "open" | "closing" | "goingAway" | "lost"

/**
 * Opens a connection in the client role: pipelined requests, and the terminal handshake done right.
 *
 * **When to use**
 *
 * Against a server in the server role ({@link server}, {@link serve}): every request ends answered, or
 * `NotProcessed` and safe to retry, including when the server shuts down while requests are flowing.
 *
 * **Details**
 *
 * The writer sends nothing until the reader has read the server's preface ({@link PREFACE}): requests
 * made before it wait in the queue. If the connection ends or is reset before the preface (a server that
 * shut down with the connection still in its listen backlog, or refused it), or the preface does not come
 * within `prefaceTimeout`, no request was sent and every one fails `NotProcessed`.
 *
 * Then two fibers: a writer sends queued requests in order, a reader matches responses to them in order; the
 * reader never waits on the writer or the other way round. When the notice arrives the client stops
 * sending: requests not yet written fail `NotProcessed` with `why: "goingAway"` (new ones too), the ones in
 * flight are answered, the writer half-closes, and the reader reads until the server's EOF. `close` does
 * the same on your initiative, after sending what was queued. If the connection ends or breaks, requests
 * not yet written fail `NotProcessed` (`connectionLost`), those written fail with the connection's error
 * (they may or may not have been processed), and a server that closes with requests unanswered fails
 * them `ProtocolError`.
 *
 * **Interruption**
 *
 * An interrupted `request` that was not yet sent is never sent; one already sent gets its response read
 * and dropped, keeping later responses in step.
 *
 * **Closing**
 *
 * Closing the scope without `close` interrupts both fibers, fails every pending request (`NotProcessed`
 * if unsent, `Closed` otherwise) and leaves the duplex to its own scope (which aborts it unless ended).
 *
 * **Example** (Requests until the server goes away)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Shutdown, Tcp } from "fullduplex"
 *
 * const program = Effect.scoped(
 *   Effect.gen(function* () {
 *     const conn = yield* Tcp.connect({ host: "127.0.0.1", port: 4000 })
 *     const client = yield* Shutdown.client(conn)
 *     const answer = yield* client.request(new TextEncoder().encode("ping")).pipe(
 *       Effect.catchReason("DuplexError", "NotProcessed", () => Effect.succeed(undefined)) // retry elsewhere
 *     )
 *     const report = yield* client.close
 *     return { answer, report }
 *   })
 * )
 * ```
 *
 * @category client
 * @since 0.1.0
 */
export const client = (duplex: Duplex, options: ClientOptions = {}): Effect.Effect<Client, DuplexError, Scope.Scope> =>
  Effect.gen(function* () {
    const label = duplex.label
    const maxQueued = options.maxQueued ?? DEFAULT_MAX_QUEUED
    if (!Number.isInteger(maxQueued) || maxQueued < 1) {
      return yield* invalidOptions(label, "maxQueued", maxQueued, "a whole number ≥ 1")
    }
    const maxInFlight = options.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT
    if (!Number.isInteger(maxInFlight) || maxInFlight < 1) {
      return yield* invalidOptions(label, "maxInFlight", maxInFlight, "a whole number ≥ 1")
    }
    const badPreface = checkFinitePositiveDuration(label, "prefaceTimeout", options.prefaceTimeout)
    if (badPreface !== undefined) return yield* badPreface
    const prefaceMillis = Duration.toMillis(options.prefaceTimeout ?? DEFAULT_PREFACE_TIMEOUT)
    const framed = yield* Framing.make(duplex, options)
    const queue = yield* Queue.bounded<Pending, Cause.Done>(maxQueued)
    /** Opened by the reader when it takes an answer: the writer waits on it while `maxInFlight` are out. */
    const answerTaken = Latch.makeUnsafe(false)
    /** Sent and not yet answered, oldest first. */
    const inFlight: Array<Pending> = []
    let inFlightHead = 0
    let state: ClientState = "open"
    const counts = { sent: 0, answered: 0, notProcessed: 0 }
    const notice = Deferred.makeUnsafe<void>()
    /** Set when the server's preface has been read: from then on requests may be sent. */
    let prefaceSeen = false
    /** The writer's go-ahead: opened by the preface, or by the end of the connection (then nothing is sent). */
    const prefaceGate = Latch.makeUnsafe(false)

    /** Why a request cannot be sent now: the notice, our own close (whichever came first), or the end of the connection. */
    const whyNow = (): NotProcessed["why"] =>
      state === "goingAway" ? "goingAway" : state === "closing" ? "closing" : "connectionLost"
    /** Set when the connection ended or broke, whatever the state was. */
    let ended = false
    const notProcessed = (why: NotProcessed["why"]) => new DuplexError({ reason: new NotProcessed({ label, why }) })
    /** Ends a request with `error`, once (counting it when it is `NotProcessed`). */
    const fail = (pending: Pending, error: DuplexError): Effect.Effect<void> =>
      Effect.suspend(() => {
        if (Deferred.isDoneUnsafe(pending.answer)) return Effect.void
        if (error.reason._tag === "NotProcessed" && !pending.cancelled) counts.notProcessed++
        return Deferred.fail(pending.answer, error)
      })
    const stopSending = (next: ClientState): void => {
      // Closing by our own call is expected to end in the server's EOF; only the notice overrides it.
      if (state === "open" || (state === "closing" && next === "goingAway")) state = next
      Queue.endUnsafe(queue)
      answerTaken.openUnsafe() // a writer waiting for room must see it too
      if (next === "lost") prefaceGate.openUnsafe() // and one waiting for the preface: it will send nothing
    }
    const takeInFlight = (): Pending | undefined => {
      if (inFlightHead === inFlight.length) return undefined
      const pending = inFlight[inFlightHead++]!
      answerTaken.openUnsafe()
      if (inFlightHead > 1024 && inFlightHead * 2 > inFlight.length) {
        inFlight.splice(0, inFlightHead)
        inFlightHead = 0
      }
      return pending
    }
    /** The first failure of the connection: the cause, not our own abort that follows it. */
    let lostWith: DuplexError | undefined
    /** The request being written, and the outbound byte count before it: whether any of it left. */
    let writing: { readonly pending: Pending; readonly before: number } | undefined
    /**
     * Fails every request still waiting, once the connection can take no more bytes (it ended or was
     * aborted): the written ones with `error`, the one being written `NotProcessed` if none of its bytes
     * left, the queued ones `NotProcessed`.
     */
    const failPending = (error: DuplexError): Effect.Effect<void> =>
      Effect.gen(function* () {
        ended = true
        const current = writing
        const untouched = current !== undefined && (yield* duplex.stats).outbound.bytes === current.before
        for (let pending = takeInFlight(); pending !== undefined; pending = takeInFlight()) {
          yield* fail(pending, untouched && pending === current.pending ? notProcessed("connectionLost") : error)
        }
        // Clearing an ended queue lets callers blocked in `offer` in: clear again until none is left.
        while (true) {
          const queued = yield* Queue.clear(queue)
          if (queued.length === 0) break
          for (const pending of queued) {
            if (!pending.cancelled) yield* fail(pending, notProcessed(whyNow()))
          }
        }
      })

    /** Whether requests may still be sent: not after the notice, nor once the connection has ended. */
    const sending = () => (state === "open" || state === "closing") && !ended
    const writer = Effect.gen(function* () {
      // Nothing before the server's preface: a connection lost before it carried no request.
      yield* prefaceGate.await
      while (true) {
        // Room first, then a request: a request is never held while waiting, so the notice, a close or the
        // connection's end finds every unsent request in the queue. (The writer may wait for the reader;
        // the reader never waits for the writer.)
        while (inFlight.length - inFlightHead >= maxInFlight && sending()) {
          answerTaken.closeUnsafe()
          yield* answerTaken.await
        }
        const taken = yield* Effect.exit(Queue.take(queue))
        if (Exit.isFailure(taken)) break // ended: closing, the notice, or the connection's end
        const pending = taken.value
        if (pending.cancelled) continue
        if (!sending()) {
          yield* fail(pending, notProcessed(whyNow()))
          continue
        }
        // From here the reader matches the next unclaimed response to this request.
        inFlight.push(pending)
        writing = { pending, before: (yield* duplex.stats).outbound.bytes }
        const written = yield* Effect.exit(framed.send(Framing.data(pending.payload)))
        if (Exit.isSuccess(written)) {
          writing = undefined
          counts.sent++
          pending.payload = EMPTY
          continue
        }
        const error = Cause.squash(written.cause)
        const failure = error instanceof DuplexError ? error : closedError(label)
        if (failure.reason._tag === "FrameTooLarge") {
          // Refused before writing anything (`request` checks the size, so this is a safeguard): the
          // connection is fine, only this request fails. It is the newest in flight, hence still the last.
          writing = undefined
          if (inFlight[inFlight.length - 1] === pending) inFlight.pop()
          yield* fail(pending, failure)
          continue
        }
        stopSending("lost")
        lostWith ??= failure
        yield* framed.abort // no byte can leave after this, so "none of it left" is final
        yield* failPending(lostWith)
        return
      }
      if (state !== "lost") yield* Effect.ignore(framed.end) // half-close: every request is out
    })

    const reader = Effect.gen(function* () {
      while (true) {
        const frame = yield* framed.read
        if (Option.isNone(frame)) break
        if (!prefaceSeen) {
          if (frame.value._tag === "Control" && isPreface(frame.value.payload)) {
            prefaceSeen = true
            prefaceGate.openUnsafe() // the writer's go-ahead, and the end of the preface timer
            continue
          }
          return yield* new DuplexError({
            reason: new ProtocolError({
              label,
              problem: `a ${frame.value._tag === "Control" ? "control" : "data"} frame of ${frame.value.payload.length} bytes before the server's preface (is the peer a Shutdown server of this version?)`
            })
          })
        }
        if (frame.value._tag === "Control") {
          const payload = frame.value.payload
          if (payload.length === 1 && payload[0] === GOING_AWAY[0]) {
            stopSending("goingAway")
            Deferred.doneUnsafe(notice, Exit.void)
            continue
          }
          return yield* new DuplexError({
            reason: new ProtocolError({ label, problem: `an unknown control frame (${payload.length} bytes)` })
          })
        }
        const pending = takeInFlight()
        if (pending === undefined) {
          return yield* new DuplexError({
            reason: new ProtocolError({ label, problem: "a response with no request outstanding" })
          })
        }
        counts.answered++
        yield* Deferred.succeed(pending.answer, frame.value.payload)
      }
      // The server's EOF. With a server in the server role every request sent has been answered by now;
      // nothing may be sent after it, whatever the state (a close in progress included).
      ended = true
      stopSending("lost")
      const unanswered = inFlight.length - inFlightHead
      if (unanswered > 0) {
        return yield* new DuplexError({
          reason: new ProtocolError({
            label,
            problem: `the server closed with ${unanswered} request(s) sent and not answered (they may or may not have been processed)`
          })
        })
      }
    }).pipe(
      Effect.catch((error) =>
        Effect.gen(function* () {
          stopSending("lost")
          lostWith ??= error
          yield* framed.abort // first: then the bytes of the request being written, if any, are final
          yield* failPending(lostWith)
          return yield* Effect.fail(lostWith)
        })
      )
    )

    /** Gives up on a server whose preface does not come in time: nothing was sent, so nothing is lost. */
    const prefaceTimer = yield* Effect.forkScoped(
      Effect.gen(function* () {
        // Ends at the preface or the connection's end too (both open the gate), leaving no timer behind.
        yield* Effect.raceFirst(Effect.sleep(prefaceMillis), prefaceGate.await)
        if (prefaceSeen || ended || state === "lost") return
        stopSending("lost")
        lostWith ??= new DuplexError({
          reason: new Timeout({
            label,
            operation: "waiting for the server's preface (no request was sent)",
            timeoutMillis: prefaceMillis
          })
        })
        yield* framed.abort
        yield* failPending(lostWith)
      }),
      { startImmediately: true }
    )
    const writerFiber = yield* Effect.forkScoped(writer, { startImmediately: true })
    const readerFiber = yield* Effect.forkScoped(reader, { startImmediately: true })
    yield* Effect.addFinalizer(() =>
      Effect.andThen(
        Fiber.interruptAll([prefaceTimer, writerFiber, readerFiber]),
        Effect.suspend(() => {
          stopSending("lost")
          return Effect.andThen(framed.abort, failPending(closedError(label)))
        })
      )
    )

    const report = Effect.sync((): ClientReport => ({ ...counts, noticeReceived: Deferred.isDoneUnsafe(notice) }))

    const request = (payload: Uint8Array): Effect.Effect<Uint8Array, DuplexError> =>
      Effect.suspend(() => {
        if (payload.length > framed.maxFrameBytes) {
          return Effect.fail(
            new DuplexError({
              reason: new FrameTooLarge({
                label,
                direction: "outbound",
                length: payload.length,
                limit: framed.maxFrameBytes
              })
            })
          )
        }
        if (state !== "open") {
          counts.notProcessed++
          return Effect.fail(notProcessed(whyNow()))
        }
        const pending: Pending = { payload, answer: Deferred.makeUnsafe(), cancelled: false }
        return Queue.offer(queue, pending).pipe(
          Effect.flatMap((queued) => {
            if (queued) return Deferred.await(pending.answer)
            counts.notProcessed++
            return Effect.fail(notProcessed(whyNow()))
          }),
          Effect.onInterrupt(() =>
            Effect.sync(() => {
              pending.cancelled = true
            })
          )
        )
      })

    const close: Effect.Effect<ClientReport, DuplexError> = Effect.suspend(() => {
      stopSending("closing")
      return Fiber.join(writerFiber).pipe(Effect.andThen(Fiber.join(readerFiber)), Effect.andThen(report))
    })

    return { label, request, goingAway: Deferred.await(notice), close, report } satisfies Client
  })

const EMPTY = new Uint8Array(0)

const isPreface = (payload: Uint8Array): boolean =>
  payload.length === PREFACE.length && payload.every((byte, i) => byte === PREFACE[i])

/** The error of a request whose client was closed (its scope) while the request was in flight. */
const closedError = (label: string): DuplexError =>
  new DuplexError({ reason: new Closed({ label, direction: "inbound", operation: "read", after: "abort", bytes: 0 }) })
