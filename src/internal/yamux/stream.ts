/**
 * A yamux stream: its state, one explicit state per direction changed only by the stream's events, the
 * session's table of streams, and the `Duplex` a stream is exposed as.
 *
 * Transitions (event: from → to). Each event is one function below, and the only place that changes
 * these states:
 *
 * ```text
 * send (ours)      localEnd       Open → Finished                    (FIN queued behind our data)
 *                  localAbort     any → Reset(local)                 (RST queued unless the peer knows)
 *                  peerReset      Open → Reset(peer);  Finished stays
 *                  sessionFailed  Open → Reset(session); Finished stays
 * recv (the peer)  peerFin        Open → Finished                    (after the payload it rode on)
 *                  peerReset      Open | Finished → Reset(peer)      (what was buffered is dropped)
 *                  localAbort     any → Reset(local)                 (what was buffered is dropped)
 *                  sessionFailed  Open → Reset(session); Finished stays (what arrived is still read)
 * ```
 *
 * The session forgets a stream once neither direction is Open, or at any reset.
 *
 * @internal
 */
import * as Cause from "effect/Cause"
import type * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Latch from "effect/Latch"
import * as Option from "effect/Option"
import type * as Pull from "effect/Pull"
import * as Scope from "effect/Scope"
import * as Semaphore from "effect/Semaphore"
import * as Stream from "effect/Stream"
import * as Duplex from "../../Duplex.js"
import { Broken, Closed, DuplexError, StreamRefused } from "../../DuplexError.js"
import { BytePipe } from "../bytePipe.js"
import {
  encodeHeader,
  FLAG_FIN,
  FLAG_RST,
  INITIAL_STREAM_WINDOW_BYTES,
  TYPE_DATA,
  TYPE_WINDOW_UPDATE
} from "./codec.js"
import type { Credit } from "./credit.js"
import { type Outbound, soon } from "./outbound.js"
import type { SessionConfig } from "./session.js"

/**
 * Our sending direction. Changed only by the stream's events: `localEnd`, `localAbort`, `peerReset`,
 * `sessionFailed`.
 */
export type SendState =
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
export type RecvState =
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
  /**
   * The peer's window for this stream, as far as we can tell (yamux never says): the most credit held at
   * once, lowered when a hold is overridden. Its half, up to `maxFrameBytes`, is the send threshold (see
   * `credit.ts`, sender-side silly-window avoidance).
   */
  sendWindow: number
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

/** Reset by anyone: some direction is. */
export const isReset = (s: StreamState): boolean => s.send._tag === "Reset" || s.recv._tag === "Reset"

const closedError = (s: StreamState, operation: "write" | "end", after: "end" | "abort") =>
  new DuplexError({
    reason: new Closed({ label: s.label, direction: "outbound", operation, after, bytes: s.bytesOut })
  })

/** What a write or an end fails with now, if anything, given the session's failure. */
export const writeError = (
  s: StreamState,
  operation: "write" | "end",
  failure: DuplexError | undefined
): DuplexError | undefined => {
  const send = s.send
  if (send._tag === "Open") return failure
  if (send._tag === "Finished") return closedError(s, operation, "end")
  return send.by === "local" ? closedError(s, operation, "abort") : send.error
}

// ---- the table ------------------------------------------------------------------------------------

/** The streams a session knows, and the ones waiting for `accept`. @internal */
export interface StreamTable {
  /** By id: every stream not yet closed both ways nor reset, opened by either side. */
  readonly streams: Map<number, StreamState>
  /** Opened whenever no stream is left: what a graceful close waits for. */
  readonly noStreams: Latch.Latch
  /** Streams the peer opened, waiting for `accept`; a stream reset meanwhile is taken out. */
  readonly pendingAccept: Array<StreamState>
  /** Opened when a stream waits for `accept`, or the session failed. */
  readonly acceptable: Latch.Latch
  readonly remember: (s: StreamState) => void
  /** Forgets a stream: its slot is free, and `roomFreed` is told. */
  readonly forget: (id: number) => void
  readonly forgetAll: () => void
  readonly dropAccept: (s: StreamState) => void
  /**
   * A stream's slot or some of the session's buffer room may have come back for good (a stream forgotten,
   * the peer's credit on a direction it finished no longer counted, bytes no credit follows read or
   * dropped): the session's waiting opens are served, in a step of their own (the hook resumes nothing at
   * once).
   */
  readonly roomFreed: () => void
}

