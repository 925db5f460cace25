/**
 * TCP (and Unix domain socket) connections as {@link Duplex}es, and a scoped server whose connections
 * close safely.
 *
 * `connect` opens a half-open-capable socket: inbound bytes are held in user space up to `highWaterMark`
 * and then the socket is paused (the kernel's window closes, the peer is held back), writes wait for room,
 * `end` sends FIN and leaves the read side open, `abort` sends RST. `serve` runs a handler per connection
 * in its own fiber, closes each connection with a {@link Close.Strategy} (lingering by default), bounds
 * connections, idle time and shutdown, and reports what happened to every connection as events.
 *
 * @module fullduplex/Tcp
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import type * as Scope from "effect/Scope"
import * as net from "node:net"
import * as Close from "./Close.js"
import * as Duplex from "./Duplex.js"
import { DuplexError, isDuplexError, ListenFailed, StallDetected, Timeout } from "./DuplexError.js"
import * as ConnectionGuard from "./internal/connectionGuard.js"
import * as NodeDuplex from "./internal/nodeDuplex.js"
import { codeOf, stalledDirection } from "./internal/errors.js"
import { connectInto, Leg, socketLabel } from "./internal/connect.js"
import { Traffic } from "./internal/traffic.js"
import {
  checkAddress,
  checkConnectOptions,
  connectLabel,
  countOption,
  describeAddress,
  EVENTS_GONE_MILLIS,
  millisOption,
  isUnscoped
} from "./internal/tcpOptions.js"

/**
 * A TCP address. `host` defaults to `"127.0.0.1"`.
 *
 * **Example** (Connecting to a host and port)
 *
 * ```ts
 * import { Tcp } from "fullduplex"
 *
 * const address: Tcp.TcpAddress = { host: "127.0.0.1", port: 4000 }
 * const conn = Tcp.connect(address)
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface TcpAddress {
  readonly host?: string | undefined
  readonly port: number
}

/**
 * A Unix domain socket (a named pipe on Windows), by its path.
 *
 * **Example** (Connecting to a Unix socket)
 *
 * ```ts
 * import { Tcp } from "fullduplex"
 *
 * const address: Tcp.UnixAddress = { path: "/tmp/app.sock" }
 * const conn = Tcp.connect(address)
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface UnixAddress {
  readonly path: string
}

/**
 * Where to connect or listen: `{ host, port }` or `{ path }`.
 *
 * **Example** (Describing where a server listens)
 *
 * ```ts
 * import type { Tcp } from "fullduplex"
 *
 * const describe = (address: Tcp.Address): string =>
 *   "path" in address ? `unix ${address.path}` : `${address.host ?? "127.0.0.1"}:${address.port}`
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export type Address = TcpAddress | UnixAddress

/**
 * Options every TCP duplex takes.
 *
 * **Example** (Larger pieces, and Nagle's algorithm left on)
 *
 * ```ts
 * import { Tcp } from "fullduplex"
 *
 * const socket: Tcp.SocketOptions = { highWaterMark: 256 * 1024, noDelay: false }
 * const conn = Tcp.connect({ host: "127.0.0.1", port: 4000, ...socket })
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface SocketOptions {
  /**
   * Inbound bytes held in user space before the socket is paused, and the largest piece handed to the
   * socket per write. Default 65536 (64 KiB).
   */
  readonly highWaterMark?: number | undefined
  /** Disable Nagle's algorithm (`TCP_NODELAY`), so small writes leave at once. Default `true`. */
  readonly noDelay?: boolean | undefined
}

/**
 * Options of {@link connect}: an {@link Address} plus {@link SocketOptions}.
 *
 * **Example** (A connect with a short timeout and a label for errors)
 *
 * ```ts
 * import { Tcp } from "fullduplex"
 *
 * const options: Tcp.ConnectOptions = { port: 4000, connectTimeout: "2 seconds", label: "upstream" }
 * const conn = Tcp.connect(options)
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export type ConnectOptions = Address &
  SocketOptions & {
    /** How long the connect may take. Default {@link DEFAULT_CONNECT_TIMEOUT} (10 s). */
    readonly connectTimeout?: Duration.Input | undefined
    /** Name for errors. Default `"tcp <local>→<remote>"` or `"unix <path>"`. */
    readonly label?: string | undefined
  }

/**
 * How long {@link connect} waits for the connection by default: 10 s. (Linux alone would retry the SYN
 * for about two minutes.)
 *
 * **Example** (A connect that waits half as long as by default)
 *
 * ```ts
 * import { Duration } from "effect"
 * import { Tcp } from "fullduplex"
 *
 * const conn = Tcp.connect({ port: 4000, connectTimeout: Duration.toMillis(Tcp.DEFAULT_CONNECT_TIMEOUT) / 2 })
 * ```
 *
 * @category constants
 * @since 0.1.0
 */
export const DEFAULT_CONNECT_TIMEOUT: Duration.Duration = Duration.seconds(10)

/**
 * The listen backlog {@link serve} asks for by default: 4096, which the kernel clamps to its own limit
 * (`net.core.somaxconn` on Linux: 4096 since Linux 5.4, 128 before), so in effect the most the system
 * allows, as Go's `net.Listen` asks for. A burst of connects beyond the backlog is dropped by the kernel
 * (`ListenOverflows`) and retried by the clients a second later; Node's own default is 511.
 *
 * **Example** (A server with a smaller listen backlog)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Tcp } from "fullduplex"
 *
 * const server = Tcp.serve({ port: 0, backlog: Tcp.DEFAULT_BACKLOG / 8 }, () => Effect.void)
 * ```
 *
 * @category constants
 * @since 0.1.0
 */
