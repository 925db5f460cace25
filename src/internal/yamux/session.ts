/**
 * A yamux session over a `Duplex`: the frame reader, the control writer, and the streams.
 *
 * Deadlock freedom, by construction:
 * - The reader never writes and never waits on an application. It dispatches every frame at once: Data
 *   into its stream's buffer (never full: the peer may send only the credit we granted, and the buffer
 *   holds the largest window), window updates and flags into the streams' state. Whatever it must answer
 *   (ACK, RST, Ping ACK) goes to the control queue. Over a duplex with an inbound `BytePipe` it is a
 *   consumer attached to that pipe, run in the step that delivers each chunk; otherwise a fiber.
 * - Credit is returned when the application consumes (reads), not when bytes arrive, so a stream's buffer
 *   never holds more than its window; the update goes through the control queue, so a read never waits on
 *   a write.
 * - One writer fiber writes the connection: control frames first, then the data path's frames in order.
 *   Streams' writes queue frames and wait only for their own credit or for room in the session's send
 *   buffer; they hold nothing another stream needs.
 *
 * @internal
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Latch from "effect/Latch"
import * as Option from "effect/Option"
import type * as Pull from "effect/Pull"
import * as Scope from "effect/Scope"
import * as Semaphore from "effect/Semaphore"
import * as Stream from "effect/Stream"
import * as Duplex from "../../Duplex.js"
import type { Session } from "../../Mux.js"
import { Broken, Closed, DuplexError, ProtocolError, StallDetected, StreamRefused, Timeout } from "../../DuplexError.js"
import { BytePipe, inboundPipeOf, TAKEN } from "../bytePipe.js"
import { makeOutbound, soon } from "./outbound.js"
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
  INITIAL_STREAM_WINDOW_BYTES,
  PROTOCOL_VERSION,
  SESSION_STREAM_ID,
  TYPE_DATA,
  TYPE_GO_AWAY,
  TYPE_PING,
  TYPE_WINDOW_UPDATE
} from "./codec.js"

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

/**
 * Our sending direction. Changed only by the stream's events: `localEnd`, `localAbort`, `peerReset`,
 * `sessionFailed`.
 */
type SendState =
  /** We may write (a local stream's SYN is queued first). */
  | { readonly _tag: "Open" }
  /**
   * Our FIN is queued: writes fail `Closed` after `end`, and `end` again succeeds. A reset by the peer or
   * the session leaves it so: our writes were over before it came.
   */
  | { readonly _tag: "Finished" }
  /** We aborted (or the stream's scope closed): writes and ends fail `Closed` after `abort`. */
  | { readonly _tag: "Reset"; readonly by: "local" }
  /** The peer's RST, or the session's failure: writes and ends fail with `error`. */
  | { readonly _tag: "Reset"; readonly by: "peer" | "session"; readonly error: DuplexError }

/**
 * The peer's sending direction, as we receive it. Changed only by the stream's events: `peerFin`,
 * `peerReset`, `localAbort`, `sessionFailed`.
 */
type RecvState =
  /** The peer may send: payload goes into `inbound`, and credit is returned as it is read. */
  | { readonly _tag: "Open" }
  /**
   * The peer's FIN arrived (after any payload it rode on): reads end after the buffered bytes. The
   * session failing leaves it so; the peer's RST does not (a reset drops what was buffered).
   */
  | { readonly _tag: "Finished" }
  /** We aborted (or the stream's scope closed): what was buffered is dropped, reads fail `Closed`. */
  | { readonly _tag: "Reset"; readonly by: "local" }
  /**
   * The peer's RST (what was buffered is dropped) or the session's failure (what arrived is still read).
   * `error`, when it says more than the pipe's own error, is what reads fail with: `StreamRefused` for a
   * stream the peer refused, the session's error after a failure.
   */
  | { readonly _tag: "Reset"; readonly by: "peer" | "session"; readonly error: DuplexError | undefined }

/** The states without data, shared by every stream (a transition allocates only when it carries an error). */
const OPEN = { _tag: "Open" } as const
const FINISHED = { _tag: "Finished" } as const
const RESET_LOCALLY = { _tag: "Reset", by: "local" } as const

