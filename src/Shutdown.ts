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
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import type * as Scope from "effect/Scope"
import type { Duplex } from "./Duplex.js"
import { Closed, DuplexError, NotProcessed, ProtocolError, Timeout } from "./DuplexError.js"
import * as Framing from "./Framing.js"
import { invalidOptions } from "./internal/errors.js"
import * as Tcp from "./Tcp.js"

/**
 * The payload of the "going away" control frame: one byte, `0x01`.
 *
 * @category constants
 * @since 0.1.0
 */
export const GOING_AWAY: Uint8Array = Uint8Array.of(0x01)

/**
 * How long a server waits, after its notice, for the client to half-close: 10 s, the same as
 * `Tcp.DEFAULT_SHUTDOWN_GRACE` (and Kubernetes' default termination grace is 30 s, of which a server should
 * keep some for itself).
 *
 * @category constants
 * @since 0.1.0
 */
export const DEFAULT_GRACE: Duration.Duration = Duration.seconds(10)

/**
 * How many requests a client queues before `request` waits: 64.
 *
 * @category constants
 * @since 0.1.0
 */
export const DEFAULT_MAX_QUEUED = 64

/** What `Shutdown.serve` adds to `grace` for the server's own backstop (`shutdownGrace`). */
const BACKSTOP_MILLIS = 1000

// ---------------------------------------------------------------------------------------------------------
// Server role
// ---------------------------------------------------------------------------------------------------------

/**
 * Options of the server role.
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
}

/**
 * How a served connection ended, when it ended well.
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
   * handler's error, the connection's, or `Timeout` (operation `"shutdown grace"`) when the client did not
   * half-close within `grace` of the notice and was aborted.
   */
  readonly done: Effect.Effect<ServerReport, DuplexError | E>
}

