/**
 * fullduplex: streaming I/O primitives on Effect 4 that cannot deadlock.
 *
 * @module fullduplex
 * @since 0.1.0
 */

/**
 * The duplex model, in-memory pairs, adapters and the concurrent combinators.
 *
 * @since 0.1.0
 */
export * as Duplex from "./Duplex.js"

/**
 * The one error type, `DuplexError`, and its reasons.
 *
 * @since 0.1.0
 */
export * as DuplexError from "./DuplexError.js"

/**
 * Close strategies: lingering close, half-close, abort.
 *
 * @since 0.1.0
 */
export * as Close from "./Close.js"

/**
 * TCP and Unix-socket connections and servers.
 *
 * @since 0.1.0
 */
export * as Tcp from "./Tcp.js"

/**
 * Stall detection on a live duplex.
 *
 * @since 0.1.0
 */
export * as Watchdog from "./Watchdog.js"

/**
 * The safe echo server and its policies.
 *
 * @since 0.1.0
 */
export * as Echo from "./Echo.js"

/**
 * Child processes as duplexes: spawn, pipeThrough, communicate, pipeline, safe termination.
 *
 * @since 0.1.0
 */
export * as Subprocess from "./Subprocess.js"

/**
 * A TCP proxy with half-close propagation and lingering close on both legs.
 *
 * @since 0.1.0
 */
export * as Proxy from "./Proxy.js"

/**
 * Length-prefixed messages (data and control frames) over a duplex, with a maximum frame size.
 *
 * @since 0.1.0
 */
export * as Framing from "./Framing.js"

/**
 * The asymmetric terminal handshake: "going away" notice, drain, grace, forced close.
 *
 * @since 0.1.0
 */
export * as Shutdown from "./Shutdown.js"

/**
 * A flow-controlled stream multiplexer, wire-compatible with yamux; every stream is a duplex.
 *
 * @since 0.1.0
 */
export * as Mux from "./Mux.js"