export const DEFAULT_BACKLOG = 4096

/**
 * How many connections {@link serve} handles at once by default: 1024.
 *
 * **Example** (A server for twice as many connections)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Tcp } from "fullduplex"
 *
 * const server = Tcp.serve({ port: 0, maxConnections: 2 * Tcp.DEFAULT_MAX_CONNECTIONS }, () => Effect.void)
 * ```
 *
 * @category constants
 * @since 0.1.0
 */
export const DEFAULT_MAX_CONNECTIONS = 1024

/**
 * How long a connection may go without a byte either way by default: 60 s, the read and send timeouts
 * of nginx (`client_body_timeout`, `send_timeout`) and Apache httpd (`Timeout`).
 *
 * **Example** (An interactive server that tolerates longer silences)
 *
 * ```ts
 * import { Duration, Effect } from "effect"
 * import { Tcp } from "fullduplex"
 *
 * const idleTimeout = Duration.toMillis(Tcp.DEFAULT_IDLE_TIMEOUT) * 5
 * const server = Tcp.serve({ port: 0, idleTimeout }, () => Effect.void)
 * ```
 *
 * @category constants
 * @since 0.1.0
 */
export const DEFAULT_IDLE_TIMEOUT: Duration.Duration = Duration.seconds(60)

/**
 * How long a write may wait for a peer that reads nothing, by default: 60 s, nginx's `send_timeout`.
 *
 * The clock runs while bytes wait to be written and none of them reaches the kernel, whatever the other
 * direction does: a peer that sends and never reads is cut after it, though the idle limit never fires.
 *
 * **Example** (Cutting peers that do not read sooner than by default)
 *
 * ```ts
 * import { Duration, Effect } from "effect"
 * import { Tcp } from "fullduplex"
 *
 * const sendTimeout = Duration.toMillis(Tcp.DEFAULT_SEND_TIMEOUT) / 4
 * const server = Tcp.serve({ port: 0, sendTimeout }, () => Effect.void)
 * ```
 *
 * @category constants
 * @since 0.1.0
 */
export const DEFAULT_SEND_TIMEOUT: Duration.Duration = Duration.seconds(60)

/**
 * The least a connection must move to stay open, by default: 1 KiB either way in every 60 s window (about
 * 17 bytes/s on average).
 *
 * It frees a peer that trickles (a byte every few seconds keeps the idle limit from firing forever). The
 * window is nginx's `client_body_timeout` (60 s); the rate is far below Apache httpd's `mod_reqtimeout`
 * (`MinRate=500` bytes/s for request bodies), because a general server also carries interactive sessions
 * that move a few keystrokes a minute. Raise it for bulk protocols; `bytes: 0` turns it off.
 *
 * **Example** (Ten times the default minimum rate, over the same window)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Tcp } from "fullduplex"
 *
 * const minRate: Tcp.MinRate = { ...Tcp.DEFAULT_MIN_RATE, bytes: 10 * Tcp.DEFAULT_MIN_RATE.bytes }
 * const server = Tcp.serve({ port: 0, minRate }, () => Effect.void)
 * ```
 *
 * @category constants
 * @since 0.1.0
 */
export const DEFAULT_MIN_RATE: MinRate = { bytes: 1024, window: Duration.seconds(60) }

/**
 * A minimum rate: at least `bytes`, read plus written, in every `window` (counted from the accept, one
 * window after the other). See {@link DEFAULT_MIN_RATE}.
 *
 * **Example** (Tighter limits for a bulk upload server, each cut counted)
 *
 * ```ts
 * import { Effect, Stream } from "effect"
 * import { Tcp } from "fullduplex"
 *
 * const server = Tcp.serve(
 *   {
 *     port: 0,
 *     sendTimeout: "10 seconds", // a peer that reads nothing for 10 s is cut (ending "sendTimeout")
 *     minRate: { bytes: 64 * 1024, window: "10 seconds" }, // less than 64 KiB in 10 s: ending "tooSlow"
 *     stallTimeout: "5 seconds", // both directions held back for 5 s: StallDetected
 *     onEvent: (event) =>
 *       event._tag === "ConnectionClosed" && event.ending !== "completed"
 *         ? Effect.logInfo(`${event.connection.label}: ${event.ending}`)
 *         : Effect.void
 *   },
 *   (conn) => Stream.runDrain(conn.readable)
 * )
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface MinRate {
  /** Bytes either way (read, plus written and taken by the kernel) per window; `0` turns the guard off. */
  readonly bytes: number
  /** Default 60 s. */
  readonly window?: Duration.Input | undefined
}

/**
 * How long handlers may keep running after the server's scope closes, by default: 10 s.
 *
 * **Example** (Giving handlers longer to finish at shutdown)
 *
 * ```ts
 * import { Duration, Effect } from "effect"
 * import { Tcp } from "fullduplex"
 *
 * const shutdownGrace = Duration.toMillis(Tcp.DEFAULT_SHUTDOWN_GRACE) * 3
 * const server = Tcp.serve({ port: 0, shutdownGrace }, () => Effect.void)
 * ```
 *
 * @category constants
 * @since 0.1.0
 */
export const DEFAULT_SHUTDOWN_GRACE: Duration.Duration = Duration.seconds(10)

