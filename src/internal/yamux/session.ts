/**
 * A yamux session over a `Duplex`: its lifecycle (open, accept, ping, GoAway, close, failure and
 * farewell, keepalive), and the wiring of its rooms:
 * - the reader (below): decodes frames and dispatches each at once (the churn budget too);
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
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import type * as Duplex from "../../Duplex.js"
import type { Session } from "../../Mux.js"
import { Broken, Closed, DuplexError, ProtocolError, StreamRefused, Timeout } from "../../DuplexError.js"
import { type BytePipe, inboundPipeOf, TAKEN } from "../bytePipe.js"
import {
  encodeHeader,
  FLAG_ACK,
  FLAG_FIN,
  FLAG_RST,
  FLAG_SYN,
  FrameDecoder,
  GO_AWAY_INTERNAL_ERROR,
  GO_AWAY_NORMAL,
  GO_AWAY_PROTOCOL_ERROR,
  type Header,
  PROTOCOL_VERSION,
  SESSION_STREAM_ID,
  TYPE_DATA,
  TYPE_GO_AWAY,
  TYPE_PING,
  TYPE_WINDOW_UPDATE
} from "./codec.js"
import { makeCredit } from "./credit.js"
import { makeOutbound } from "./outbound.js"
import { isReset, makeStreams, makeStreamTable, type StreamState } from "./stream.js"

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
}

/** @internal */
export interface SessionStats {
  /** Streams open (not yet closed both ways), opened by either side; accepted or waiting to be. */
  readonly streams: number
  /** Bytes received and not yet read, over every stream. */
  readonly bufferedBytes: number
  /** The most `bufferedBytes` has been. */
  readonly peakBufferedBytes: number
  /** Control frames waiting to be written. */
  readonly controlQueued: number
  readonly framesIn: number
  readonly framesOut: number
  readonly dataFramesOut: number
  readonly windowUpdatesOut: number
  readonly goAwayReceived: number | undefined
  readonly goAwaySent: number | undefined
}

/**
 * After a protocol error, how long the GoAway and FIN, once written, are left for the peer to read before
 * the abort (within the error-close deadline).
 */
const FAREWELL_READ_MILLIS = 250

const protocolError = (label: string, problem: string) =>
  new DuplexError({ reason: new ProtocolError({ label, problem }) })