/** @internal */
export const makeStreamTable = (roomFreed: () => void): StreamTable => {
  const streams = new Map<number, StreamState>()
  const noStreams = Latch.makeUnsafe(true)
  const pendingAccept: Array<StreamState> = []
  return {
    streams,
    noStreams,
    pendingAccept,
    acceptable: Latch.makeUnsafe(false),
    remember: (s) => {
      streams.set(s.id, s)
      noStreams.closeUnsafe()
    },
    forget: (id) => {
      const s = streams.get(id)
      streams.delete(id)
      s?.release?.()
      if (streams.size === 0) soon(noStreams)
      roomFreed()
    },
    forgetAll: () => {
      const all = [...streams.values()]
      streams.clear()
      for (const s of all) s.release?.()
      soon(noStreams)
    },
    dropAccept: (s) => {
      const i = pendingAccept.indexOf(s)
      if (i >= 0) pendingAccept.splice(i, 1)
    },
    roomFreed
  }
}

// ---- the streams ----------------------------------------------------------------------------------

/** @internal */
export interface Streams {
  readonly newStream: (id: number, opener: "local" | "remote") => StreamState
  /** The stream as a duplex owned by the caller's scope (see the implementation's comment). */
  readonly scoped: (s: StreamState) => Effect.Effect<Duplex.Duplex, never, Scope.Scope>
  /** Event: the peer's FIN (after the payload it rode on). */
  readonly peerFin: (s: StreamState) => void
  /** Event: the peer's RST. */
  readonly peerReset: (s: StreamState) => void
  /** Event: the session failed with the stream still known (neither reset nor closed both ways). */
  readonly sessionFailed: (s: StreamState, error: DuplexError) => void
  /** Event: our abort, for a stream opened for an `open` that was interrupted before it could take it. */
  readonly abort: (s: StreamState) => void
}