/**
 * Opens a TCP connection (or a Unix domain socket connection with `{ path }`) as a {@link Duplex.Duplex}.
 *
 * **When to use**
 *
 * For any client. Talk to it with `Duplex.exchange` or `Duplex.pipeThrough`, which read and write
 * concurrently, never with "write everything, then read".
 *
 * **Details**
 *
 * Half-open is allowed: `end` sends FIN and the read side stays open until the server's FIN; `abort`
 * sends RST. Inbound bytes are held up to `highWaterMark` before the socket is paused. A failure to
 * connect is reason `ConnectFailed` (`ECONNREFUSED`, `ENOENT` for a missing socket path, `ETIMEDOUT`
 * after `connectTimeout`); a reset later is `Broken` with code `ECONNRESET`, a write into a connection
 * the peer has closed is `Broken` with `EPIPE`; each names the address and the bytes moved.
 *
 * **Interruption**
 *
 * Interrupting the connect destroys the half-made socket.
 *
 * **Closing**
 *
 * Closing the scope closes the socket: gracefully (FIN) when you had ended it and it flushed, with RST
 * otherwise. For a graceful close of a connection that may still receive, use `Close.lingering` first.
 *
 * **Gotchas**
 *
 * A Unix domain socket has no RST: after `abort` its peer reads a plain EOF (or `EPIPE` on its next
 * write), not `Broken`. And a TCP socket that has already sent its FIN (after `end`) is closed rather
 * than reset by `abort`; the kernel still resets if unread input remains.
 *
 * **Example** (Sending a request and reading the answer)
 *
 * ```ts
 * import { Effect, Sink, Stream } from "effect"
 * import { Duplex, Tcp } from "fullduplex"
 *
 * const program = Effect.scoped(
 *   Effect.gen(function* () {
 *     const conn = yield* Tcp.connect({ host: "127.0.0.1", port: 4000 })
 *     const request = Stream.make(new TextEncoder().encode("hello\n"))
 *     return yield* Duplex.exchange(conn, request, Sink.collect<Uint8Array>())
 *   })
 * )
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const connect = (options: ConnectOptions): Effect.Effect<Duplex.Duplex, DuplexError, Scope.Scope> =>
  Effect.gen(function* () {
    const initialLabel = connectLabel(options)
    const timeoutMillis = checkConnectOptions(initialLabel, options, DEFAULT_CONNECT_TIMEOUT)
    if (typeof timeoutMillis !== "number") return yield* timeoutMillis

    const leg = new Leg()
    // Until the connect succeeds, the socket is ours to destroy; afterwards its duplex is disposed, as
    // `Duplex.fromNodeDuplex` disposes it at scope close.
    yield* Effect.addFinalizer(() => Effect.sync(() => leg.release()))
    return yield* connectInto(leg, options, timeoutMillis)
  })

/**
 * One accepted connection, as events and handlers see it.
 *
 * **Example** (Greeting each connection by its number)
 *
 * ```ts
 * import { type DuplexError, Tcp } from "fullduplex"
 *
 * const greet: Tcp.Handler<DuplexError.DuplexError, never> = (conn, info: Tcp.ConnectionInfo) =>
 *   conn.write(new TextEncoder().encode(`hello, connection ${info.id} from ${info.remote}
 * `))
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface ConnectionInfo {
  /** Sequence number of the connection on this server, from 1. */
  readonly id: number
  /** The peer's address (`"127.0.0.1:51234"`; for a Unix socket, the server's path). */
  readonly remote: string
  /** The duplex's label. */
  readonly label: string
  /**
   * Completes when the server starts its graceful shutdown (scope close or `server.shutdown`): the moment
   * for a handler to tell its peer it is going away (see `Shutdown.handler`). It never fails.
   */
  readonly shuttingDown: Effect.Effect<void>
}

/**
 * How a served connection ended.
 *
 * - `completed`: the handler succeeded and the close strategy ran (see `close`).
 * - `failed`: the handler or the close strategy failed (see `cause`); the connection was aborted.
 * - `idleTimeout`: no byte moved either way for `idleTimeout`; the connection was aborted.
 * - `sendTimeout`: bytes waited to be written and none reached the peer for `sendTimeout` (a peer that
 *   does not read); the connection was aborted, `cause` is a `Timeout` with the bytes written.
 * - `tooSlow`: fewer bytes than `minRate` asks moved in a window (a peer that trickles); the connection
 *   was aborted, `cause` is a `Timeout` saying how much moved.
 * - `shutdown`: the server shut down and the handler was still running after `shutdownGrace`; it was
 *   interrupted and the connection aborted.
 *
 * **Example** (Counting the connections cut by the server's limits)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Tcp } from "fullduplex"
 *
 * const cuts = new Map<Tcp.Ending, number>()
 * const server = Tcp.serve(
 *   {
 *     port: 0,
 *     onEvent: (event) =>
 *       event._tag === "ConnectionClosed" && event.ending !== "completed"
 *         ? Effect.sync(() => void cuts.set(event.ending, (cuts.get(event.ending) ?? 0) + 1))
 *         : Effect.void
 *   },
 *   () => Effect.void
 * )
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export type Ending = "completed" | "failed" | "idleTimeout" | "sendTimeout" | "tooSlow" | "shutdown"

/**
 * What a server reports. Events arrive through the `onEvent` option of {@link serve}.
 *
 * **Example** (Logging refusals and failures)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Tcp } from "fullduplex"
 *
 * const onEvent = (event: Tcp.ServerEvent): Effect.Effect<void> => {
 *   switch (event._tag) {
 *     case "Refused":
 *       return Effect.logWarning(`refused ${event.remote}: ${event.why} (${event.active} active)`)
 *     case "ConnectionClosed":
 *       return event.ending === "failed" ? Effect.logWarning(`${event.connection.label} failed`) : Effect.void
 *     default:
 *       return Effect.void
 *   }
 * }
 * const server = Tcp.serve({ port: 0, onEvent }, () => Effect.void)
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export type ServerEvent =
  | { readonly _tag: "Accepted"; readonly connection: ConnectionInfo }
  | {
      readonly _tag: "Refused"
      readonly remote: string
      /** `maxConnections` when the limit refused it, `shutdown` when the server was shutting down. */
      readonly why: "maxConnections" | "shutdown"
      readonly active: number
    }
  | {
      readonly _tag: "ConnectionClosed"
      readonly connection: ConnectionInfo
      readonly ending: Ending
      /** Why it failed (`failed`), or the limit it broke (`sendTimeout`, `tooSlow`: a `Timeout`). */
      readonly cause?: Cause.Cause<unknown> | undefined
      /** The outcome of the close strategy, when `ending` is `completed`. */
      readonly close?: Close.CloseOutcome | undefined
      readonly stats: Duplex.Stats
    }
  | { readonly _tag: "AcceptError"; readonly error: unknown }