/** @internal */
export interface StreamState {
  readonly id: number
  readonly label: string
  readonly opener: "local" | "remote"
  readonly inbound: BytePipe
  /** The stream's receive window: `windowBytes`, grown up to `maxWindowBytes` (see `growthOf`). */
  window: number
  /** Credit the peer still has on this stream (what we granted minus what it sent). */
  recvCredit: number
  /** `inbound.bytesOut` when credit was last returned. */
  creditedOut: number
  /** `inbound.bytesOut` when the session's buffered count was last updated. */
  countedOut: number
  updateQueued: boolean
  /** Credit we have to send on this stream. */
  sendCredit: number
  readonly creditChanged: Latch.Latch
  readonly writeLock: Semaphore.Semaphore
  send: SendState
  recv: RecvState
  /**
   * The peer has ACKed our SYN (a stream it opened is acked from the start): a reset before the ACK is a
   * refusal. A field, not a send state: the ACK may come after our FIN.
   */
  acked: boolean
  /** Data was offered to `inbound` from the chunk being dispatched; its reader is woken after it. */
  fed: boolean
  /** Writes and ends in progress (holding or waiting for `writeLock`): a write may skip the lock when 0. */
  writers: number
  bytesOut: number
  blockedSince: number | undefined
  blockedMillis: number
  /** Set by the stall watch: what the write waiting for credit fails with. */
  stalled: DuplexError | undefined
  /** Takes the stream's finalizer out of its owner's scope, once the session has forgotten it. */
  release: (() => void) | undefined
}

const protocolError = (label: string, problem: string) =>
  new DuplexError({ reason: new ProtocolError({ label, problem }) })

