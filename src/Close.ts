/**
 * Close strategies: how to end a connection without destroying bytes that are still in flight.
 *
 * Closing a TCP socket while unread input sits in its receive buffer makes the kernel send RST, and an
 * RST can overtake (destroy) response bytes the peer has not read yet: the peer sees `ECONNRESET` before
 * the end of a complete response. {@link lingering} is the cure the established servers use: shut down
 * the write side, then read and discard input until the peer's EOF or a timeout, then close.
 *
 * A strategy is a function `(duplex) => Effect<CloseOutcome, DuplexError>`; every function here has a
 * data-first form (`Close.lingering(duplex, options)`) and a strategy form (`Close.lingering(options)`)
 * for `Tcp.serve`'s `close` option.
 *
 * @module fullduplex/Close
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import { dual } from "effect/Function"
import * as Lazy from "./internal/lazyModules.js"
import { type Duplex, isDuplex } from "./Duplex.js"
import { type DuplexError, DuplexError as DuplexErrorClass, Timeout } from "./DuplexError.js"
import { inboundPipeOf } from "./internal/bytePipe.js"

/**
 * How a close ended.
 *
 * **Details**
 *
 * - `eof`: the peer half-closed too; every byte we wrote was handed to the transport before our FIN, and
 *   nothing unread was left to trigger a reset.
 * - `lingerTimeout`: the peer sent nothing for `lingerTimeout`; the connection was aborted.
 * - `maxLinger`: the whole close took longer than `maxLinger`; the connection was aborted.
 * - `reset`: the peer aborted (RST) while we were discarding its input; our FIN had already been sent.
 * - `aborted`: closed with {@link abort}.
 *
 * `discardedBytes` counts the input read and thrown away while closing; `millis` the time the close took.
 *
 * **Example** (Logging how a close ended)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Close, Duplex } from "fullduplex"
 *
 * const closeAndLog = (conn: Duplex.Duplex) =>
 *   Close.lingering(conn).pipe(
 *     Effect.tap((outcome: Close.CloseOutcome) =>
 *       Effect.log(`${outcome.ending} after ${outcome.millis} ms, ${outcome.discardedBytes} bytes discarded`)
 *     )
 *   )
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface CloseOutcome {
  readonly ending: "eof" | "lingerTimeout" | "maxLinger" | "reset" | "aborted"
  readonly discardedBytes: number
  readonly millis: number
}

/**
 * A way to close a duplex, as `Tcp.serve`'s `close` option takes it.
 *
 * **Example** (A strategy of one's own: half-close for a while, then abort)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Close, Tcp } from "fullduplex"
 *
 * const halfCloseOrAbort: Close.Strategy = (conn) =>
 *   Close.halfClose(conn, { timeout: "1 second" }).pipe(Effect.catch(() => Close.abort(conn)))
 *
 * const server = Tcp.serve({ port: 0, close: halfCloseOrAbort }, (conn) => conn.write(new Uint8Array([1])))
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export type Strategy = (duplex: Duplex) => Effect.Effect<CloseOutcome, DuplexError>

/**
 * Options of {@link lingering}.
 *
 * **Example** (A server that lingers briefly)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Close, Tcp } from "fullduplex"
 *
 * const options: Close.LingeringOptions = { lingerTimeout: "1 second", maxLinger: "5 seconds" }
 * const server = Tcp.serve({ port: 0, close: Close.lingering(options) }, () => Effect.void)
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface LingeringOptions {
  /** How long to wait for the next input byte before giving up. Default {@link DEFAULT_LINGER_TIMEOUT} (5 s). */
  readonly lingerTimeout?: Duration.Input | undefined
  /** The most the whole close (flush, FIN, discard) may take. Default {@link DEFAULT_MAX_LINGER} (30 s). */
  readonly maxLinger?: Duration.Input | undefined
}