/**
 * Counters of a server, since it started.
 *
 * **Example** (Logging a server's counters every minute)
 *
 * ```ts
 * import { Effect, Schedule } from "effect"
 * import { Tcp } from "fullduplex"
 *
 * const report = (server: Tcp.Server) =>
 *   server.stats.pipe(
 *     Effect.flatMap((stats: Tcp.ServerStats) =>
 *       Effect.log(`${stats.active} active, ${stats.completed} completed, ${stats.failed} failed`)
 *     ),
 *     Effect.repeat(Schedule.spaced("1 minute"))
 *   )
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface ServerStats {
  readonly accepted: number
  /** Connections from their accept to their `ConnectionClosed` event (the count `maxConnections` bounds). */
  readonly active: number
  readonly refused: number
  readonly completed: number
  readonly failed: number
  readonly idleTimeouts: number
  /** Connections cut by `sendTimeout`: their peer did not read. */
  readonly sendTimeouts: number
  /** Connections cut by `minRate`: their peer trickled. */
  readonly tooSlow: number
  readonly shutdownAborts: number
}

/**
 * A listening server. Its scope owns it: closing the scope is a graceful shutdown.
 *
 * **Example** (Connecting to a server on an ephemeral port)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Tcp } from "fullduplex"
 *
 * const program = Effect.scoped(
 *   Effect.gen(function* () {
 *     const server: Tcp.Server = yield* Tcp.serve({ port: 0 }, (conn) => conn.end)
 *     const conn = yield* Tcp.connect(server.address)
 *     yield* conn.end
 *     yield* server.shutdown
 *   })
 * )
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface Server {
  /** The bound address (the real port when you asked for port 0); pass it to {@link connect}. */
  readonly address: Address
  readonly label: string
  readonly stats: Effect.Effect<ServerStats>
  /**
   * The bytes moved over every connection so far, closed and open, as the server sees them: `inbound`
   * what its peers sent (and its handlers read), `outbound` what was written to them. `bytes` and
   * `blockedMillis` are sums over the connections; `buffered` and `blocked` describe the open ones now
   * (their sum, and whether any is held back); `peakBuffered` is the most one connection held.
   */
  readonly traffic: Effect.Effect<Duplex.Stats>
  /**
   * Graceful shutdown, the same that closing the scope runs: stop accepting, let handlers finish within
   * `shutdownGrace`, interrupt and abort the rest. Idempotent; completes when every connection is closed.
   */
  readonly shutdown: Effect.Effect<void>
}