const checkGrace = (label: string, grace: Duration.Input | undefined): number | DuplexError => {
  const millis = grace === undefined ? Duration.toMillis(DEFAULT_GRACE) : Duration.toMillis(grace)
  return millis >= 0 && Number.isFinite(millis)
    ? millis
    : invalidOptions(label, "grace", grace, "a finite duration ≥ 0")
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
 * A loop reads a request, runs `handle`, sends the response, until the client's EOF; then it half-closes
 * (after every response is flushed) and `done` succeeds. `goingAway` sends the notice, in order with the
 * responses, and leaves the connection fully working: the loop still reads and answers everything the
 * client sends until its EOF. If the client has not half-closed `grace` after the notice, the connection
 * is aborted and `done` fails `Timeout`. A control frame from the client, or anything that is not a frame,
 * fails `ProtocolError` (or `FrameTooLarge`, `FrameTruncated`).
 *
 * **Interruption**
 *
 * Closing the scope interrupts the loop and the grace timer; the duplex is then closed by its own scope.
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
): Effect.Effect<ServerConnection<E>, DuplexError, Scope.Scope | R> =>
  Effect.gen(function* () {
    const graceMillis = checkGrace(duplex.label, options.grace)
    if (typeof graceMillis !== "number") return yield* graceMillis
    const framed = yield* Framing.make(duplex, options)
    const label = duplex.label
    const handle = options.handle
    let noticeAt: number | undefined
    let drainMillis: number | undefined
    let clientDone = false
    let graceExpired = false
    const timers: Array<Fiber.Fiber<unknown>> = []
    const scope = yield* Effect.scope

    const serveLoop = Effect.gen(function* () {
      let answered = 0
      while (true) {
        const frame = yield* framed.read
        if (Option.isNone(frame)) break
        if (frame.value._tag === "Control") {
          return yield* new DuplexError({
            reason: new ProtocolError({ label, problem: "a control frame from the client (only servers send them)" })
          })
        }
        const response = yield* handle(frame.value.payload)
        yield* framed.send(Framing.data(response))
        answered++
      }
      clientDone = true
      if (noticeAt !== undefined) drainMillis = (yield* Clock.currentTimeMillis) - noticeAt
      // Only now, after the client's FIN and every answer: no request can be left behind by our FIN.
      yield* framed.end
      return { answered, noticeSent: noticeAt !== undefined, drainMillis } satisfies ServerReport
    }).pipe(
      Effect.catch((error) =>
        Effect.fail(
          graceExpired
            ? new DuplexError({
                reason: new Timeout({
                  label,
                  operation: "shutdown grace (the client did not half-close after the notice)",
                  timeoutMillis: graceMillis
                })
              })
            : error
        )
      ),
      Effect.ensuring(Effect.suspend(() => Fiber.interruptAll(timers)))
    )
    const loop = yield* Effect.forkScoped(serveLoop, { startImmediately: true })

    const goingAway: Effect.Effect<void> = Effect.suspend(() => {
      if (noticeAt !== undefined || clientDone || loop.pollUnsafe() !== undefined) return Effect.void
      return Effect.gen(function* () {
        noticeAt = yield* Clock.currentTimeMillis
        // The notice goes out in its own fiber: behind a response that waits for the client to read, it
        // must not hold back the grace timer, which starts now.
        const notice = Effect.ignore(framed.send(Framing.control(GOING_AWAY)))
        const expire = Effect.andThen(
          Effect.sleep(graceMillis),
          Effect.suspend(() => {
            if (clientDone) return Effect.void
            graceExpired = true
            return framed.abort
          })
        )
        timers.push(yield* Effect.forkIn(notice, scope), yield* Effect.forkIn(expire, scope))
      })
    })

    return { goingAway, done: Fiber.join(loop) }
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
 * `shutdownGrace` longer than `grace`, or the server interrupts connections that are still draining.
 *
 * **Example** (A server that drains on shutdown)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Shutdown, Tcp } from "fullduplex"
 *
 * const server = Tcp.serve(
 *   { port: 0, shutdownGrace: "6 seconds" },
 *   Shutdown.handler({ handle: (request) => Effect.succeed(request), grace: "5 seconds" })
 * )
 * ```
 *
 * @category server
 * @since 0.1.0
 */
export const handler =
  <E, R>(options: ServerOptions<E, R>): Tcp.Handler<DuplexError | E, R> =>
  (duplex, info) =>
    Effect.scoped(
      Effect.gen(function* () {
        const served = yield* server(duplex, options)
        yield* Effect.forkScoped(Effect.andThen(info.shuttingDown, served.goingAway))
        return yield* served.done
      })
    )

/**
 * Options of {@link serve}: those of `Tcp.serve` (except `shutdownGrace`, derived from `grace`) and those
 * of the server role.
 *
 * @category models
 * @since 0.1.0
 */
export interface ServeOptions<E, R> extends Omit<Tcp.ServeOptions, "shutdownGrace">, ServerOptions<E, R> {}

/**
 * A TCP server in the server role: on shutdown it tells every client and drains them within `grace`.
 *
 * **When to use**
 *
 * For a request/response service that must stop (deploy, restart) without failing a request in flight.
 *
 * **Details**
 *
 * `Tcp.serve` with {@link handler}, and `shutdownGrace` set to `grace` plus one second, so that connections
 * draining on time are never interrupted. At shutdown (scope close or `server.shutdown`) the server stops
 * accepting and every connection gets the notice; a client that half-closes in time has every request it
 * sent answered; one that does not is aborted at `grace` and reported (a `ConnectionClosed` event with
 * `ending: "failed"` and a `Timeout`).
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
export const serve = <E, R>(options: ServeOptions<E, R>): Effect.Effect<Tcp.Server, DuplexError, Scope.Scope | R> =>
  Effect.suspend(() => {
    const graceMillis = checkGrace(options.label ?? "Shutdown.serve", options.grace)
    if (typeof graceMillis !== "number") return Effect.fail(graceMillis)
    const { handle, grace, maxFrameBytes, ...listen } = options
    return Tcp.serve(
      { ...listen, shutdownGrace: graceMillis + BACKSTOP_MILLIS },
      handler({ handle, grace, maxFrameBytes })
    )
  })

// ---------------------------------------------------------------------------------------------------------
// Client role
// ---------------------------------------------------------------------------------------------------------

/**
 * Options of the client role.
 *
 * @category models
 * @since 0.1.0
 */
export interface ClientOptions extends Framing.FramingOptions {
  /** Requests queued, not yet sent, before `request` waits for room. Default {@link DEFAULT_MAX_QUEUED} (64). */
  readonly maxQueued?: number | undefined
}

/**
 * What a client did, as `close` reports it.
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
 * @category models
 * @since 0.1.0
 */
export interface Client {
  readonly label: string
  /**
   * Sends a request and waits for its response. Requests from any number of fibers are pipelined, in the
   * order they are called. Fails `NotProcessed` (never sent, safe to retry) when the server's notice, your
   * `close`, or the end of the connection came first.
   */
  readonly request: (payload: Uint8Array) => Effect.Effect<Uint8Array, DuplexError>
  /** Completes when the server's notice arrives: the moment to open a new connection for new requests. */
  readonly goingAway: Effect.Effect<void>
  /**
   * Closes gracefully: no new requests (they fail `NotProcessed`), the queued ones are sent, then a
   * half-close, then every response is read until the server's EOF. Idempotent.
   */
  readonly close: Effect.Effect<ClientReport, DuplexError>
  /** What the client has done so far. */
  readonly report: Effect.Effect<ClientReport>
}

interface Pending {
  readonly payload: Uint8Array
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
 * Two fibers: a writer sends queued requests in order, a reader matches responses to them in order; the
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
    const framed = yield* Framing.make(duplex, options)
    const queue = yield* Queue.bounded<Pending, Cause.Done>(maxQueued)
    /** Sent and not yet answered, oldest first. */
    const inFlight: Array<Pending> = []
    let inFlightHead = 0
    let state: ClientState = "open"
    const counts = { sent: 0, answered: 0, notProcessed: 0 }
    const notice = Deferred.makeUnsafe<void>()

    const whyNow = (): NotProcessed["why"] =>
      state === "goingAway" ? "goingAway" : state === "lost" ? "connectionLost" : "closing"
    const notProcessed = (why: NotProcessed["why"]) => {
      counts.notProcessed++
      return new DuplexError({ reason: new NotProcessed({ label, why }) })
    }
    const stopSending = (next: ClientState): void => {
      // Closing by our own call is expected to end in the server's EOF; only the notice overrides it.
      if (state === "open" || (state === "closing" && next === "goingAway")) state = next
      Queue.endUnsafe(queue)
    }
    const takeInFlight = (): Pending | undefined => {
      if (inFlightHead === inFlight.length) return undefined
      const pending = inFlight[inFlightHead++]!
      if (inFlightHead > 1024 && inFlightHead * 2 > inFlight.length) {
        inFlight.splice(0, inFlightHead)
        inFlightHead = 0
      }
      return pending
    }
    /** Fails every request still waiting: the written ones with `error`, the queued ones `NotProcessed`. */
    const failPending = (error: DuplexError): Effect.Effect<void> =>
      Effect.gen(function* () {
        for (let pending = takeInFlight(); pending !== undefined; pending = takeInFlight()) {
          yield* Deferred.fail(pending.answer, error)
        }
        for (const pending of yield* Queue.clear(queue)) {
          yield* Deferred.fail(pending.answer, notProcessed(whyNow()))
        }
      })

    const writer = Effect.gen(function* () {
      while (true) {
        const taken = yield* Effect.exit(Queue.take(queue))
        if (Exit.isFailure(taken)) break // ended: closing, the notice, or the connection's end
        const pending = taken.value
        if (pending.cancelled) continue
        if (state === "goingAway" || state === "lost") {
          yield* Deferred.fail(pending.answer, notProcessed(whyNow()))
          continue
        }
        // From here the request counts as sent: the reader will match the next unclaimed response to it.
        inFlight.push(pending)
        counts.sent++
        const written = yield* Effect.exit(framed.send(Framing.data(pending.payload)))
        if (Exit.isFailure(written)) {
          stopSending("lost")
          const error = Cause.squash(written.cause)
          yield* failPending(error instanceof DuplexError ? error : closedError(label))
          return
        }
      }
      if (state !== "lost") yield* Effect.ignore(framed.end) // half-close: every request is out
    })

    const reader = Effect.gen(function* () {
      while (true) {
        const frame = yield* framed.read
        if (Option.isNone(frame)) break
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
      // The server's EOF. With a server in the server role every request sent has been answered by now.
      stopSending("lost")
      const unanswered = inFlight.length - inFlightHead
      if (unanswered > 0) {
        yield* failPending(
          new DuplexError({
            reason: new ProtocolError({
              label,
              problem: `the server closed with ${unanswered} request(s) sent and not answered (they may or may not have been processed)`
            })
          })
        )
      }
    }).pipe(
      Effect.catch((error) =>
        Effect.gen(function* () {
          stopSending("lost")
          yield* failPending(error)
          yield* framed.abort
          return yield* Effect.fail(error)
        })
      )
    )

    const writerFiber = yield* Effect.forkScoped(writer, { startImmediately: true })
    const readerFiber = yield* Effect.forkScoped(reader, { startImmediately: true })
    yield* Effect.addFinalizer(() =>
      Effect.andThen(
        Fiber.interruptAll([writerFiber, readerFiber]),
        Effect.suspend(() => {
          stopSending("lost")
          return failPending(closedError(label))
        })
      )
    )

    const report = Effect.sync((): ClientReport => ({ ...counts, noticeReceived: Deferred.isDoneUnsafe(notice) }))

    const request = (payload: Uint8Array): Effect.Effect<Uint8Array, DuplexError> =>
      Effect.suspend(() => {
        if (state !== "open") return Effect.fail(notProcessed(whyNow()))
        const pending: Pending = { payload, answer: Deferred.makeUnsafe(), cancelled: false }
        return Queue.offer(queue, pending).pipe(
          Effect.flatMap((queued) => (queued ? Deferred.await(pending.answer) : Effect.fail(notProcessed(whyNow())))),
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

/** The error of a request whose client was closed (its scope) while the request was in flight. */
const closedError = (label: string): DuplexError =>
  new DuplexError({ reason: new Closed({ label, direction: "inbound", operation: "read", after: "abort", bytes: 0 }) })