/**
 * How long {@link lingering} waits for more input: 5 s, nginx's `lingering_timeout` default
 * (nginx.org/en/docs/http/ngx_http_core_module.html#lingering_timeout). Apache httpd waits 2 s per read
 * (`SECONDS_TO_LINGER` in `server/connection.c`); fullduplex takes the more patient of the two.
 *
 * **Example** (Lingering half as long as the default)
 *
 * ```ts
 * import { Duration } from "effect"
 * import { Close } from "fullduplex"
 *
 * const strategy = Close.lingering({ lingerTimeout: Duration.toMillis(Close.DEFAULT_LINGER_TIMEOUT) / 2 })
 * ```
 *
 * @category constants
 * @since 0.1.0
 */
export const DEFAULT_LINGER_TIMEOUT: Duration.Duration = Duration.seconds(5)

/**
 * The most {@link lingering} spends in all: 30 s, the value both nginx (`lingering_time`) and Apache
 * httpd (`MAX_SECS_TO_LINGER`) use.
 *
 * **Example** (Keeping the default bound, with a shorter wait per read)
 *
 * ```ts
 * import { Close } from "fullduplex"
 *
 * const strategy = Close.lingering({ lingerTimeout: "1 second", maxLinger: Close.DEFAULT_MAX_LINGER })
 * ```
 *
 * @category constants
 * @since 0.1.0
 */
export const DEFAULT_MAX_LINGER: Duration.Duration = Duration.seconds(30)

/**
 * How long {@link halfClose} waits for the peer's EOF by default: 30 s.
 *
 * **Example** (Waiting twice as long as the default for the peer's EOF)
 *
 * ```ts
 * import { Duration } from "effect"
 * import { Close } from "fullduplex"
 *
 * const strategy = Close.halfClose({ timeout: Duration.toMillis(Close.DEFAULT_HALF_CLOSE_TIMEOUT) * 2 })
 * ```
 *
 * @category constants
 * @since 0.1.0
 */
export const DEFAULT_HALF_CLOSE_TIMEOUT: Duration.Duration = Duration.seconds(30)

/** Discards the readable side, counting bytes and the time of the last one, until EOF. */
const discard = (duplex: Duplex, progress: { bytes: number; lastAt: number }, now: () => number) =>
  Lazy.Stream().runForEachArray(duplex.readable, (chunks) => {
    for (const chunk of chunks) progress.bytes += chunk.length
    progress.lastAt = now()
    return Effect.void
  })

/** Completes once `idleMillis` pass with no new byte in `progress`. */
const idleFor = (idleMillis: number, progress: { lastAt: number }, now: () => number): Effect.Effect<void> =>
  Effect.suspend(() => {
    const left = progress.lastAt + idleMillis - now()
    return left <= 0 ? Effect.void : Effect.flatMap(Effect.sleep(left), () => idleFor(idleMillis, progress, now))
  })

/**
 * Each function below is dual by its first argument: a Duplex runs the close, anything else (options or
 * nothing) returns the Strategy.
 */
const isCloseCall = (args: IArguments): boolean => isDuplex(args[0])

const DEFAULT_LINGER_MILLIS = Duration.toMillis(DEFAULT_LINGER_TIMEOUT)
const DEFAULT_MAX_LINGER_MILLIS = Duration.toMillis(DEFAULT_MAX_LINGER)

const lingeringImpl = (duplex: Duplex, options: LingeringOptions = {}): Effect.Effect<CloseOutcome, DuplexError> =>
  Effect.suspend(() => {
    // The usual close of a handler that read to the peer's EOF: nothing to discard and nothing left to
    // flush, so the FIN is all there is to do, with no timer and no race (and, on this path of every
    // short connection, nothing else made).
    const inbound = inboundPipeOf(duplex)
    if (inbound !== undefined && inbound.writerState === "ended" && inbound.buffered === 0) {
      return Effect.flatMap(duplex.stats, (stats) =>
        stats.outbound.buffered === 0 ? finOnly(duplex) : lingerFully(duplex, options)
      )
    }
    return lingerFully(duplex, options)
  })

/** `end`, as a close that found the peer's EOF already there. */
const finOnly = (duplex: Duplex): Effect.Effect<CloseOutcome, DuplexError> =>
  Effect.clockWith((clock) => {
    const start = clock.currentTimeMillisUnsafe()
    return Effect.map(duplex.end, () => ({
      ending: "eof" as const,
      discardedBytes: 0,
      millis: clock.currentTimeMillisUnsafe() - start
    }))
  })