/**
 * Serves a connection: what to do with it. Its result is ignored; a failure is reported and aborts the
 * connection.
 *
 * **Example** (A handler that answers each line it reads with its length)
 *
 * ```ts
 * import { Effect, Stream } from "effect"
 * import { type DuplexError, Tcp } from "fullduplex"
 *
 * const lengths: Tcp.Handler<DuplexError.DuplexError, never> = (conn) =>
 *   conn.readable.pipe(
 *     Stream.decodeText,
 *     Stream.splitLines,
 *     Stream.runForEach((line) => conn.write(new TextEncoder().encode(`${line.length}\n`)))
 *   )
 * const server = Tcp.serve({ port: 0 }, lengths)
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export type Handler<E, R> = (duplex: Duplex.Duplex, info: ConnectionInfo) => Effect.Effect<unknown, E, R>

/**
 * Options of {@link serve}.
 *
 * **Example** (A server on a Unix socket with tighter limits)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Close, Tcp } from "fullduplex"
 *
 * const options: Tcp.ServeOptions = {
 *   path: "/tmp/app.sock",
 *   maxConnections: 64,
 *   idleTimeout: "30 seconds",
 *   close: Close.halfClose({ timeout: "5 seconds" }),
 *   label: "app"
 * }
 * const server = Tcp.serve(options, (conn) => conn.end)
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface ServeOptions extends SocketOptions {
  /** Interface to bind. Default `"127.0.0.1"`. Ignored with `path`. */
  readonly host?: string | undefined
  /** Port; 0 (the default) picks an ephemeral one, readable from `server.address`. */
  readonly port?: number | undefined
  /** Listen on a Unix domain socket at this path instead of TCP. */
  readonly path?: string | undefined
  /** Listen backlog, ≥ 1. Default {@link DEFAULT_BACKLOG} (4096), clamped by the kernel (`net.core.somaxconn`). */
  readonly backlog?: number | undefined
  /**
   * Connections handled at once. Beyond it a new connection is closed at once, before any byte is read
   * or written, and counted in `stats.refused`. Default {@link DEFAULT_MAX_CONNECTIONS} (1024).
   */
  readonly maxConnections?: number | undefined
  /**
   * A connection with no byte either way for this long is aborted (the slow-loris guard).
   * Default {@link DEFAULT_IDLE_TIMEOUT} (60 s); `0` or `Infinity` disables it.
   */
  readonly idleTimeout?: Duration.Input | undefined
  /**
   * A connection whose pending write has not moved a byte for this long is aborted (a peer that does not
   * read, even while it sends). Default {@link DEFAULT_SEND_TIMEOUT} (60 s, nginx `send_timeout`); `0` or
   * `Infinity` disables it.
   */
  readonly sendTimeout?: Duration.Input | undefined
  /**
   * A connection that moves fewer bytes than this in a window is aborted (a peer that trickles).
   * Default {@link DEFAULT_MIN_RATE} (1 KiB per 60 s); `{ bytes: 0 }` disables it.
   */
  readonly minRate?: MinRate | undefined
  /**
   * Both directions of a connection held back for this long — its reads paused because the handler takes
   * no more, and a write the peer takes not one byte of — fails it with `StallDetected` (ending `failed`),
   * the two-way stall `Watchdog.guard` reports, found by the server's sweep at no cost per connection.
   * Default: off (`sendTimeout` still cuts it); `Echo.serve` sets it from its policy (10 s).
   */
  readonly stallTimeout?: Duration.Input | undefined
  /** How a connection is closed after its handler succeeds. Default `Close.lingering()`. */
  readonly close?: Close.Strategy | undefined
  /** How long handlers may run on after shutdown starts. Default {@link DEFAULT_SHUTDOWN_GRACE} (10 s). */
  readonly shutdownGrace?: Duration.Input | undefined
  /**
   * Receives every {@link ServerEvent}, each in a fiber of its own: the server never waits for it, so a
   * slow consumer holds back neither connections nor shutdown. Default: a connection failed by the
   * server's side (handler error, stall, failed close) is logged at warning level, a peer's reset at debug
   * level, the rest not at all.
   */
  readonly onEvent?: ((event: ServerEvent) => Effect.Effect<void>) | undefined
  /** Name for diagnostics. Default `"tcp server <address>"`. */
  readonly label?: string | undefined
}

/** The message of a cause's first error, on one line's worth of text. */
const describeCause = (cause: Cause.Cause<unknown>): string => {
  const error = Cause.squash(cause)
  return error instanceof Error ? error.message : String(error)
}

const isPeerReset = (cause: Cause.Cause<unknown>): boolean => {
  const error = Cause.squash(cause)
  return isDuplexError(error) && error.reason._tag === "Broken"
}

/**
 * The default `onEvent`: a connection that failed through the server's own doing (a handler error, a
 * stall, a failed close) is logged at warning level; a peer that reset is routine and logged at debug
 * level, and so is a connection cut by `sendTimeout` or `minRate`; accept errors at warning level; the
 * rest is not logged.
 *
 * **When to use**
 *
 * To keep the default logging in an `onEvent` of your own: handle the events you care about and pass the
 * rest to `Tcp.logEvent`.
 *
 * **Example** (Counting accepts, logging as by default)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Tcp } from "fullduplex"
 *
 * let accepted = 0
 * const onEvent = (event: Tcp.ServerEvent) =>
 *   event._tag === "Accepted" ? Effect.sync(() => void accepted++) : Tcp.logEvent(event)
 * ```
 *
 * @category utils
 * @since 0.1.0
 */
export const logEvent = (event: ServerEvent): Effect.Effect<void> => {
  if (event._tag === "ConnectionClosed" && event.cause !== undefined) {
    if (event.ending === "failed") {
      const line = `${event.connection.label}: connection failed: ${describeCause(event.cause)}`
      return isPeerReset(event.cause) ? Effect.logDebug(line) : Effect.logWarning(line)
    }
    // A peer that does not read or trickles: the server did its job in cutting it.
    return Effect.logDebug(`${event.connection.label}: connection cut: ${describeCause(event.cause)}`)
  }
  if (event._tag === "AcceptError") return Effect.logWarning(`accept failed: ${String(event.error)}`)
  return Effect.void
}

