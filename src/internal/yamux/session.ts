/**
 * A yamux session over a `Duplex`: its lifecycle (open and the line of opens waiting for a slot, accept,
 * ping, GoAway, close, failure and farewell, keepalive), and the wiring of its rooms:
 * - `inbound.ts`, the reader: decodes frames and dispatches each at once (the churn budget too);
 * - `outbound.ts`, the scheduler: the control queue, the data path (the session's send buffer), the one
 *   writer;
 * - `credit.ts`, credit both ways: receive windows (returned on consumption, grown, bounded by the
 *   session's buffer), and the send-credit wait with its stall watch;
 * - `stream.ts`, the streams: each one's state per direction, changed only by its events, the table of
 *   streams, and the `Duplex` each is exposed as;
 * - `codec.ts`, the wire format.
 *
 * Deadlock freedom, by construction:
 * - The reader (inbound) never writes and never waits on an application. It dispatches every frame at
 *   once: Data into its stream's buffer (never full: the peer may send only the credit we granted, and the
 *   buffer holds the largest window), window updates and flags into the streams' state. Whatever it must
 *   answer (ACK, RST, Ping ACK) goes to the control queue. Over a duplex with an inbound `BytePipe` it is a
 *   consumer attached to that pipe, run in the step that delivers each chunk; otherwise a fiber.
 * - Credit is returned when the application consumes (reads), not when bytes arrive, so a stream's buffer
 *   never holds more than its window; the update goes through the control queue, so a read never waits on
 *   a write.
 * - One writer fiber (outbound) writes the connection: control frames first, then the data path's frames
 *   in order. Streams' writes queue frames and wait only for their own credit or for room in the session's
 *   send buffer; they hold nothing another stream needs.
 *
 * @internal
 */
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Latch from "effect/Latch"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import type * as Duplex from "../../Duplex.js"
import type { Session, Stats as SessionStats } from "../../Mux.js"
import { Broken, Closed, DuplexError, SessionEnded, StreamRefused, Timeout } from "../../DuplexError.js"
import {
  encodeHeader,
  FLAG_SYN,
  GO_AWAY_INTERNAL_ERROR,
  GO_AWAY_NORMAL,
  GO_AWAY_PROTOCOL_ERROR,
  SESSION_STREAM_ID,
  TYPE_GO_AWAY,
  TYPE_PING,
  TYPE_WINDOW_UPDATE
} from "./codec.js"
import { makeCredit } from "./credit.js"
import { makeInbound } from "./inbound.js"
import { makeOutbound } from "./outbound.js"
import { makeStreams, makeStreamTable, type StreamState } from "./stream.js"

/** @internal */
export interface SessionConfig {
  readonly role: "client" | "server"
  readonly label: string
  readonly windowBytes: number
  readonly maxWindowBytes: number
  readonly maxFrameBytes: number
  readonly maxConcurrentStreams: number
  readonly maxBufferedBytes: number
  readonly stallMillis: number
  readonly keepAliveIntervalMillis: number
  readonly keepAliveTimeoutMillis: number
  /** After a protocol error, how long the GoAway and FIN have before the connection is aborted. */
  readonly errorCloseMillis: number
  /** Streams the peer may open and reset (or have refused) in a burst: the churn budget. */
  readonly maxStreamChurn: number
  /** Churn the budget regains a second. */
  readonly streamChurnPerSecond: number
  /** How long an `open` at the limit waits for a slot; 0: it fails at once. */
  readonly openTimeoutMillis: number
}

/**
 * After a protocol error, how long the GoAway and FIN, once written, are left for the peer to read before
 * the abort (within the error-close deadline).
 */
const FAREWELL_READ_MILLIS = 250

/**
 * Where the session is in its life. Changed only by `endGracefully` and `failUnsafe`; the GoAways
 * (`goAwaySent`, `goAwayReceived`) are recorded beside it, since either side's may come in any phase.
 *
 * - `Open`: streams open and are accepted, as far as the GoAways allow.
 * - `Ending`: no stream is left and the session ends gracefully (our `close`, or the peer's EOF): the
 *   reader has stopped, keepalive has stopped, nothing new is queued; what was queued is being written,
 *   then our FIN.
 * - `Ended`: our FIN is written (or, to a peer that did not take it within the error-close deadline, the
 *   connection aborted): `closed` has succeeded, `accept` fails `SessionEnded`, and nothing more is written.
 * - `Failed`: `failure` says why; `closed` has failed.
 */