const lingerFully = (duplex: Duplex, options: LingeringOptions): Effect.Effect<CloseOutcome, DuplexError> =>
  Effect.gen(function* () {
    const clock = yield* Clock.Clock
    const now = () => clock.currentTimeMillisUnsafe()
    const start = now()
    const progress = { bytes: 0, lastAt: start }
    const outcome = (ending: CloseOutcome["ending"]): CloseOutcome => ({
      ending,
      discardedBytes: progress.bytes,
      millis: now() - start
    })

    const lingerMillis =
      options.lingerTimeout === undefined ? DEFAULT_LINGER_MILLIS : Duration.toMillis(options.lingerTimeout)
    const maxMillis = options.maxLinger === undefined ? DEFAULT_MAX_LINGER_MILLIS : Duration.toMillis(options.maxLinger)
    const linger: Effect.Effect<CloseOutcome, DuplexError> = Effect.gen(function* () {
      yield* duplex.end // flush everything accepted, then FIN
      progress.lastAt = now()
      // Reading is what keeps the receive buffer empty, so that the final close sends FIN and not RST.
      return yield* Effect.raceFirst(
        discard(duplex, progress, now).pipe(
          Effect.map(() => outcome("eof")),
          Effect.catchReason("DuplexError", "Broken", () => Effect.succeed(outcome("reset")))
        ),
        Effect.map(idleFor(lingerMillis, progress, now), () => outcome("lingerTimeout"))
      )
    })

    const result = yield* Effect.timeoutOrElse(linger, {
      duration: maxMillis,
      orElse: () => Effect.succeed(outcome("maxLinger"))
    })
    if (result.ending === "lingerTimeout" || result.ending === "maxLinger") yield* duplex.abort
    return result
  })

/**
 * Closes like Apache httpd's and nginx's lingering close: flush and `end` (FIN), then read and discard
 * input until the peer's EOF, or until no byte arrives for `lingerTimeout`, or `maxLinger` passes in all;
 * on a timeout the connection is aborted.
 *
 * **When to use**
 *
 * Whenever a server closes a connection whose peer may still be sending: a response to a request it did
 * not read in full, an error reply, a refusal. It is the default close of `Tcp.serve`.
 *
 * **Details**
 *
 * Defaults: `lingerTimeout` 5 s (nginx `lingering_timeout`; Apache waits 2 s), `maxLinger` 30 s (nginx
 * `lingering_time`, Apache `MAX_SECS_TO_LINGER`). Succeeds with a {@link CloseOutcome}; a peer reset while
 * discarding is outcome `reset`, not an error, since our FIN was already sent.
 *
 * **Gotchas**
 *
 * On a timeout the duplex is aborted, but a TCP socket that has already sent its FIN cannot send RST
 * (Node and libuv close it instead): the kernel resets only if unread input remains, so the peer may
 * see EOF and then `EPIPE`/`ECONNRESET` on its next write.
 *
 * **Interruption**
 *
 * Interrupting the close leaves the duplex as it was at that moment (written and possibly half-closed);
 * close its scope or `abort` it.
 *
 * **Closing**
 *
 * Fails with the error of `end` when the write side cannot be flushed (`Broken` if the peer reset first,
 * `Closed` if you had aborted).
 *
 * **Example** (Answering without reading the whole request)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Close, Duplex } from "fullduplex"
 *
 * const answer = (conn: Duplex.Duplex) =>
 *   Effect.gen(function* () {
 *     yield* conn.write(new TextEncoder().encode("413 request too large\n"))
 *     return yield* Close.lingering(conn, { lingerTimeout: "2 seconds" })
 *   })
 * ```
 *
 * @category strategies
 * @since 0.1.0
 */
export const lingering: {
  (options?: LingeringOptions): Strategy
  (duplex: Duplex, options?: LingeringOptions): Effect.Effect<CloseOutcome, DuplexError>
} = dual(isCloseCall, lingeringImpl)

