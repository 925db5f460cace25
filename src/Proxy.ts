/**
 * A TCP proxy that keeps half-closed conversations whole.
 *
 * A proxy that tears down both directions at the first FIN loses the reply to a client that half-closed
 * after its request, and one that closes a leg with unread input resets bytes still in flight. `Proxy`
 * relays each direction on its own ({@link Duplex.splice}): a FIN from one side becomes a half-close on
 * the other once every byte already read from it has been written, while the other direction keeps
 * flowing; the pair is closed only when both directions are done, and then with a lingering close on
 * both legs.
 *
 * @module fullduplex/Proxy
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FiberSet from "effect/FiberSet"
import type * as Scope from "effect/Scope"
import * as Close from "./Close.js"
import * as Duplex from "./Duplex.js"
import type { DuplexError } from "./DuplexError.js"
import { connectInto, Leg } from "./internal/connect.js"
import { checkConnectOptions, connectLabel, EVENTS_GONE_MILLIS, unscoped } from "./internal/tcpOptions.js"
import * as Tcp from "./Tcp.js"

/**
 * What a proxy reports: every event of its listening server (see `Tcp.ServerEvent`), and the upstream
 * connections that could not be made.
 *
 * **Details**
 *
 * `UpstreamConnectFailed` comes before the client's own `ConnectionClosed`: the client was closed cleanly
 * (lingering close: FIN, then its input discarded until its EOF), so it reads EOF, not a reset.
 *
 * **Example** (Counting failed upstream connects, logging the rest as by default)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Proxy, Tcp } from "fullduplex"
 *
 * let upstreamFailures = 0
 * const onEvent = (event: Proxy.ProxyEvent): Effect.Effect<void> =>
 *   event._tag === "UpstreamConnectFailed" ? Effect.sync(() => void upstreamFailures++) : Tcp.logEvent(event)
 * const proxy = Proxy.serve({ listen: { port: 0 }, target: { port: 8080 }, onEvent })
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export type ProxyEvent =
  | Tcp.ServerEvent
  | {
      readonly _tag: "UpstreamConnectFailed"
      readonly connection: Tcp.ConnectionInfo
      /** Reason `ConnectFailed` (nothing listens, the connect timed out) or `InvalidOptions`. */
      readonly error: DuplexError
    }

/**
 * Options of {@link serve}.
 *
 * **Example** (A proxy that half-closes its upstream leg)
 *
 * ```ts
 * import { Close, Proxy } from "fullduplex"
 *
 * const options: Proxy.ServeOptions = {
 *   listen: { port: 8443, maxConnections: 256 },
 *   target: { host: "backend.example", port: 443, connectTimeout: "3 seconds" },
 *   upstreamClose: Close.halfClose({ timeout: "5 seconds" })
 * }
 * const proxy = Proxy.serve(options)
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface ServeOptions {
  /** Where to listen, and the server's limits: backlog, connections, idle timeout, the client leg's close. */
  readonly listen: Omit<Tcp.ServeOptions, "onEvent">
  /** Where each client is relayed to: a TCP address or a Unix socket path, with connect options. */
  readonly target: Tcp.ConnectOptions
  /** How the upstream leg is closed once both directions are done. Default `Close.lingering()`. */
  readonly upstreamClose?: Close.Strategy | undefined
  /**
   * Receives every {@link ProxyEvent}, each in a fiber of its own (see `Tcp.ServeOptions.onEvent`).
   * Default: server events as `Tcp.serve` logs them, and each failed upstream connect at warning level.
   */
  readonly onEvent?: ((event: ProxyEvent) => Effect.Effect<void>) | undefined
}

const logUpstreamFailure = (error: DuplexError, connection: Tcp.ConnectionInfo): Effect.Effect<void> =>
  Effect.logWarning(`${connection.label}: upstream connect failed: ${error.message}`)

const defaultOnEvent = (event: ProxyEvent): Effect.Effect<void> =>
  event._tag === "UpstreamConnectFailed" ? logUpstreamFailure(event.error, event.connection) : Tcp.logEvent(event)