/**
 * Listens for connections and runs `handler` for each in its own fiber; the server lives until its
 * scope closes, which shuts it down gracefully.
 *
 * **When to use**
 *
 * For any TCP or Unix-socket server. The handler gets a {@link Duplex.Duplex}; when it succeeds the
 * connection is closed with the `close` strategy (lingering by default, so unread input never turns the
 * close into a reset that destroys the response).
 *
 * **Details**
 *
 * - Each handler runs in its own fiber. A failure (or defect) aborts only its connection and is
 *   reported as a `ConnectionClosed` event with `ending: "failed"`; the server goes on.
 * - Beyond `maxConnections`, new connections are closed at once and reported as `Refused`.
 * - Time limits, kept by one sweep per server (a tick of a tenth of the shortest limit, at most 1 s):
 *   `idleTimeout` (no byte either way, `ending: "idleTimeout"`), `sendTimeout` (a pending write that
 *   reaches the peer not one byte further: a peer that does not read, `ending: "sendTimeout"`) and
 *   `minRate` (too few bytes in a window: a peer that trickles, `ending: "tooSlow"`), each aborting the
 *   connection. Defaults: 60 s, 60 s, 1 KiB per 60 s. So one peer holds at most its connection slot, two
 *   `highWaterMark`s of buffer and the kernel's socket buffers, for at most a minute of doing nothing.
 *   `stallTimeout` (off by default) fails a connection whose two directions are both held back with
 *   `StallDetected`, as `Watchdog.guard` would, at no cost per connection.
 * - Shutdown (scope close or `server.shutdown`): stop accepting; handlers still running get
 *   `shutdownGrace` to finish (and close); the rest are interrupted and their connections aborted. A
 *   handler learns that shutdown started from `info.shuttingDown`, in time to tell its peer
 *   (`Shutdown.handler` sends the "going away" notice then).
 * - Listening errors are reason `ListenFailed`; bad options `InvalidOptions`.
 *
 * **Example** (A greeting server on an ephemeral port)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Tcp } from "fullduplex"
 *
 * const program = Effect.scoped(
 *   Effect.gen(function* () {
 *     const server = yield* Tcp.serve({ port: 0 }, (conn) => conn.write(new TextEncoder().encode("hello\n")))
 *     yield* Effect.log(`listening on ${JSON.stringify(server.address)}`)
 *     return yield* Effect.never
 *   })
 * )
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const serve = <E, R>(
  options: ServeOptions,
  handler: Handler<E, R>
): Effect.Effect<Server, DuplexError, Scope.Scope | R> =>
  Effect.gen(function* () {
    const requested: Address =
      options.path !== undefined
        ? { path: options.path }
        : { host: options.host ?? "127.0.0.1", port: options.port ?? 0 }
    let label = options.label ?? `tcp server ${describeAddress(requested)}`
    const backlog = options.backlog ?? DEFAULT_BACKLOG
    const maxConnections = options.maxConnections ?? DEFAULT_MAX_CONNECTIONS
    const idleMillis = millisOption(label, "idleTimeout", options.idleTimeout, DEFAULT_IDLE_TIMEOUT)
    const sendMillis = millisOption(label, "sendTimeout", options.sendTimeout, DEFAULT_SEND_TIMEOUT)
    const minRate = options.minRate ?? DEFAULT_MIN_RATE
    const windowMillis = millisOption(label, "minRate.window", minRate.window, DEFAULT_MIN_RATE_WINDOW)
    const stallMillis = millisOption(label, "stallTimeout", options.stallTimeout, Duration.zero)
    const graceMillis = millisOption(label, "shutdownGrace", options.shutdownGrace, DEFAULT_SHUTDOWN_GRACE)
    for (const bad of [
      checkAddress(label, requested),
      countOption(label, "backlog", backlog, 1),
      countOption(label, "maxConnections", maxConnections, 1),
      options.highWaterMark === undefined ? undefined : countOption(label, "highWaterMark", options.highWaterMark, 1),
      typeof idleMillis === "number" ? undefined : idleMillis,
      typeof sendMillis === "number" ? undefined : sendMillis,
      countOption(label, "minRate.bytes", minRate.bytes, 0),
      typeof windowMillis === "number" ? undefined : windowMillis,
      typeof stallMillis === "number" ? undefined : stallMillis,
      typeof graceMillis === "number" ? undefined : graceMillis
    ]) {
      if (bad !== undefined) return yield* bad
    }
    const grace = graceMillis as number
    const guard = ConnectionGuard.make({
      idleMillis: idleMillis as number,
      sendMillis: sendMillis as number,
      minBytes: minRate.bytes,
      windowMillis: windowMillis as number,
      stallMillis: stallMillis as number
    })
    yield* Effect.addFinalizer(() => Effect.sync(guard.close))
    const closeStrategy = options.close ?? Close.lingering()
    const onEvent = options.onEvent ?? logEvent
    /** The default `onEvent` does nothing with an `Accepted` event, nor with a close that has no cause. */
    const defaultEvents = options.onEvent === undefined
    const context = yield* Effect.context<R>()
    const run = Effect.runForkWith(context)
    // Events are handed to `onEvent` in a fiber of their own: a slow or stuck consumer of events never holds
    // a connection, or the shutdown, back. (With a synchronous `onEvent` they still arrive in order.)
    const eventFibers = new Set<Fiber.Fiber<void>>()
    const emitUnsafe = (event: ServerEvent): void => {
      let effect: Effect.Effect<void>
      try {
        effect = onEvent(event)
      } catch {
        return // an onEvent that throws instead of failing: its event is lost, as a failed one would be
      }
      if (effect === Effect.void) return // nothing to do (the default for most events): no fiber
      const fiber = run(Effect.ignoreCause(effect))
      if (fiber.pollUnsafe() !== undefined) return // a synchronous onEvent is done already
      eventFibers.add(fiber)
      fiber.addObserver(() => eventFibers.delete(fiber))
    }

    const counters = {
      accepted: 0,
      refused: 0,
      completed: 0,
      failed: 0,
      idleTimeouts: 0,
      sendTimeouts: 0,
      tooSlow: 0,
      shutdownAborts: 0
    }
    const fibers = new Set<Fiber.Fiber<void>>()
    let onEmpty: (() => void) | undefined
    let shuttingDown = false
    const shutdownStarted = Deferred.makeUnsafe<void>()
    const awaitShutdown = Deferred.await(shutdownStarted)
    let nextId = 0
    /** `host:port` of every accepted socket when the server listens on one address (saves a getsockname). */
    let localName: string | undefined
    /** Connections counted from accept to their `ConnectionClosed` event, so stats and events agree. */
    let active = 0
    const traffic = new Traffic()

    const clock = yield* Clock.Clock
    /** A scope per connection, unless the handler is one of ours that needs none. */
    const scoped = !isUnscoped(handler)
    const highWaterMark = options.highWaterMark ?? NodeDuplex.DEFAULT_HIGH_WATER_MARK_BYTES

    /**
     * One accepted connection: its record, its guard's target, and the steps of its fiber. A class made
     * per server, so that its methods are shared by every connection and each connection holds only its
     * fields (see "What one connection holds" in docs/ARCHITECTURE.md).
     */
    class Served implements ConnectionGuard.GuardTarget {
      /** Set once the end is counted and reported, whichever path gets there first. */
      private reported = false
      /** The guard's verdict, when the guard cut the connection, and the stats of a stall when it was found. */
      private verdict: ConnectionGuard.Verdict | undefined = undefined
      private stalled: Duplex.Stats | undefined = undefined
      fiber: Fiber.Fiber<void> | undefined = undefined
      watched: ConnectionGuard.Watched | undefined = undefined

      constructor(
        /** What the handler and the events are shown of the connection. */
        readonly info: ConnectionInfo,
        readonly duplex: NodeDuplex.NodeDuplex
      ) {}

      /** The handler, then the close strategy after a handler that succeeded, then the report. */
      program(): Effect.Effect<void, never, R> {
        let handling: Effect.Effect<unknown, E, R>
        try {
          handling = handler(this.duplex, this.info)
        } catch (defect) {
          handling = Effect.die(defect) // a handler that throws instead of returning an effect
        }
        const run = Effect.flatMap(Effect.exit(handling), (handled) =>
          Exit.isSuccess(handled)
            ? Effect.flatMap(Effect.exit(closeStrategy(this.duplex)), (closed) => this.finish(closed))
            : this.finish(handled)
        )
        return scoped ? Effect.scoped(run) : run
      }

      /** A failure of either the handler or the close strategy is the ending's cause. */
      private finish(closed: Exit.Exit<unknown, unknown>): Effect.Effect<void> {
        // One synchronous step, so that an interruption cannot fall between the abort and the report.
        return Effect.sync(() => {
          if (Exit.isSuccess(closed)) {
            this.report("completed", this.duplex.statsUnsafe(), { close: closed.value as Close.CloseOutcome })
          } else {
            this.duplex.close(false)
            this.report("failed", this.duplex.statsUnsafe(), { cause: closed.cause as Cause.Cause<unknown> })
          }
        })
      }

      /** The fiber is done: the adapter's end, and the report of an interrupted connection. */
      ended(): void {
        if (this.watched !== undefined) guard.unwatch(this.watched)
        // Interrupted by the guard (its verdict is here) or by the shutdown: the socket is reset.
        this.duplex.dispose()
        const stats = this.duplex.statsUnsafe()
        if (this.verdict === undefined) this.report("shutdown", stats, {})
        else this.report(ENDING_OF[this.verdict._tag], stats, verdictCause(this.info.label, this.verdict, this.stalled))
      }

      onVerdict(verdict: ConnectionGuard.Verdict): void {
        this.watched = undefined
        this.verdict = verdict
        // The stall's snapshot, before the abort clears what was blocked.
        if (verdict._tag === "stall") this.stalled = this.duplex.statsUnsafe()
        this.fiber?.interruptUnsafe()
      }

      /** Counts and reports the end of the connection, once. */
      private report(
        ending: Ending,
        stats: Duplex.Stats,
        extra: { cause?: Cause.Cause<unknown>; close?: Close.CloseOutcome }
      ): void {
        if (this.reported) return
        this.reported = true
        active--
        traffic.closed(this.duplex, stats)
        counters[COUNTER_OF[ending]]++
        if (!defaultEvents || extra.cause !== undefined)
          emitUnsafe({ _tag: "ConnectionClosed", connection: this.info, ending, stats, ...extra })
      }
    }

    const server = net.createServer({ allowHalfOpen: true, noDelay: options.noDelay ?? true })
    server.on("connection", (socket) => {
      socket.on("error", ignore) // until the Duplex takes over; a refused socket may still report a reset
      if (shuttingDown || active >= maxConnections) {
        counters.refused++
        const remote = remoteOf(socket, requested) // before destroy, which forgets the peer's address
        socket.destroy()
        emitUnsafe({
          _tag: "Refused",
          remote,
          why: shuttingDown ? "shutdown" : "maxConnections",
          active
        })
        return
      }
      counters.accepted++
      active++
      const remote = remoteOf(socket, requested)
      const connLabel = localName === undefined ? socketLabel(socket, requested) : `tcp ${localName}→${remote}`
      const duplex = NodeDuplex.makeUnsafe(socket, connLabel, highWaterMark, clock)
      const served = new Served({ id: ++nextId, remote, label: connLabel, shuttingDown: awaitShutdown }, duplex)
      traffic.opened(duplex)
      if (!defaultEvents) emitUnsafe({ _tag: "Accepted", connection: served.info })
      const fiber = run(served.program())
      served.fiber = fiber
      fibers.add(fiber)
      if (fiber.pollUnsafe() === undefined) served.watched = guard.watch(socket, served)
      fiber.addObserver(() => {
        served.ended()
        fibers.delete(fiber)
        if (fibers.size === 0) onEmpty?.()
      })
    })

    yield* Effect.callback<void, DuplexError>((resume) => {
      const onError = (err: Error) =>
        resume(
          Exit.fail(
            new DuplexError({
              reason: new ListenFailed({ label, address: describeAddress(requested), code: codeOf(err), cause: err })
            })
          )
        )
      server.once("error", onError)
      const listening = () => {
        server.off("error", onError)
        // From now on an error is about accepting (EMFILE, …), not about listening.
        server.on("error", (error) => emitUnsafe({ _tag: "AcceptError", error }))
        resume(Exit.void)
      }
      if ("path" in requested) server.listen({ path: requested.path, backlog }, listening)
      else server.listen({ host: requested.host, port: requested.port, backlog }, listening)
      return Effect.sync(() => server.close())
    })

    const bound = server.address()
    const address: Address =
      typeof bound === "string" || bound === null
        ? { path: "path" in requested ? requested.path : String(bound) }
        : { host: bound.address, port: bound.port }
    if (options.label === undefined) label = `tcp server ${describeAddress(address)}`
    if (typeof bound === "object" && bound !== null && !WILDCARD_HOSTS.has(bound.address))
      localName = `${bound.address}:${bound.port}`

    const drained = Effect.callback<void>((resume) => {
      if (fibers.size === 0) return resume(Exit.void)
      onEmpty = () => resume(Exit.void)
      return Effect.sync(() => {
        onEmpty = undefined
      })
    })
    const shutdownDone = Deferred.makeUnsafe<void>()
    const shutdown: Effect.Effect<void> = Effect.suspend(() => {
      if (shuttingDown) return Deferred.await(shutdownDone)
      shuttingDown = true
      Deferred.doneUnsafe(shutdownStarted, Exit.void)
      return Effect.gen(function* () {
        // Stop accepting; connections already accepted go on. The callback comes once every socket is gone.
        const closed = Deferred.makeUnsafe<void>()
        server.close(() => Deferred.doneUnsafe(closed, Exit.void))
        yield* Effect.timeoutOption(drained, grace)
        yield* Fiber.interruptAll([...fibers])
        yield* Effect.timeoutOption(Deferred.await(closed), SOCKETS_GONE_MILLIS)
        // Events still being delivered get a moment to finish; a consumer that hangs is not waited for.
        yield* Effect.timeoutOption(Fiber.awaitAll([...eventFibers]), EVENTS_GONE_MILLIS)
        yield* Fiber.interruptAll([...eventFibers])
      }).pipe(Effect.ensuring(Deferred.done(shutdownDone, Exit.void)), Effect.uninterruptible)
    })
    yield* Effect.addFinalizer(() => shutdown)

    return {
      address,
      label,
      stats: Effect.sync(() => ({ ...counters, active })),
      traffic: traffic.snapshot,
      shutdown
    } satisfies Server
  })