/** @internal */
export const makeSession = (conn: Duplex.Duplex, config: SessionConfig): Effect.Effect<Session, never, Scope.Scope> =>
  Effect.gen(function* () {
    const { label, windowBytes } = config
    const clock = yield* Clock.Clock
    const nowMillis = () => clock.currentTimeMillisUnsafe()
    const scope = yield* Effect.scope
    let nextId = config.role === "client" ? 1 : 2
    let failure: DuplexError | undefined
    const failed = () => failure
    let goAwaySent: number | undefined
    let goAwayReceived: number | undefined
    /** `close` has ended the connection after every stream finished. */
    let closedGracefully = false
    const done = Deferred.makeUnsafe<void, DuplexError>()
    const pings = new Map<number, Deferred.Deferred<void, DuplexError>>()
    let nextPing = 0

    // ---- the rooms ----------------------------------------------------------------------------------
    const table = makeStreamTable()
    const outbound = makeOutbound(conn, label, {
      failure: failed,
      fail: failUnsafe,
      // Bound late: credit queues its window updates through the scheduler, which has credit compute
      // each one as it writes it.
      windowUpdate: (s) => credit.windowUpdate(s)
    })
    const credit = makeCredit(config, clock, table.streams, outbound, failed)
    const streams = makeStreams(config, clock, table, outbound, credit, failed)

    // ---- failure ------------------------------------------------------------------------------------
    /** Ends the session: every stream fails with `error` (after the bytes it already has). */
    function failUnsafe(error: DuplexError, goAwayCode: number | undefined, clean = false): void {
      if (failure !== undefined) return
      failure = error
      // Later bytes stay in the connection's pipe, for whoever reads it next (a lingering close drains it).
      detachReader()
      for (const s of table.streams.values()) streams.sessionFailed(s, error)
      table.forgetAll()
      table.pendingAccept.length = 0
      table.acceptable.openUnsafe()
      for (const p of pings.values()) Deferred.doneUnsafe(p, Exit.fail(error))
      pings.clear()
      outbound.clear()
      // Tell the peer why, if we can, then close the connection; only then say the session is done. (A
      // handler that returns at `closed` lets its server's close strategy end the connection: were `done`
      // completed first, that end could come before the GoAway, and the peer would read a bare FIN.)
      startFarewell(goAwayCode, clean)
      if (clean) Deferred.doneUnsafe(done, Exit.void)
      else Deferred.doneUnsafe(done, Exit.fail(error))
    }

    function startFarewell(goAwayCode: number | undefined, clean: boolean): void {
      const farewell =
        goAwayCode !== undefined && goAwaySent === undefined
          ? conn.write(encodeHeader(TYPE_GO_AWAY, 0, SESSION_STREAM_ID, goAwayCode))
          : Effect.void
      if (goAwayCode !== undefined) goAwaySent = goAwayCode
      // After a graceful close the connection has been ended; the duplex's own scope closes it. A session
      // that ended cleanly (the peer's EOF with no stream left) answers with FIN, not a reset.
      if (closedGracefully) return
      const closing = clean
        ? conn.end.pipe(
            Effect.timeoutOption(1000),
            Effect.flatMap((ended) => (Option.isSome(ended) ? Effect.void : conn.abort)),
            Effect.catch(() => conn.abort)
          )
        : goAwayCode === undefined
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

    /** The peer's GoAway: code 0 refuses our further opens; any other code ends the session. */
    function onGoAway(code: number): void {
      goAwayReceived = code
      if (code === GO_AWAY_NORMAL) return
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
    const open: Effect.Effect<Duplex.Duplex, DuplexError, Scope.Scope> = Effect.suspend(() => {
      if (failure !== undefined) return Effect.fail(failure)
      if (goAwayReceived !== undefined || goAwaySent !== undefined) {
        return Effect.fail(
          new DuplexError({
            reason: new StreamRefused({ label, why: goAwayReceived !== undefined ? "goAway" : "closing" })
          })
        )
      }
      if (table.streams.size >= config.maxConcurrentStreams) {
        return Effect.fail(
          new DuplexError({ reason: new StreamRefused({ label, why: "limit", limit: config.maxConcurrentStreams }) })
        )
      }
      // Every stream grants the peer a window: the session's buffer bound limits our own opens too.
      if (credit.committedBytes() + windowBytes > config.maxBufferedBytes) {
        return Effect.fail(
          new DuplexError({
            reason: new StreamRefused({ label, why: "limit", limit: Math.floor(config.maxBufferedBytes / windowBytes) })
          })
        )
      }
      const id = nextId
      nextId += 2
      const s = streams.newStream(id, "local")
      table.remember(s)
      return Effect.gen(function* () {
        const duplex = yield* streams.scoped(s)
        // SYN on a window update of its own, announcing any window beyond the spec's initial one; queued
        // ahead of every frame the stream will send.
        outbound.queueFrame(encodeHeader(TYPE_WINDOW_UPDATE, FLAG_SYN, s.id, credit.extraWindow))
        return duplex
      })
    })

    const nextAccepted: Effect.Effect<StreamState, DuplexError> = Effect.suspend(function loop(): Effect.Effect<
      StreamState,
      DuplexError
    > {
      const next = table.pendingAccept.shift()
      if (next !== undefined) return Effect.succeed(next)
      if (failure !== undefined) return Effect.fail(failure)
      table.acceptable.closeUnsafe()
      return Effect.andThen(table.acceptable.await, loop)
    })
    const accept: Effect.Effect<Duplex.Duplex, DuplexError, Scope.Scope> = Effect.flatMap(nextAccepted, streams.scoped)

    // ---- ping and keepalive -------------------------------------------------------------------------
    const keepAlive = Effect.gen(function* () {
      while (true) {
        yield* Effect.sleep(config.keepAliveIntervalMillis)
        yield* ping
      }
    })

    const ping: Effect.Effect<number, DuplexError> = Effect.suspend(() => {
      if (failure !== undefined) return Effect.fail(failure)
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
      return Effect.void
    })

    const close: Effect.Effect<void, DuplexError> = Effect.gen(function* () {
      yield* goAway
      yield* table.noStreams.await // every stream closed both ways, or the session ended
      if (failure !== undefined) {
        if (Deferred.isDoneUnsafe(done) && Exit.isSuccess(yield* Deferred.await(done).pipe(Effect.exit))) return
        return yield* failure
      }
      yield* Effect.ignore(outbound.awaitWritten(outbound.lastQueued()))
      closedGracefully = true
      yield* Effect.ignore(conn.end)
    })

    // ---- the reader ---------------------------------------------------------------------------------
    const decoder = new FrameDecoder()
    let framesIn = 0
    /** Stops the reader consumer attached to the connection's pipe, if there is one. */
    let detachReader = (): void => {}
    /** Where the current Data frame's payload goes; `undefined` to discard it. */
    let payloadTarget: StreamState | undefined
    /** The current Data frame carries FIN: the peer's FIN takes effect after its payload. */
    let payloadFin = false

    const refuse = (id: number): void => {
      outbound.enqueue({ frame: encodeHeader(TYPE_WINDOW_UPDATE, FLAG_RST, id, 0) })
    }

    /**
     * The churn budget (a token bucket): each stream the peer opens and then resets, and each SYN refused,
     * spends one; the budget refills at `streamChurnPerSecond` up to `maxStreamChurn`. A stream that is
     * opened and reset at once costs the session its state and the application its accept, while costing
     * the peer two headers: without a bound, one peer could keep a server busy and growing (the HTTP/2
     * Rapid Reset attack, CVE-2023-44487). Spent, the session ends with a `ProtocolError` and GoAway.
     */
    let churnBudget = config.maxStreamChurn
    let churnCheckedAt = nowMillis()
    const spendChurn = (): DuplexError | undefined => {
      const now = nowMillis()
      churnBudget = Math.min(
        config.maxStreamChurn,
        churnBudget + ((now - churnCheckedAt) * config.streamChurnPerSecond) / 1000
      )
      churnCheckedAt = now
      churnBudget -= 1
      if (churnBudget >= 0) return undefined
      return protocolError(
        label,
        `stream churn: the peer reset or had refused more than ${config.maxStreamChurn} of the streams it opened ` +
          `at a rate above ${config.streamChurnPerSecond} a second (the Rapid Reset pattern)`
      )
    }

    /** Handles one header; returns an error that ends the session. */
    const onHeader = (h: Header): DuplexError | undefined => {
      framesIn++
      if (h.version !== PROTOCOL_VERSION)
        return protocolError(label, `version ${h.version} (only ${PROTOCOL_VERSION} exists)`)
      switch (h.type) {
        case TYPE_DATA:
        case TYPE_WINDOW_UPDATE: {
          if (h.streamId === SESSION_STREAM_ID) return protocolError(label, "a stream frame on stream 0")
          let s = table.streams.get(h.streamId)
          if ((h.flags & FLAG_SYN) !== 0) {
            if (s !== undefined) return protocolError(label, `a second SYN for stream ${h.streamId}`)
            const peerParity = config.role === "client" ? 0 : 1
            if (h.streamId % 2 !== peerParity) {
              return protocolError(label, `the peer opened stream ${h.streamId}, an id of our parity`)
            }
            if (
              goAwaySent !== undefined ||
              table.streams.size >= config.maxConcurrentStreams ||
              credit.committedBytes() + windowBytes > config.maxBufferedBytes
            ) {
              refuse(h.streamId)
              const churned = spendChurn()
              if (churned !== undefined) return churned
            } else {
              s = streams.newStream(h.streamId, "remote")
              table.remember(s)
              outbound.enqueue({ frame: encodeHeader(TYPE_WINDOW_UPDATE, FLAG_ACK, s.id, credit.extraWindow) })
              table.pendingAccept.push(s)
              table.acceptable.openUnsafe()
            }
          }
          if (s !== undefined && (h.flags & FLAG_ACK) !== 0) s.acked = true // event: the peer ACKed our SYN
          if (h.type === TYPE_WINDOW_UPDATE) {
            if (s !== undefined && h.length > 0) credit.granted(s, h.length)
          } else if (h.length > 0) {
            if (s === undefined || isReset(s)) {
              // A stream we closed or refused: its data may still be in flight, within the window it had.
              if (h.length > config.maxWindowBytes) {
                return protocolError(
                  label,
                  `a data frame of ${h.length} bytes, over the ${config.maxWindowBytes}-byte largest window`
                )
              }
              payloadTarget = undefined
            } else {
              if (h.length > s.recvCredit) {
                return protocolError(
                  label,
                  `stream ${s.id} sent ${h.length} bytes with ${s.recvCredit} bytes of credit (window ${s.window})`
                )
              }
              s.recvCredit -= h.length
              payloadTarget = s
            }
            payloadFin = false
            decoder.expectPayload(h.length)
          }
          if (s !== undefined && (h.flags & FLAG_FIN) !== 0) {
            if (h.type === TYPE_DATA && h.length > 0) payloadFin = true
            else streams.peerFin(s)
          }
          if (s !== undefined && (h.flags & FLAG_RST) !== 0 && !isReset(s)) {
            streams.peerReset(s)
            if (s.opener === "remote") return spendChurn()
          }
          return undefined
        }
        case TYPE_PING: {
          if ((h.flags & FLAG_SYN) !== 0) {
            outbound.enqueue({ frame: encodeHeader(TYPE_PING, FLAG_ACK, SESSION_STREAM_ID, h.length) })
            return undefined
          }
          if ((h.flags & FLAG_ACK) !== 0) {
            onPong(h.length)
            return undefined
          }
          return protocolError(label, "a ping with neither SYN nor ACK")
        }
        case TYPE_GO_AWAY: {
          onGoAway(h.length)
          return undefined
        }
        default:
          return protocolError(label, `unknown frame type ${h.type}`)
      }
    }

    /** Streams given data from the current chunk of the connection, woken once it is dispatched. */
    const fed: Array<StreamState> = []
    const onPayload = (bytes: Uint8Array, last: boolean): void => {
      const s = payloadTarget
      if (s === undefined) return
      // Bytes for a stream we aborted, or one the peer reset or finished, are dropped.
      if (s.recv._tag === "Open") {
        credit.buffered(bytes.length)
        s.inbound.offerUnsafe(bytes, false)
        if (!s.fed) {
          s.fed = true
          fed.push(s)
        }
      }
      if (last) {
        payloadTarget = undefined
        if (payloadFin) {
          payloadFin = false
          streams.peerFin(s)
        }
      }
    }

    /** The connection's EOF: an error if it cut a frame; otherwise the session ends. */
    const onEnd = (): DuplexError | undefined => {
      if (decoder.midFrame) return protocolError(label, "the connection ended in the middle of a frame")
      const ended = new DuplexError({
        reason: new Broken({
          label,
          direction: "inbound",
          operation: "read",
          bytes: 0,
          cause: new Error("the connection closed")
        })
      })
      // With no stream left the session simply ended; otherwise every stream still open broke.
      failUnsafe(ended, undefined, table.streams.size === 0)
      return undefined
    }

    /** Reading failed: the peer broke the protocol (GoAway, code 1) or the connection broke. */
    const onReadError = (error: DuplexError): void =>
      failUnsafe(error, error.reason._tag === "ProtocolError" ? GO_AWAY_PROTOCOL_ERROR : undefined)

    /** The reader as a fiber, for a duplex that can only be read. */
    const readLoop = Effect.gen(function* () {
      while (failure === undefined) {
        const chunk = yield* conn.read
        const error = Option.isSome(chunk) ? dispatch(chunk.value) : onEnd()
        if (error !== undefined) return yield* error
        if (Option.isNone(chunk)) return
      }
    })

    /**
     * The reader as a consumer attached to the duplex's inbound pipe, where there is one (TCP, pairs):
     * each chunk is dispatched in the step that delivers it, with no read and no fiber to wake. The reader
     * never waits, so nothing is lost by not having a fiber of its own.
     */
    const attachReader = (pipe: BytePipe): void => {
      const stop = (error: DuplexError): void => {
        detachReader()
        onReadError(error)
      }
      const { detach } = pipe.attach({
        chunk: (bytes) => {
          if (failure !== undefined) return TAKEN
          const error = dispatch(bytes)
          if (error !== undefined) stop(error)
          return TAKEN
        },
        end: () => {
          if (failure !== undefined) return
          const error = onEnd()
          if (error !== undefined) stop(error)
        },
        fail: (error) => {
          if (failure === undefined) stop(error)
        }
      })
      // What was buffered was dispatched during `attach`, and may have ended the session already.
      if (failure !== undefined) detach()
      else detachReader = detach
    }

    /**
     * Dispatches every frame of one chunk of the connection, then wakes each stream that got data, once:
     * its reader takes all of it in one turn (waking it per piece would cost a suspension per piece).
     */
    const dispatch = (chunk: Uint8Array): DuplexError | undefined => {
      decoder.push(chunk)
      try {
        for (let d = decoder.next(); d !== undefined && failure === undefined; d = decoder.next()) {
          if (d._tag === "Payload") onPayload(d.bytes, d.last)
          else {
            const error = onHeader(d.header)
            if (error !== undefined) return error
          }
        }
        return undefined
      } finally {
        for (const s of fed) {
          s.fed = false
          s.inbound.wakeUnsafe()
        }
        fed.length = 0
      }
    }

    // ---- running ------------------------------------------------------------------------------------
    const writer = yield* Effect.forkIn(
      outbound.writerLoop.pipe(Effect.catch((error) => Effect.sync(() => failUnsafe(error, undefined)))),
      scope
    )
    const fibers: Array<Fiber.Fiber<unknown, unknown>> = [writer, yield* Effect.forkIn(credit.stallWatch, scope)]
    const inboundPipe = inboundPipeOf(conn)
    if (inboundPipe !== undefined) attachReader(inboundPipe)
    else
      fibers.push(
        yield* Effect.forkIn(readLoop.pipe(Effect.catch((error) => Effect.sync(() => onReadError(error)))), scope)
      )
    if (config.keepAliveIntervalMillis > 0 && Number.isFinite(config.keepAliveIntervalMillis)) {
      fibers.push(yield* Effect.forkIn(Effect.ignore(keepAlive), scope))
    }
    yield* Effect.addFinalizer(() =>
      Effect.gen(function* () {
        detachReader()
        yield* Fiber.interruptAll(fibers)
        if (failure === undefined) {
          failUnsafe(
            new DuplexError({
              reason: new Closed({ label, direction: "outbound", operation: "write", after: "abort", bytes: 0 })
            }),
            undefined
          )
        }
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
        bufferedBytes: credit.bufferedBytes,
        peakBufferedBytes: credit.peakBufferedBytes,
        controlQueued: outbound.controlQueued,
        framesIn,
        framesOut: outbound.framesOut,
        dataFramesOut: outbound.dataFramesOut,
        windowUpdatesOut: credit.windowUpdatesOut,
        goAwayReceived,
        goAwaySent
      }))
    }
  })