/**
 * Relays one client connection to `target`: connects upstream, splices, closes the upstream leg.
 *
 * **When to use**
 *
 * Inside your own `Tcp.serve` handler, to proxy some connections and not others, or over connections that
 * do not come from `Tcp.serve` at all. {@link serve} is this handler on a server.
 *
 * **Details**
 *
 * Upstream is connected as `Tcp.connect(target)` connects, and the relay owns that leg: it is closed when
 * the relay ends, however it ends (no scope is needed). The two directions are
 * copied by {@link Duplex.splice}: a FIN from either side reaches the other after every byte read before
 * it, and the other direction goes on. When both are done, `upstreamClose` (lingering by default) closes
 * the upstream leg; the client leg is yours (with `Tcp.serve`, its `close` strategy). If the upstream
 * connect fails, `onUpstreamFailure` is told (by default the failure is logged at warning level) and the
 * relay succeeds without relaying, so the server closes the client cleanly.
 *
 * **Interruption**
 *
 * Interrupted while relaying, it aborts both legs; while connecting, it destroys the half-made upstream
 * socket (the client leg is then the caller's to close).
 *
 * **Closing**
 *
 * A failure in either direction (a reset, a write to a closed peer) aborts both legs and fails the relay
 * with it.
 *
 * **Example** (Proxying only connections from the local machine)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Close, Proxy, Tcp } from "fullduplex"
 *
 * const relay = Proxy.relay({ target: { host: "127.0.0.1", port: 8080 } })
 * const server = Tcp.serve({ port: 0 }, (client, info) =>
 *   info.remote.startsWith("127.") ? relay(client, info) : Effect.asVoid(Close.abort(client))
 * )
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const relay = (options: {
  readonly target: Tcp.ConnectOptions
  readonly upstreamClose?: Close.Strategy | undefined
  readonly onUpstreamFailure?: ((error: DuplexError, info: Tcp.ConnectionInfo) => Effect.Effect<void>) | undefined
}): ((
  client: Duplex.Duplex,
  info: Tcp.ConnectionInfo
) => Effect.Effect<Duplex.SpliceResult | undefined, DuplexError>) => {
  const upstreamClose = options.upstreamClose ?? Close.lingering()
  const onUpstreamFailure = options.onUpstreamFailure ?? logUpstreamFailure
  // The upstream leg's label, shared by every connection of the relay (`tcp →host:port`, or the target's
  // own `label`): the client leg's label names the connection.
  const label = connectLabel(options.target)
  // Checked once: a bad target fails every connection alike (`onUpstreamFailure` with `InvalidOptions`).
  const timeoutMillis = checkConnectOptions(label, options.target, Tcp.DEFAULT_CONNECT_TIMEOUT)
  return (client, info) =>
    Effect.suspend(() => {
      if (typeof timeoutMillis !== "number") return Effect.as(onUpstreamFailure(timeoutMillis, info), undefined)
      // The upstream leg is the relay's for exactly as long as it runs: no scope of its own, it is closed
      // (its half-made socket destroyed, or its duplex disposed) however the relay ends.
      const leg = new Leg()
      // The connect's effects are made inside the `suspend`, so that once it is done nothing holds them: the
      // `ensuring` frame, which lives as long as the relay, holds only the `suspend` (see "What one
      // connection holds" in docs/ARCHITECTURE.md).
      const relaying = Effect.suspend(() =>
        Effect.matchEffect(connectInto(leg, options.target, timeoutMillis, label), {
          onFailure: (error) => Effect.as(onUpstreamFailure(error, info), undefined),
          onSuccess: (upstream) =>
            Effect.flatMap(Duplex.splice(client, upstream), (relayed) => Effect.as(upstreamClose(upstream), relayed))
        })
      )
      return Effect.ensuring(
        relaying,
        Effect.sync(() => leg.release())
      )
    })
}

/**
 * Listens and relays every connection to `target`, with half-close propagation and lingering close on
 * both legs.
 *
 * **When to use**
 *
 * For a TCP (or Unix-socket) forwarder that must not lose the end of a conversation: a client that sends
 * its request and half-closes still gets the whole reply, and an upstream that half-closes first still
 * gets the rest of the client's bytes.
 *
 * **Details**
 *
 * A `Tcp.serve` server whose handler is {@link relay}: limits (`maxConnections`, `idleTimeout`, backlog),
 * graceful shutdown and the client leg's close strategy come from `listen`. Each connection's upstream is a
 * fresh `Tcp.connect(target)`. Per direction, memory is bounded by the two legs' `highWaterMark`s: a slow
 * reader on one side holds back reading from the other side, never the opposite direction. A failed
 * upstream connect is reported (`UpstreamConnectFailed`) and the client closed cleanly; a failure in
 * either direction aborts both legs and is reported as the connection's failure. A `target` with a bad
 * option fails `InvalidOptions` before the proxy listens.
 *
 * **Example** (A forwarder from an ephemeral port to a local service)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Proxy } from "fullduplex"
 *
 * const program = Effect.scoped(
 *   Effect.gen(function* () {
 *     const server = yield* Proxy.serve({
 *       listen: { host: "127.0.0.1", port: 0 },
 *       target: { host: "127.0.0.1", port: 8080 }
 *     })
 *     yield* Effect.log(`proxying from ${JSON.stringify(server.address)}`)
 *     return yield* Effect.never
 *   })
 * )
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const serve = (options: ServeOptions): Effect.Effect<Tcp.Server, DuplexError, Scope.Scope> =>
  Effect.gen(function* () {
    // A bad target fails here, once, rather than every connection with `UpstreamConnectFailed`.
    const badTarget = checkConnectOptions(connectLabel(options.target), options.target, Duration.zero)
    if (typeof badTarget !== "number") return yield* badTarget
    const onEvent = options.onEvent ?? defaultOnEvent
    // `UpstreamConnectFailed` events are delivered as the server's own are: each in a fiber of its own that
    // nothing waits for; at shutdown (after the server's, as finalizers run in reverse) those still running
    // get a moment to finish, then are interrupted.
    const deliveries = yield* FiberSet.make<void>()
    yield* Effect.addFinalizer(() => Effect.timeoutOption(FiberSet.awaitEmpty(deliveries), EVENTS_GONE_MILLIS))
    return yield* Tcp.serve(
      { ...options.listen, onEvent },
      // The relay's upstream lives in a scope of its own: the connection needs none from the server.
      unscoped(
        relay({
          target: options.target,
          upstreamClose: options.upstreamClose,
          onUpstreamFailure: (error, connection) =>
            Effect.asVoid(FiberSet.run(deliveries, onEvent({ _tag: "UpstreamConnectFailed", connection, error })))
        })
      )
    )
  })
