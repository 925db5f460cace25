/**
 * fullduplex: streaming I/O primitives on Effect 4 that cannot deadlock.
 *
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