type Phase = "Open" | "Ending" | "Ended" | "Failed"

/** An `open` waiting for a slot, in line. */
interface OpenWaiter {
  /** When it joined the line: its deadline is `openTimeoutMillis` later. */
  readonly since: number
  /**
   * What the open ends with, set by the state change that decides it (the stream opened for it, or the
   * refusal), at which it leaves the line: set, the waiter is in no line.
   */
  outcome: Exit.Exit<StreamState, DuplexError> | undefined
  /** Resumes the open's fiber once it waits; called after the state change, never inside it. */
  resume: ((outcome: Exit.Exit<StreamState, DuplexError>) => void) | undefined
}

/** @internal */
export const makeSession = (conn: Duplex.Duplex, config: SessionConfig): Effect.Effect<Session, never, Scope.Scope> =>
  Effect.gen(function* () {
    const { label, windowBytes } = config
    const clock = yield* Clock.Clock
    const nowMillis = () => clock.currentTimeMillisUnsafe()
    const scope = yield* Effect.scope
    let nextId = config.role === "client" ? 1 : 2
    let failure: DuplexError | undefined
    /** The session's failure, as the rooms read it: set once, by `failUnsafe`. */
    const failed = () => failure
    let goAwaySent: number | undefined
    let goAwayReceived: number | undefined
    let phase: Phase = "Open"
    /** Whose ending `accept` reports: ours once our GoAway is out, the peer's for its clean EOF. */
    let endedBy: "local" | "peer" = "local"
    const done = Deferred.makeUnsafe<void, DuplexError>()
    const pings = new Map<number, Deferred.Deferred<void, DuplexError>>()
    let nextPing = 0

    /** Our opens waiting for a slot, first come first served: at most `maxConcurrentStreams`. */
    const waiters: Array<OpenWaiter> = []
    let serveScheduled = false

    // ---- the rooms ----------------------------------------------------------------------------------
    const table = makeStreamTable(wakeOpeners)
    const outbound = makeOutbound(conn, label, {
      failure: failed,
      fail: failUnsafe,
      // Bound late: credit queues its window updates through the scheduler, which has credit compute
      // each one as it writes it.
      windowUpdate: (s) => credit.windowUpdate(s)
    })
    const credit = makeCredit(config, clock, table.streams, outbound, failed, wakeOpeners)
    const streams = makeStreams(config, clock, table, outbound, credit, failed)
    const inbound = makeInbound(conn, config, clock, table, streams, credit, outbound, {
      failure: failed,
      fail: failUnsafe,
      ended: () => {
        if (goAwaySent === undefined) endedBy = "peer"
        Effect.runFork(endGracefully(config.errorCloseMillis))
      },
      goingAway: () => goAwaySent !== undefined,
      goAway: onGoAway,
      pong: onPong
    })

    // ---- failure ------------------------------------------------------------------------------------
    /** Ends the session: every stream fails with `error` (after the bytes it already has). */
    function failUnsafe(error: DuplexError, goAwayCode: number | undefined): void {
      if (phase === "Failed" || phase === "Ended") return
      // Failing while ending gracefully (the scope closed, the FIN could not be written): the connection
      // is aborted, and `closed` fails.
      const ending = phase === "Ending"
      phase = "Failed"
      failure = error
      // Later bytes stay in the connection's pipe, for whoever reads it next (a lingering close drains it).
      inbound.detach()
      for (const s of table.streams.values()) streams.sessionFailed(s, error)
      table.forgetAll()
      table.pendingAccept.length = 0
      table.acceptable.openUnsafe()
      failPings(error)
      refuseWaiting(error)
      outbound.clear()
      // Tell the peer why, if we can, then close the connection; only then say the session is done. (A
      // handler that returns at `closed` lets its server's close strategy end the connection: were `done`
      // completed first, that end could come before the GoAway, and the peer would read a bare FIN.)
      startFarewell(ending ? undefined : goAwayCode)
      Deferred.doneUnsafe(done, Exit.fail(error))
    }

    function failPings(error: DuplexError): void {
      for (const p of pings.values()) Deferred.doneUnsafe(p, Exit.fail(error))
      pings.clear()
    }

    function startFarewell(goAwayCode: number | undefined): void {
      const farewell =
        goAwayCode !== undefined && goAwaySent === undefined
          ? conn.write(encodeHeader(TYPE_GO_AWAY, 0, SESSION_STREAM_ID, goAwayCode))
          : Effect.void
      if (goAwayCode !== undefined) goAwaySent = goAwayCode
      const closing =
        goAwayCode === undefined
          ? conn.abort
          : // The GoAway, then FIN, then a moment for the peer to read them before the abort: an abort
            // right after the GoAway could discard it unread (a reset destroys what the peer has not read),
            // and a connection only ended would stay half-open to a peer that goes on writing. All of it
            // within `errorCloseMillis`: a peer that does not read gets the abort at the deadline.
            Effect.ignore(farewell).pipe(
              Effect.andThen(Effect.ignore(conn.end)),
              Effect.andThen(Effect.sleep(FAREWELL_READ_MILLIS)),
              Effect.timeoutOption(config.errorCloseMillis),
              Effect.andThen(conn.abort)
            )
      Effect.runFork(closing)
    }

    /**
     * Ends the session gracefully once no stream is left: `close` after every stream finished, or the
     * peer's EOF. The reader and keepalive stop first, so nothing read is answered and no ping goes out;
     * then what was queued is written, then our FIN, and nothing after it; only then is `closed` done, so
     * that a scope closed right after it resets nothing. The FIN has `finMillis` to be written (the peer's
     * EOF: it may not read any more), after which the connection is aborted; `close` waits as long as the
     * connection takes. Does nothing unless the session is `Open`: `done` says how an ending already under
     * way ends.
     */
    const endGracefully = (finMillis: number | undefined): Effect.Effect<void> =>
      Effect.suspend(() => {
        if (phase !== "Open") return Effect.void
        phase = "Ending"
        inbound.detach() // later bytes stay in the connection's pipe, unanswered
        table.acceptable.openUnsafe() // `accept` ends (`SessionEnded`) from now on
        failPings(closedError("end"))
        const fin =
          finMillis === undefined
            ? conn.end
            : conn.end.pipe(
                Effect.timeoutOption(finMillis),
                Effect.flatMap((ended) => (Option.isSome(ended) ? Effect.void : conn.abort))
              )
        return (keepAliveFiber === undefined ? Effect.void : Fiber.interrupt(keepAliveFiber)).pipe(
          Effect.andThen(outbound.seal),
          Effect.andThen(fin),
          Effect.catch(() => conn.abort), // the connection broke under the FIN: nothing is left to say
          Effect.andThen(
            Effect.sync(() => {
              if (phase !== "Ending") return // failed meanwhile: `done` has failed
              phase = "Ended"
              Deferred.doneUnsafe(done, Exit.void)
            })
          )
        )
      })

    /** What `ping` fails with once the session has ended (or is ending) gracefully or been closed. */
    const closedError = (after: "end" | "abort") =>
      new DuplexError({ reason: new Closed({ label, direction: "outbound", operation: "write", after, bytes: 0 }) })

    /** The peer's GoAway: code 0 refuses our further opens; any other code ends the session. */
    function onGoAway(code: number): void {
      goAwayReceived = code
      if (code === GO_AWAY_NORMAL) {
        refuseWaiting(new DuplexError({ reason: new StreamRefused({ label, why: "goAway" }) }))
        return
      }
      const what =
        code === GO_AWAY_PROTOCOL_ERROR
          ? "a protocol error"
          : code === GO_AWAY_INTERNAL_ERROR
            ? "an internal error"
            : `code ${code}`
      failUnsafe(
        new DuplexError({
          reason: new Broken({
            label,
            direction: "inbound",
            operation: "read",
            bytes: 0,
            cause: new Error(`the peer went away reporting ${what}`)
          })
        }),
        undefined
      )
    }

    // ---- streams ------------------------------------------------------------------------------------
    /** Why an open fails now whatever the limits: the session failed, or a GoAway went either way. */
    const refusedNow = (): DuplexError | undefined => {
      if (failure !== undefined) return failure
      if (goAwayReceived === undefined && goAwaySent === undefined && phase === "Open") return undefined
      return new DuplexError({
        reason: new StreamRefused({ label, why: goAwayReceived !== undefined ? "goAway" : "closing" })
      })
    }

    /** A stream may be opened now: a slot, and room for its window (every stream grants the peer one). */
    const admissible = (): boolean =>
      table.streams.size < config.maxConcurrentStreams &&
      credit.committedBytes() + windowBytes <= config.maxBufferedBytes

    /** `StreamRefused` naming the limit an open is held by: the stream limit, or the buffer bound's. */
    const limitRefused = (waitedMillis?: number): DuplexError =>
      new DuplexError({
        reason: new StreamRefused({
          label,
          why: "limit",
          limit:
            table.streams.size < config.maxConcurrentStreams &&
            credit.committedBytes() + windowBytes > config.maxBufferedBytes
              ? Math.floor(config.maxBufferedBytes / windowBytes)
              : config.maxConcurrentStreams,
          waitedMillis
        })
      })

    /** Opens a stream: its id, its state in the table, its SYN. */
    const openStream = (): StreamState => {
      const id = nextId
      nextId += 2
      const s = streams.newStream(id, "local")
      table.remember(s)
      // SYN on a window update of its own, announcing any window beyond the spec's initial one; queued
      // ahead of every frame the stream will send.
      outbound.queueFrame(encodeHeader(TYPE_WINDOW_UPDATE, FLAG_SYN, s.id, credit.extraWindow))
      return s
    }

    /**
     * A slot or buffer room may have come back: serves the waiting opens in a microtask, once every state
     * change of the current step is over (as `soon` does for latches: a resumed open runs at once).
     */
    function wakeOpeners(): void {
      if (waiters.length === 0 || serveScheduled) return
      serveScheduled = true
      queueMicrotask(serveOpeners)
    }

    /** Opens a stream for each waiter, first in line first, while the limits allow; then resumes them. */
    function serveOpeners(): void {
      serveScheduled = false
      // A failure or a GoAway has refused every waiter already.
      if (refusedNow() !== undefined) return
      let served = 0
      while (served < waiters.length && admissible()) waiters[served++]!.outcome = Exit.succeed(openStream())
      if (served === 0) return
      const granted = waiters.splice(0, served)
      for (const w of granted) w.resume?.(w.outcome!)
    }

    /** Every waiter fails with `error`: at once (no stream is opened for any), resumed in a microtask. */
    function refuseWaiting(error: DuplexError): void {
      if (waiters.length === 0) return
      const refused = waiters.splice(0, waiters.length)
      const outcome = Exit.fail(error)
      for (const w of refused) w.outcome = outcome
      queueMicrotask(() => {
        for (const w of refused) w.resume?.(outcome)
      })
    }

    /** A waiter gives up (interrupted): out of the line, or its stream aborted if it has one already. */
    const leave = (w: OpenWaiter): void => {
      const outcome = w.outcome
      if (outcome === undefined) {
        const i = waiters.indexOf(w)
        if (i >= 0) waiters.splice(i, 1)
      } else if (Exit.isSuccess(outcome)) {
        // Opened for it as it was interrupted: nobody will have it. Its abort frees the slot for the next.
        streams.abort(outcome.value)
      }
    }

    const awaitTurn = (w: OpenWaiter): Effect.Effect<StreamState, DuplexError> =>
      Effect.callback<StreamState, DuplexError>((resume) => {
        // Decided while this fiber yielded between joining the line and waiting.
        if (w.outcome !== undefined) return resume(w.outcome)
        w.resume = resume
      })

    /** Opened when an open joins an empty line while the open watch has nothing to watch. */
    const openWake = Latch.makeUnsafe(false)
    let openWatchIdle = false
    /**
     * Fails each waiting open whose `openTimeoutMillis` is up, sleeping until the first one's deadline:
     * every wait has the same limit and the line is in joining order, so the first in line is always the
     * first due (one timer for the session, not one per wait, as the stall watch).
     */
    const openWatch = Effect.gen(function* () {
      while (true) {
        const first = waiters[0]
        if (first === undefined) {
          openWatchIdle = true
          openWake.closeUnsafe()
          yield* openWake.await
          continue
        }
        const now = nowMillis()
        if (now < first.since + config.openTimeoutMillis) {
          yield* Effect.sleep(first.since + config.openTimeoutMillis - now)
          continue
        }
        let due = 0
        while (due < waiters.length && now >= waiters[due]!.since + config.openTimeoutMillis) due++
        const expired = waiters.splice(0, due)
        for (const w of expired) w.outcome = Exit.fail(limitRefused(now - w.since))
        for (const w of expired) w.resume?.(w.outcome!)
      }
    })

    /**
     * An open at a limit, or behind opens already waiting (none overtakes them): it joins the line, in
     * the same step as the checks, and waits for its stream, its refusal or the open watch. Uninterruptible
     * but for the wait, so that a waiter in the line is always one that `leave` takes out if interrupted.
     */
    const waitingOpen: Effect.Effect<Duplex.Duplex, DuplexError, Scope.Scope> = Effect.uninterruptibleMask((restore) =>
      Effect.suspend(() => {
        const refused = refusedNow()
        if (refused !== undefined) return Exit.fail(refused)
        if (waiters.length === 0 && admissible()) return streams.scoped(openStream())
        if (config.openTimeoutMillis === 0 || waiters.length >= config.maxConcurrentStreams) {
          return Exit.fail(limitRefused())
        }
        const w: OpenWaiter = { since: nowMillis(), outcome: undefined, resume: undefined }
        waiters.push(w)
        if (openWatchIdle) {
          openWatchIdle = false
          openWake.openUnsafe()
        }
        wakeOpeners() // a slot may be free already, the step that freed it still running
        return restore(awaitTurn(w)).pipe(
          Effect.onInterrupt(() => Effect.sync(() => leave(w))),
          Effect.flatMap(streams.scoped)
        )
      })
    )

    /** Below the limits with nobody waiting (the common case): the stream at once, with no waiter or timer. */
    const open: Effect.Effect<Duplex.Duplex, DuplexError, Scope.Scope> = Effect.suspend(() => {
      if (waiters.length === 0 && admissible()) {
        const refused = refusedNow()
        return refused !== undefined ? Exit.fail(refused) : streams.scoped(openStream())
      }
      return waitingOpen
    })

    /**
     * The next stream the peer opened; once no more can come (our GoAway is out: a SYN after it is
     * refused; or the session ended gracefully), `SessionEnded`.
     */
    const accept: Effect.Effect<Duplex.Duplex, DuplexError, Scope.Scope> = Effect.suspend(
      function loop(): Effect.Effect<Duplex.Duplex, DuplexError, Scope.Scope> {
        const next = table.pendingAccept.shift()
        if (next !== undefined) return streams.scoped(next)
        if (failure !== undefined) return Effect.fail(failure)
        // Ending: the end is told once our FIN is written, so that a handler that returns at it and closes
        // the session's scope does not abort the FIN under way.
        if (phase === "Ending") return Effect.andThen(Effect.exit(Deferred.await(done)), loop)
        if (goAwaySent !== undefined || phase !== "Open") {
          return Effect.fail(new DuplexError({ reason: new SessionEnded({ label, by: endedBy }) }))
        }
        table.acceptable.closeUnsafe()
        return Effect.andThen(table.acceptable.await, loop)
      }
    )

    // ---- ping and keepalive -------------------------------------------------------------------------
    const keepAlive = Effect.gen(function* () {
      while (true) {
        yield* Effect.sleep(config.keepAliveIntervalMillis)
        yield* ping
      }
    })

    const ping: Effect.Effect<number, DuplexError> = Effect.suspend(() => {
      if (failure !== undefined) return Effect.fail(failure)
      if (phase !== "Open") return Effect.fail(closedError("end"))
      const opaque = nextPing
      nextPing = (nextPing + 1) >>> 0
      const answered = Deferred.makeUnsafe<void, DuplexError>()
      pings.set(opaque, answered)
      const started = nowMillis()
      outbound.enqueue({ frame: encodeHeader(TYPE_PING, FLAG_SYN, SESSION_STREAM_ID, opaque) })
      return Deferred.await(answered).pipe(
        Effect.timeoutOrElse({
          duration: config.keepAliveTimeoutMillis,
          orElse: () => {
            pings.delete(opaque)
            const error = new DuplexError({
              reason: new Timeout({
                label,
                operation: "ping (the peer did not answer: dead or not reading)",
                timeoutMillis: config.keepAliveTimeoutMillis
              })
            })
            failUnsafe(error, GO_AWAY_INTERNAL_ERROR)
            return Effect.fail(error)
          }
        }),
        Effect.map(() => nowMillis() - started)
      )
    })

    /** The peer's Ping ACK. */
    function onPong(opaque: number): void {
      const waiting = pings.get(opaque)
      if (waiting !== undefined) {
        pings.delete(opaque)
        Deferred.doneUnsafe(waiting, Exit.void)
      }
    }

    // ---- ending -------------------------------------------------------------------------------------
    const goAway: Effect.Effect<void> = Effect.suspend(() => {
      if (goAwaySent !== undefined || failure !== undefined) return Effect.void
      goAwaySent = GO_AWAY_NORMAL
      // On the data path, so that `close` can wait until it is written before it ends the connection.
      outbound.queueFrame(encodeHeader(TYPE_GO_AWAY, 0, SESSION_STREAM_ID, GO_AWAY_NORMAL))
      table.acceptable.openUnsafe() // no stream comes after it: a waiting `accept` ends
      refuseWaiting(new DuplexError({ reason: new StreamRefused({ label, why: "closing" }) }))
      return Effect.void
    })

    const close: Effect.Effect<void, DuplexError> = Effect.gen(function* () {
      yield* goAway
      yield* table.noStreams.await // every stream closed both ways, or the session ended
      yield* endGracefully(undefined)
      yield* Deferred.await(done)
    })

    // ---- running ------------------------------------------------------------------------------------
    const writer = yield* Effect.forkIn(
      outbound.writerLoop.pipe(Effect.catch((error) => Effect.sync(() => failUnsafe(error, undefined)))),
      scope
    )
    let keepAliveFiber: Fiber.Fiber<unknown, unknown> | undefined
    const fibers: Array<Fiber.Fiber<unknown, unknown>> = [writer, yield* Effect.forkIn(credit.stallWatch, scope)]
    const reading = inbound.start()
    if (reading !== undefined) fibers.push(yield* Effect.forkIn(reading, scope))
    if (config.openTimeoutMillis > 0) fibers.push(yield* Effect.forkIn(openWatch, scope))
    // Not when the session has already ended: what was buffered in the connection, dispatched as the
    // reader attached, may have been the peer's whole session and its EOF.
    if (config.keepAliveIntervalMillis > 0 && Number.isFinite(config.keepAliveIntervalMillis) && phase === "Open") {
      keepAliveFiber = yield* Effect.forkIn(Effect.ignore(keepAlive), scope)
      fibers.push(keepAliveFiber)
    }
    yield* Effect.addFinalizer(() =>
      Effect.gen(function* () {
        inbound.detach()
        yield* Fiber.interruptAll(fibers)
        // Ended gracefully, there is nothing to abort: our FIN is out and the duplex's owner closes it.
        failUnsafe(closedError("abort"), undefined)
      })
    )

    return {
      label,
      open,
      accept,
      ping,
      goAway,
      close,
      closed: Deferred.await(done),
      stats: Effect.sync((): SessionStats => ({
        streams: table.streams.size,
        waitingOpens: waiters.length,
        bufferedBytes: credit.bufferedBytes,
        peakBufferedBytes: credit.peakBufferedBytes,
        controlQueued: outbound.controlQueued,
        framesIn: inbound.framesIn,
        framesOut: outbound.framesOut,
        dataFramesOut: outbound.dataFramesOut,
        windowUpdatesOut: credit.windowUpdatesOut,
        goAwayReceived,
        goAwaySent
      }))
    }
  })