/** @internal */
export const makeSession = (conn: Duplex.Duplex, config: SessionConfig): Effect.Effect<Session, never, Scope.Scope> =>
  Effect.gen(function* () {
    const { label, windowBytes, maxFrameBytes } = config
    const clock = yield* Clock.Clock
    const nowMillis = () => clock.currentTimeMillisUnsafe()
    const scope = yield* Effect.scope
    const streams = new Map<number, StreamState>()
    let nextId = config.role === "client" ? 1 : 2
    let failure: DuplexError | undefined
    let goAwaySent: number | undefined
    let goAwayReceived: number | undefined
    /** `close` has ended the connection after every stream finished. */
    let closedGracefully = false
    const done = Deferred.makeUnsafe<void, DuplexError>()
    /** Stops the reader consumer attached to the connection's pipe, if there is one. */
    let detachReader = (): void => {}
    /** Streams the peer opened, waiting for `accept`; a stream reset meanwhile is taken out. */
    const pendingAccept: Array<StreamState> = []
    const acceptable = Latch.makeUnsafe(false)
    const dropAccept = (s: StreamState): void => {
      const i = pendingAccept.indexOf(s)
      if (i >= 0) pendingAccept.splice(i, 1)
    }
    const pings = new Map<number, Deferred.Deferred<void, DuplexError>>()
    let nextPing = 0
    let peakBuffered = 0
    const counts = { framesIn: 0, windowUpdatesOut: 0 }
    /** Credit is returned once this much has been read: min(window / 2, max frame) (Clark's rule). */
    const thresholdOf = (s: StreamState): number => Math.min(Math.floor(s.window / 2), maxFrameBytes)
    /** Extra window announced with our SYN or ACK, beyond the spec's initial 256 KiB. */
    const extraWindow = windowBytes - INITIAL_STREAM_WINDOW_BYTES

    const outbound = makeOutbound(conn, label, {
      failure: () => failure,
      fail: failUnsafe,
      windowUpdate: (s) => windowUpdate(s)
    })

    /**
     * Receive-window tuning, at a window update: a stream whose reader has caught up (less than an
     * update's worth unread) while its sender has used its credit up (less than an update's worth left) is
     * held back by its window, not by either application. Its window doubles, up to `maxWindowBytes`,
     * while the session's `maxBufferedBytes` allows it. A window never shrinks.
     */
    const growthOf = (s: StreamState, creditLeft: number): number => {
      if (s.window >= config.maxWindowBytes) return 0
      const threshold = thresholdOf(s)
      if (s.inbound.buffered >= threshold || creditLeft >= threshold) return 0
      const growth = Math.min(s.window, config.maxWindowBytes - s.window)
      return committedBytes() + growth <= config.maxBufferedBytes ? growth : 0
    }

    /** The window update queued for `s`, as written now; `undefined` when there is no credit to return. */
    const windowUpdate = (s: StreamState): Uint8Array | undefined => {
      s.updateQueued = false
      const delta = s.inbound.bytesOut - s.creditedOut
      if (delta <= 0 || s.recv._tag !== "Open") return undefined
      s.creditedOut = s.inbound.bytesOut
      const creditLeft = s.recvCredit
      s.recvCredit += delta
      const growth = growthOf(s, creditLeft)
      s.window += growth
      s.recvCredit += growth
      counts.windowUpdatesOut++
      return encodeHeader(TYPE_WINDOW_UPDATE, 0, s.id, delta + growth)
    }

    // ---- failure ------------------------------------------------------------------------------------
    /** Ends the session: every stream fails with `error` (after the bytes it already has). */
    function failUnsafe(error: DuplexError, goAwayCode: number | undefined, clean = false): void {
      if (failure !== undefined) return
      failure = error
      // Later bytes stay in the connection's pipe, for whoever reads it next (a lingering close drains it).
      detachReader()
      for (const s of streams.values()) sessionFailed(s, error)
      forgetAll()
      pendingAccept.length = 0
      acceptable.openUnsafe()
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

    /** Event: the session failed with the stream still known (neither reset nor closed both ways). */
    const sessionFailed = (s: StreamState, error: DuplexError): void => {
      if (s.send._tag === "Open") s.send = { _tag: "Reset", by: "session", error }
      // What arrived is still read; a stream the peer had finished ends cleanly.
      if (s.recv._tag === "Open") {
        s.recv = { _tag: "Reset", by: "session", error }
        s.inbound.abortWriter(false, { cause: error })
      }
      s.creditChanged.openUnsafe()
    }

    /** Opened whenever no stream is left: what a graceful close waits for. */
    const noStreams = Latch.makeUnsafe(true)
    const forget = (id: number): void => {
      const s = streams.get(id)
      streams.delete(id)
      s?.release?.()
      if (streams.size === 0) soon(noStreams)
    }
    const forgetAll = (): void => {
      const all = [...streams.values()]
      streams.clear()
      for (const s of all) s.release?.()
      soon(noStreams)
    }
    const remember = (s: StreamState): void => {
      streams.set(s.id, s)
      noStreams.closeUnsafe()
    }
    /** Forgets a stream closed both ways (or reset). */
    const retire = (s: StreamState): void => {
      if (s.send._tag !== "Open" && s.recv._tag !== "Open") forget(s.id)
    }
    /** Bytes received and not yet read, over every stream: added as payload arrives, taken as it is read or dropped. */
    let bufferedTotal = 0
    const dropBuffered = (s: StreamState): void => {
      bufferedTotal -= s.inbound.buffered
    }
    /**
     * What the session may have to buffer: what it holds unread (streams already forgotten included) plus
     * the credit its open streams' peers still have. A new stream is admitted only if its window fits too.
     */
    const committedBytes = (): number => {
      let credit = 0
      for (const s of streams.values()) if (s.recv._tag === "Open") credit += s.recvCredit
      return bufferedTotal + credit
    }

    // ---- streams ------------------------------------------------------------------------------------
    const newStream = (id: number, opener: "local" | "remote"): StreamState => {
      const streamLabel = `${label} stream ${id}`
      return {
        id,
        label: streamLabel,
        opener,
        inbound: new BytePipe(config.maxWindowBytes, `${streamLabel} (peer)`, streamLabel, clock),
        window: windowBytes,
        recvCredit: windowBytes,
        creditedOut: 0,
        countedOut: 0,
        updateQueued: false,
        sendCredit: INITIAL_STREAM_WINDOW_BYTES,
        creditChanged: Latch.makeUnsafe(false),
        writeLock: Semaphore.makeUnsafe(1),
        send: OPEN,
        recv: OPEN,
        acked: opener === "remote",
        fed: false,
        writers: 0,
        bytesOut: 0,
        blockedSince: undefined,
        blockedMillis: 0,
        stalled: undefined,
        release: undefined
      }
    }

    const closedError = (s: StreamState, operation: "write" | "end", after: "end" | "abort") =>
      new DuplexError({
        reason: new Closed({ label: s.label, direction: "outbound", operation, after, bytes: s.bytesOut })
      })

    /** What a write or an end fails with now, if anything. */
    const writeError = (s: StreamState, operation: "write" | "end"): DuplexError | undefined => {
      const send = s.send
      if (send._tag === "Open") return failure
      if (send._tag === "Finished") return closedError(s, operation, "end")
      return send.by === "local" ? closedError(s, operation, "abort") : send.error
    }
    /** Reset by anyone: some direction is. */
    const isReset = (s: StreamState): boolean => s.send._tag === "Reset" || s.recv._tag === "Reset"

    /**
     * Waits until the stream has credit (or fails), bounded by the stall limit: the session's stall watch
     * fails the wait once it has lasted `stallMillis` (one timer for the session, not one per wait).
     */
    const awaitCredit = (s: StreamState): Effect.Effect<void, DuplexError> =>
      Effect.suspend(() => {
        if (s.sendCredit > 0 || writeError(s, "write") !== undefined) return Exit.void
        s.blockedSince = nowMillis()
        if (stallWatchIdle) {
          stallWatchIdle = false
          stallWake.openUnsafe()
        }
        return Effect.ensuring(
          waitCredit(s),
          Effect.sync(() => endBlocked(s))
        )
      })
    const waitCredit = (s: StreamState): Effect.Effect<void, DuplexError> =>
      Effect.suspend(() => {
        const stalled = s.stalled
        if (stalled !== undefined) {
          s.stalled = undefined
          return Exit.fail(stalled)
        }
        if (s.sendCredit > 0 || writeError(s, "write") !== undefined) return Exit.void
        s.creditChanged.closeUnsafe()
        return Effect.andThen(s.creditChanged.await, waitCredit(s))
      })
    const endBlocked = (s: StreamState): void => {
      if (s.blockedSince === undefined) return
      s.blockedMillis += nowMillis() - s.blockedSince
      s.blockedSince = undefined
      s.stalled = undefined // a wait interrupted as it stalled leaves nothing for the next one
    }

    /** Opened when a write starts waiting for credit while the stall watch has nothing to watch. */
    const stallWake = Latch.makeUnsafe(false)
    let stallWatchIdle = false
    /**
     * Fails each credit wait that has lasted `stallMillis`, sleeping until the earliest deadline. Every
     * wait has the same limit, so a wait that starts later never has an earlier deadline: the watch needs
     * waking only when it had no wait to watch.
     */
    const stallWatch = Effect.gen(function* () {
      while (true) {
        const now = nowMillis()
        let earliest: number | undefined
        const stalled: Array<StreamState> = []
        for (const s of streams.values()) {
          if (s.blockedSince === undefined) continue
          if (now - s.blockedSince >= config.stallMillis) stalled.push(s)
          else if (earliest === undefined || s.blockedSince < earliest) earliest = s.blockedSince
        }
        for (const s of stalled) stall(s, now)
        if (earliest !== undefined) {
          yield* Effect.sleep(earliest + config.stallMillis - now)
          continue
        }
        stallWatchIdle = true
        stallWake.closeUnsafe()
        yield* stallWake.await
      }
    })
    const stall = (s: StreamState, now: number): void => {
      if (s.blockedSince === undefined) return
      s.stalled = new DuplexError({
        reason: new StallDetected({
          label: s.label,
          stalledMillis: config.stallMillis,
          directions: [
            {
              label: s.label,
              direction: "outbound",
              bytes: s.bytesOut,
              buffered: 0,
              blocked: true,
              blockedMillis: s.blockedMillis + (now - s.blockedSince)
            }
          ]
        })
      })
      s.creditChanged.openUnsafe()
    }

    /**
     * Sends `chunk` as Data frames of min(credit, max frame, what is left): never waiting for a full frame
     * while there is credit. Completes when the last frame is queued for the writer.
     */
    const sendFrom = (s: StreamState, chunk: Uint8Array, offset: number): Effect.Effect<void, DuplexError> =>
      Effect.suspend(() => {
        const error = writeError(s, "write")
        if (error !== undefined) return Exit.fail(error)
        if (offset >= chunk.length) return Exit.void
        if (s.sendCredit === 0) return Effect.andThen(awaitCredit(s), sendFrom(s, chunk, offset))
        if (!outbound.hasRoom()) return Effect.andThen(outbound.awaitRoom, sendFrom(s, chunk, offset))
        const n = Math.min(s.sendCredit, maxFrameBytes, chunk.length - offset)
        queueData(s, chunk.subarray(offset, offset + n))
        return offset + n >= chunk.length ? Exit.void : sendFrom(s, chunk, offset + n)
      })

    /** Queues `piece` as one Data frame, spending its credit. */
    const queueData = (s: StreamState, piece: Uint8Array): void => {
      s.sendCredit -= piece.length
      s.bytesOut += piece.length
      outbound.queueFrame(encodeHeader(TYPE_DATA, 0, s.id, piece.length), piece)
    }

    /**
     * A write: queued at once when no other write or end is in progress and the chunk fits in one frame of
     * the credit there is (the common case), otherwise in turn under the stream's lock.
     */
    const writeChunk = (s: StreamState, chunk: Uint8Array): Effect.Effect<void, DuplexError> =>
      Effect.suspend(() => {
        const n = chunk.length
        if (
          s.writers === 0 &&
          n > 0 &&
          n <= s.sendCredit &&
          n <= maxFrameBytes &&
          outbound.hasRoom() &&
          writeError(s, "write") === undefined
        ) {
          queueData(s, chunk)
          return Exit.void
        }
        return inTurn(s, sendFrom(s, chunk, 0))
      })

    /** Runs `effect` under the stream's write lock, counted in `writers` from the call until it ends. */
    const inTurn = <A>(s: StreamState, effect: Effect.Effect<A, DuplexError>): Effect.Effect<A, DuplexError> =>
      Effect.uninterruptibleMask((restore) => {
        s.writers++
        return Effect.ensuring(
          restore(s.writeLock.withPermits(1)(effect)),
          Effect.sync(() => {
            s.writers--
          })
        )
      })

    const endStream = (s: StreamState): Effect.Effect<void, DuplexError> =>
      inTurn(
        s,
        Effect.gen(function* () {
          if (s.send._tag === "Finished") return
          const error = writeError(s, "end")
          if (error !== undefined) return yield* error
          const seq = localEnd(s)
          yield* outbound.awaitWritten(seq) // half-closed once every byte before it is on its way
        })
      )

    /** Event: our `end`, with the send direction open. Returns the FIN's sequence number. */
    const localEnd = (s: StreamState): number => {
      s.send = FINISHED
      // FIN on a frame of its own: some implementations drop a Data frame's payload when it carries FIN.
      const seq = outbound.queueFrame(encodeHeader(TYPE_WINDOW_UPDATE, FLAG_FIN, s.id, 0))
      retire(s)
      return seq
    }

    const abortStream = (s: StreamState): Effect.Effect<void> => Effect.sync(() => localAbort(s))

    /** Event: our `abort`, or the stream's scope closing, in any state. */
    const localAbort = (s: StreamState): void => {
      const sendRst =
        !isReset(s) && failure === undefined && !(s.send._tag === "Finished" && s.recv._tag === "Finished")
      // After our own abort, every operation fails `Closed`, whatever the peer did before.
      s.send = RESET_LOCALLY
      s.recv = RESET_LOCALLY
      if (streams.get(s.id) === s) forget(s.id)
      dropAccept(s)
      dropBuffered(s)
      s.inbound.closeReader() // what was buffered is dropped, and its credit with it
      s.creditChanged.openUnsafe()
      // On the data path, behind the stream's SYN: an RST that overtook it would leave the peer a stream
      // that no longer exists here.
      if (sendRst) outbound.queueFrame(encodeHeader(TYPE_WINDOW_UPDATE, FLAG_RST, s.id, 0))
    }

    /** After a read: return credit once enough has been consumed. */
    const consumed = (s: StreamState): void => {
      bufferedTotal -= s.inbound.bytesOut - s.countedOut
      s.countedOut = s.inbound.bytesOut
      if (s.updateQueued || s.recv._tag !== "Open") return
      if (s.inbound.bytesOut - s.creditedOut >= thresholdOf(s)) {
        s.updateQueued = true
        outbound.enqueue({ update: s })
      }
    }

    /** What a read fails with, given the pipe's own error. */
    const readError =
      (s: StreamState) =>
      (error: DuplexError): DuplexError => {
        const recv = s.recv
        if (recv._tag === "Reset") {
          if (recv.by === "local") return error
          if (recv.error !== undefined) return recv.error
        }
        return failure !== undefined ? failure : error
      }

    const toDuplex = (s: StreamState): Duplex.Duplex => {
      const waitingRead: Effect.Effect<Option.Option<Uint8Array>, DuplexError> = s.inbound.read.pipe(
        Effect.tap(() => Effect.sync(() => consumed(s))),
        Effect.mapError(readError(s))
      )
      // A chunk already buffered is taken without the effects a waiting read needs.
      const read: Effect.Effect<Option.Option<Uint8Array>, DuplexError> = Effect.suspend(() => {
        const chunk = s.inbound.takeUnsafe()
        if (chunk === undefined) return waitingRead
        consumed(s)
        return Exit.succeed(Option.some(chunk))
      })
      const pull: Pull.Pull<readonly [Uint8Array], DuplexError> = Effect.flatMap(read, (chunk) =>
        Option.isSome(chunk) ? Exit.succeed([chunk.value] as const) : Exit.fail(Cause.Done())
      )
      return Duplex.make({
        label: s.label,
        readable: Stream.fromPull(Effect.succeed(pull)),
        read,
        write: (chunk) => writeChunk(s, chunk),
        end: endStream(s),
        abort: abortStream(s),
        stats: Effect.sync(() => ({
          outbound: {
            bytes: s.bytesOut,
            buffered: 0,
            peakBuffered: 0,
            blocked: s.blockedSince !== undefined,
            blockedMillis: s.blockedMillis + (s.blockedSince === undefined ? 0 : nowMillis() - s.blockedSince)
          },
          inbound: s.inbound.directionStats("reader")
        }))
      })
    }

    /**
     * The stream as a duplex owned by the caller's scope: closing it aborts a stream not closed both ways.
     * The finalizer sits in a scope of its own under the caller's, closed (and so taken out of the
     * caller's) once the session forgets the stream: closed both ways or reset, there is nothing left to
     * abort. A caller that accepts streams in one long-lived scope would otherwise keep the state of every
     * stream the connection ever carried until the connection ends (200,000 streams opened and reset: 13 MiB
     * still held after full collections, 1 MiB with the finalizer released).
     */
    const scoped = (s: StreamState): Effect.Effect<Duplex.Duplex, never, Scope.Scope> =>
      Effect.flatMap(Effect.scope, (owner) => {
        const place = Scope.forkUnsafe(owner)
        let held: StreamState | undefined = s
        s.release = () => {
          held = undefined
          s.release = undefined
          Scope.closeUnsafe(place, Exit.void)
        }
        const finalizer = Effect.suspend(() => {
          const t = held
          held = undefined
          return t === undefined || (t.send._tag === "Finished" && t.recv._tag === "Finished")
            ? Effect.void
            : abortStream(t)
        })
        return Effect.as(Scope.addFinalizer(place, finalizer), toDuplex(s))
      })

    const open: Effect.Effect<Duplex.Duplex, DuplexError, Scope.Scope> = Effect.suspend(() => {
      if (failure !== undefined) return Effect.fail(failure)
      if (goAwayReceived !== undefined || goAwaySent !== undefined) {
        return Effect.fail(
          new DuplexError({
            reason: new StreamRefused({ label, why: goAwayReceived !== undefined ? "goAway" : "closing" })
          })
        )
      }
      if (streams.size >= config.maxConcurrentStreams) {
        return Effect.fail(
          new DuplexError({ reason: new StreamRefused({ label, why: "limit", limit: config.maxConcurrentStreams }) })
        )
      }
      // Every stream grants the peer a window: the session's buffer bound limits our own opens too.
      if (committedBytes() + windowBytes > config.maxBufferedBytes) {
        return Effect.fail(
          new DuplexError({
            reason: new StreamRefused({ label, why: "limit", limit: Math.floor(config.maxBufferedBytes / windowBytes) })
          })
        )
      }
      const id = nextId
      nextId += 2
      const s = newStream(id, "local")
      remember(s)
      return Effect.gen(function* () {
        const duplex = yield* scoped(s)
        // SYN on a window update of its own, announcing any window beyond the spec's initial one; queued
        // ahead of every frame the stream will send.
        outbound.queueFrame(encodeHeader(TYPE_WINDOW_UPDATE, FLAG_SYN, s.id, extraWindow))
        return duplex
      })
    })

    const nextAccepted: Effect.Effect<StreamState, DuplexError> = Effect.suspend(function loop(): Effect.Effect<
      StreamState,
      DuplexError
    > {
      const next = pendingAccept.shift()
      if (next !== undefined) return Effect.succeed(next)
      if (failure !== undefined) return Effect.fail(failure)
      acceptable.closeUnsafe()
      return Effect.andThen(acceptable.await, loop)
    })
    const accept: Effect.Effect<Duplex.Duplex, DuplexError, Scope.Scope> = Effect.flatMap(nextAccepted, scoped)

    // ---- the reader ---------------------------------------------------------------------------------
    const decoder = new FrameDecoder()
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
      counts.framesIn++
      if (h.version !== PROTOCOL_VERSION)
        return protocolError(label, `version ${h.version} (only ${PROTOCOL_VERSION} exists)`)
      switch (h.type) {
        case TYPE_DATA:
        case TYPE_WINDOW_UPDATE: {
          if (h.streamId === SESSION_STREAM_ID) return protocolError(label, "a stream frame on stream 0")
          let s = streams.get(h.streamId)
          if ((h.flags & FLAG_SYN) !== 0) {
            if (s !== undefined) return protocolError(label, `a second SYN for stream ${h.streamId}`)
            const peerParity = config.role === "client" ? 0 : 1
            if (h.streamId % 2 !== peerParity) {
              return protocolError(label, `the peer opened stream ${h.streamId}, an id of our parity`)
            }
            if (
              goAwaySent !== undefined ||
              streams.size >= config.maxConcurrentStreams ||
              committedBytes() + windowBytes > config.maxBufferedBytes
            ) {
              refuse(h.streamId)
              const churned = spendChurn()
              if (churned !== undefined) return churned
            } else {
              s = newStream(h.streamId, "remote")
              remember(s)
              outbound.enqueue({ frame: encodeHeader(TYPE_WINDOW_UPDATE, FLAG_ACK, s.id, extraWindow) })
              pendingAccept.push(s)
              acceptable.openUnsafe()
            }
          }
          if (s !== undefined && (h.flags & FLAG_ACK) !== 0) s.acked = true // event: the peer ACKed our SYN
          if (h.type === TYPE_WINDOW_UPDATE) {
            if (s !== undefined && h.length > 0) {
              s.sendCredit += h.length
              s.creditChanged.openUnsafe()
            }
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
            else peerFin(s)
          }
          if (s !== undefined && (h.flags & FLAG_RST) !== 0 && !isReset(s)) {
            peerReset(s)
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
            const waiting = pings.get(h.length)
            if (waiting !== undefined) {
              pings.delete(h.length)
              Deferred.doneUnsafe(waiting, Exit.void)
            }
            return undefined
          }
          return protocolError(label, "a ping with neither SYN nor ACK")
        }
        case TYPE_GO_AWAY: {
          goAwayReceived = h.length
          if (h.length === GO_AWAY_NORMAL) return undefined
          const what =
            h.length === GO_AWAY_PROTOCOL_ERROR
              ? "a protocol error"
              : h.length === GO_AWAY_INTERNAL_ERROR
                ? "an internal error"
                : `code ${h.length}`
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
          return undefined
        }
        default:
          return protocolError(label, `unknown frame type ${h.type}`)
      }
    }

    /** Event: the peer's FIN (after the payload it rode on). */
    const peerFin = (s: StreamState): void => {
      if (s.recv._tag !== "Open") return
      s.recv = FINISHED
      retire(s) // before the EOF wakes the reader, which may open the next stream at once
      s.inbound.end()
    }

    /** Event: the peer's RST. */
    const peerReset = (s: StreamState): void => {
      if (isReset(s)) return
      const refused = s.opener === "local" && !s.acked
      const error = new DuplexError({
        reason: refused
          ? new StreamRefused({ label: s.label, why: "refused" })
          : new Broken({ label: s.label, direction: "outbound", operation: "write", bytes: s.bytesOut, code: "RST" })
      })
      if (s.send._tag === "Open") s.send = { _tag: "Reset", by: "peer", error }
      s.recv = { _tag: "Reset", by: "peer", error: refused ? error : undefined }
      // State first, wake-ups last: opening a latch or failing a pipe runs the waiting fiber at once, and
      // it must find the stream gone (its slot free for a retry).
      forget(s.id)
      dropAccept(s)
      // A reset drops what was buffered; with the stream gone, so is its credit.
      dropBuffered(s)
      s.inbound.abortWriter(true, refused ? { cause: error } : { code: "RST" })
      s.creditChanged.openUnsafe()
    }

    /** Streams given data from the current chunk of the connection, woken once it is dispatched. */
    const fed: Array<StreamState> = []
    const onPayload = (bytes: Uint8Array, last: boolean): void => {
      const s = payloadTarget
      if (s === undefined) return
      // Bytes for a stream we aborted, or one the peer reset or finished, are dropped.
      if (s.recv._tag === "Open") {
        bufferedTotal += bytes.length
        if (bufferedTotal > peakBuffered) peakBuffered = bufferedTotal
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
          peerFin(s)
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
      failUnsafe(ended, undefined, streams.size === 0)
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

    const goAway: Effect.Effect<void> = Effect.suspend(() => {
      if (goAwaySent !== undefined || failure !== undefined) return Effect.void
      goAwaySent = GO_AWAY_NORMAL
      // On the data path, so that `close` can wait until it is written before it ends the connection.
      outbound.queueFrame(encodeHeader(TYPE_GO_AWAY, 0, SESSION_STREAM_ID, GO_AWAY_NORMAL))
      return Effect.void
    })

    const close: Effect.Effect<void, DuplexError> = Effect.gen(function* () {
      yield* goAway
      yield* noStreams.await // every stream closed both ways, or the session ended
      if (failure !== undefined) {
        if (Deferred.isDoneUnsafe(done) && Exit.isSuccess(yield* Deferred.await(done).pipe(Effect.exit))) return
        return yield* failure
      }
      yield* Effect.ignore(outbound.awaitWritten(outbound.lastQueued()))
      closedGracefully = true
      yield* Effect.ignore(conn.end)
    })

    const writer = yield* Effect.forkIn(
      outbound.writerLoop.pipe(Effect.catch((error) => Effect.sync(() => failUnsafe(error, undefined)))),
      scope
    )
    const fibers: Array<Fiber.Fiber<unknown, unknown>> = [writer, yield* Effect.forkIn(stallWatch, scope)]
    const inbound = inboundPipeOf(conn)
    if (inbound !== undefined) attachReader(inbound)
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
        streams: streams.size,
        bufferedBytes: bufferedTotal,
        peakBufferedBytes: peakBuffered,
        controlQueued: outbound.controlQueued,
        framesIn: counts.framesIn,
        framesOut: outbound.framesOut,
        dataFramesOut: outbound.dataFramesOut,
        windowUpdatesOut: counts.windowUpdatesOut,
        goAwayReceived,
        goAwaySent
      }))
    }
  })