/** @internal */
export const makeStreams = (
  config: SessionConfig,
  clock: Clock.Clock,
  table: StreamTable,
  outbound: Outbound,
  credit: Credit,
  failure: () => DuplexError | undefined
): Streams => {
  const { label, windowBytes, maxFrameBytes } = config
  const nowMillis = () => clock.currentTimeMillisUnsafe()

  const newStream = (id: number, opener: "local" | "remote"): StreamState => {
    const streamLabel = `${label} stream ${id}`
    return {
      id,
      label: streamLabel,
      opener,
      inbound: new BytePipe(config.maxWindowBytes, undefined, streamLabel, clock),
      window: windowBytes,
      recvCredit: windowBytes,
      creditedOut: 0,
      countedOut: 0,
      updateQueued: false,
      sendCredit: INITIAL_STREAM_WINDOW_BYTES,
      sendWindow: INITIAL_STREAM_WINDOW_BYTES,
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

  // ---- events: the only places that change `send` and `recv` ---------------------------------------

  /** Forgets a stream closed both ways (or reset). */
  const retire = (s: StreamState): void => {
    if (s.send._tag !== "Open" && s.recv._tag !== "Open") table.forget(s.id)
  }

  /** Event: our `end`, with the send direction open. Returns the FIN's sequence number. */
  const localEnd = (s: StreamState): number => {
    s.send = FINISHED
    // FIN on a frame of its own: some implementations drop a Data frame's payload when it carries FIN.
    const seq = outbound.queueFrame(encodeHeader(TYPE_WINDOW_UPDATE, FLAG_FIN, s.id, 0))
    retire(s)
    return seq
  }

  /** Event: our `abort`, or the stream's scope closing, in any state. */
  const localAbort = (s: StreamState): void => {
    const sendRst =
      !isReset(s) && failure() === undefined && !(s.send._tag === "Finished" && s.recv._tag === "Finished")
    // After our own abort, every operation fails `Closed`, whatever the peer did before.
    s.send = RESET_LOCALLY
    s.recv = RESET_LOCALLY
    if (table.streams.get(s.id) === s) table.forget(s.id)
    table.dropAccept(s)
    credit.dropBuffered(s)
    s.inbound.closeReader() // what was buffered is dropped, and its credit with it
    s.creditChanged.openUnsafe()
    // On the data path, behind the stream's SYN: an RST that overtook it would leave the peer a stream
    // that no longer exists here.
    if (sendRst) outbound.queueFrame(encodeHeader(TYPE_WINDOW_UPDATE, FLAG_RST, s.id, 0))
  }

  const peerFin = (s: StreamState): void => {
    if (s.recv._tag !== "Open") return
    s.recv = FINISHED
    retire(s) // before the EOF wakes the reader, which may open the next stream at once
    table.roomFreed() // the peer's credit on it no longer counts against the session's buffer
    s.inbound.end()
  }

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
    table.forget(s.id)
    table.dropAccept(s)
    // A reset drops what was buffered; with the stream gone, so is its credit.
    credit.dropBuffered(s)
    s.inbound.abortWriter(true, refused ? { cause: error } : { code: "RST" })
    s.creditChanged.openUnsafe()
  }

  const sessionFailed = (s: StreamState, error: DuplexError): void => {
    if (s.send._tag === "Open") s.send = { _tag: "Reset", by: "session", error }
    // What arrived is still read; a stream the peer had finished ends cleanly.
    if (s.recv._tag === "Open") {
      s.recv = { _tag: "Reset", by: "session", error }
      s.inbound.abortWriter(false, { cause: error })
    }
    s.creditChanged.openUnsafe()
  }

  // ---- writing ------------------------------------------------------------------------------------

  /**
   * Sends `chunk` as Data frames of min(credit, max frame, what is left), each once `credit.sendsNow`
   * allows it: at once when the rest fits in the credit or the credit reaches the send threshold, else
   * after a hold of at most the override delay (sender-side silly-window avoidance, see `credit.ts`).
   * Completes when the last frame is queued for the writer.
   */
  const sendFrom = (s: StreamState, chunk: Uint8Array, offset: number): Effect.Effect<void, DuplexError> =>
    Effect.suspend(() => {
      const error = writeError(s, "write", failure())
      if (error !== undefined) return Exit.fail(error)
      const left = chunk.length - offset
      if (left <= 0) return Exit.void
      if (!credit.sendsNow(s, left)) return Effect.andThen(credit.awaitCredit(s, left), sendFrom(s, chunk, offset))
      if (!outbound.hasRoom()) return Effect.andThen(outbound.awaitRoom, sendFrom(s, chunk, offset))
      const n = Math.min(s.sendCredit, maxFrameBytes, left)
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
        writeError(s, "write", failure()) === undefined
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
        const error = writeError(s, "end", failure())
        if (error !== undefined) return yield* error
        const seq = localEnd(s)
        yield* outbound.awaitWritten(seq) // half-closed once every byte before it is on its way
      })
    )

  const abortStream = (s: StreamState): Effect.Effect<void> => Effect.sync(() => localAbort(s))

  // ---- reading ------------------------------------------------------------------------------------

  /** What a read fails with, given the pipe's own error. */
  const readError =
    (s: StreamState) =>
    (error: DuplexError): DuplexError => {
      const recv = s.recv
      if (recv._tag === "Reset") {
        if (recv.by === "local") return error
        if (recv.error !== undefined) return recv.error
      }
      const failed = failure()
      return failed !== undefined ? failed : error
    }

  const toDuplex = (s: StreamState): Duplex.Duplex => {
    const waitingRead: Effect.Effect<Option.Option<Uint8Array>, DuplexError> = s.inbound.read.pipe(
      Effect.tap(() => Effect.sync(() => credit.consumed(s))),
      Effect.mapError(readError(s))
    )
    // A chunk already buffered is taken without the effects a waiting read needs.
    const read: Effect.Effect<Option.Option<Uint8Array>, DuplexError> = Effect.suspend(() => {
      const chunk = s.inbound.takeUnsafe()
      if (chunk === undefined) return waitingRead
      credit.consumed(s)
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

  return { newStream, scoped, peerFin, peerReset, sessionFailed, abort: localAbort }
}