/**
 * Options of {@link halfClose}.
 *
 * **Example** (Half-closing every served connection)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Close, Tcp } from "fullduplex"
 *
 * const options: Close.HalfCloseOptions = { timeout: "10 seconds" }
 * const server = Tcp.serve({ port: 0, close: Close.halfClose(options) }, () => Effect.void)
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface HalfCloseOptions {
  /** The most the flush, FIN and wait for the peer's EOF may take. Default 30 s. */
  readonly timeout?: Duration.Input | undefined
}

const halfCloseImpl = (duplex: Duplex, options: HalfCloseOptions = {}): Effect.Effect<CloseOutcome, DuplexError> =>
  Effect.gen(function* () {
    const timeoutMillis = Duration.toMillis(options.timeout ?? DEFAULT_HALF_CLOSE_TIMEOUT)
    const clock = yield* Clock.Clock
    const now = () => clock.currentTimeMillisUnsafe()
    const start = now()
    const progress = { bytes: 0, lastAt: start }
    return yield* Effect.andThen(duplex.end, discard(duplex, progress, now)).pipe(
      Effect.as<CloseOutcome>({ ending: "eof", discardedBytes: 0, millis: 0 }),
      Effect.map((o) => ({ ...o, discardedBytes: progress.bytes, millis: now() - start })),
      Effect.timeoutOrElse({
        duration: timeoutMillis,
        orElse: () =>
          Effect.andThen(
            duplex.abort,
            Exit.fail(
              new DuplexErrorClass({
                reason: new Timeout({
                  label: duplex.label,
                  operation: "half-close (end, then read to the peer's EOF)",
                  timeoutMillis,
                  direction: "inbound",
                  bytes: progress.bytes
                })
              })
            )
          )
      })
    )
  })

/**
 * Half-closes and waits for the peer to do the same: `end` (flush, then FIN), then read to the peer's
 * EOF within `timeout`, discarding what arrives.
 *
 * **When to use**
 *
 * The clean end of a client: after the last request, `halfClose` tells the server "no more" and waits for
 * its side to finish. (Read the responses yourself first; this discards whatever is still unread.)
 *
 * **Details**
 *
 * Fails with reason `Timeout` (and aborts the duplex) when the EOF does not arrive in time, or with the
 * error of `end` or of the read (`Broken` on a reset). Succeeds with outcome `eof`.
 *
 * **Interruption**
 *
 * The duplex is left as it was; close its scope or `abort` it.
 *
 * **Closing**
 *
 * A reset by the peer fails with `Broken`; your own earlier `abort` fails with `Closed`.
 *
 * **Example** (A client's clean shutdown)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Close, Tcp } from "fullduplex"
 *
 * const program = Effect.scoped(
 *   Effect.gen(function* () {
 *     const conn = yield* Tcp.connect({ host: "127.0.0.1", port: 4000 })
 *     yield* conn.write(new TextEncoder().encode("bye\n"))
 *     return yield* Close.halfClose(conn, { timeout: "5 seconds" })
 *   })
 * )
 * ```
 *
 * @category strategies
 * @since 0.1.0
 */
export const halfClose: {
  (options?: HalfCloseOptions): Strategy
  (duplex: Duplex, options?: HalfCloseOptions): Effect.Effect<CloseOutcome, DuplexError>
} = dual(isCloseCall, halfCloseImpl)

const abortImpl = (duplex: Duplex): Effect.Effect<CloseOutcome> =>
  Effect.as(duplex.abort, { ending: "aborted", discardedBytes: 0, millis: 0 } as const)

/**
 * Closes at once: `duplex.abort` (RST for a socket). Never blocks, never fails.
 *
 * **When to use**
 *
 * When the peer is hostile or the connection is broken anyway; the peer may lose bytes still in flight.
 *
 * **Example** (Cutting a connection)
 *
 * ```ts
 * import { Close, Duplex } from "fullduplex"
 *
 * const cut = (conn: Duplex.Duplex) => Close.abort(conn)
 * const strategy: Close.Strategy = Close.abort()
 * ```
 *
 * @category strategies
 * @since 0.1.0
 */
export const abort: {
  (): Strategy
  (duplex: Duplex): Effect.Effect<CloseOutcome>
} = dual(isCloseCall, abortImpl)