const ignore = () => {}

/** Listening on these, a connection's local address is whichever the peer reached. */
const WILDCARD_HOSTS: ReadonlySet<string> = new Set(["0.0.0.0", "::", "::0"])

/** After shutdown, how long to wait for Node to report every socket closed (they are destroyed by then). */
const SOCKETS_GONE_MILLIS = 1000

const zeroDirection: Duplex.DirectionStats = {
  bytes: 0,
  buffered: 0,
  peakBuffered: 0,
  blocked: false,
  blockedMillis: 0
}
const zeroStats: Duplex.Stats = { outbound: zeroDirection, inbound: zeroDirection }

const remoteOf = (socket: net.Socket, address: Address): string =>
  "path" in address ? address.path : `${socket.remoteAddress}:${socket.remotePort}`

const DEFAULT_MIN_RATE_WINDOW: Duration.Duration = Duration.seconds(60)

const COUNTER_OF = {
  completed: "completed",
  failed: "failed",
  idleTimeout: "idleTimeouts",
  sendTimeout: "sendTimeouts",
  tooSlow: "tooSlow",
  shutdown: "shutdownAborts"
} as const satisfies Record<Ending, keyof Omit<ServerStats, "accepted" | "active" | "refused">>

/** How a connection the guard cut ends: a stall is a failure, as `Watchdog.guard`'s is. */
const ENDING_OF = {
  idle: "idleTimeout",
  send: "sendTimeout",
  rate: "tooSlow",
  stall: "failed"
} as const satisfies Record<ConnectionGuard.Verdict["_tag"], Ending>

/** The `Timeout` a send or rate verdict reports (the idle limit has always reported none). */
const verdictCause = (
  label: string,
  verdict: ConnectionGuard.Verdict,
  stalled: Duplex.Stats | undefined
): { cause?: Cause.Cause<unknown> } => {
  switch (verdict._tag) {
    case "idle":
      return {}
    case "stall": {
      const stats = stalled ?? zeroStats
      return {
        cause: Cause.fail(
          new DuplexError({
            reason: new StallDetected({
              label: `${label}: both directions at a zero window (the peer neither reads nor stops writing)`,
              stalledMillis: verdict.millis,
              directions: [stalledDirection(label, "outbound", stats), stalledDirection(label, "inbound", stats)]
            })
          })
        )
      }
    }
    case "send":
      return {
        cause: Cause.fail(
          new DuplexError({
            reason: new Timeout({
              label,
              operation: `send (${verdict.waiting} bytes waiting for a peer that reads nothing)`,
              timeoutMillis: verdict.millis,
              direction: "outbound",
              bytes: verdict.written
            })
          })
        )
      }
    case "rate":
      return {
        cause: Cause.fail(
          new DuplexError({
            reason: new Timeout({
              label,
              operation: `minimum rate (${verdict.minBytes} bytes per window; ${verdict.moved} moved, ${verdict.read} read and ${verdict.written} written in all)`,
              timeoutMillis: verdict.windowMillis
            })
          })
        )
      }
  }
}
