/**
 * The outbound scheduler of a yamux session: the control queue, the data path, and the one writer fiber
 * that writes both to the connection, control frames first.
 *
 * Nothing here waits on the connection except the writer: queuing a frame never blocks, and a stream's
 * write waits only for room in the data path (`awaitRoom`), never for another stream.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as Latch from "effect/Latch"
import type * as Duplex from "../../Duplex.js"
import { DuplexError, ProtocolError } from "../../DuplexError.js"
import { GO_AWAY_PROTOCOL_ERROR, HEADER_BYTES } from "./codec.js"
import type { StreamState } from "./stream.js"

/**
 * Control frames that may wait while the writer is held back by the connection; beyond it the peer is not
 * reading and the session fails.
 */
export const MAX_CONTROL_FRAMES = 4096

/** Data-path bytes queued for the writer before streams' writes wait: the session's send buffer. */
export const MAX_OUTGOING_BYTES = 256 * 1024

/** A control frame, or a stream's window update (computed when written). */
export interface ControlItem {
  readonly frame?: Uint8Array | undefined
  readonly update?: StreamState | undefined
}

/**
 * Opens a latch once the current step is over. Opening a latch resumes its waiters at once, inside the
 * caller's step: the writer (and over a pair, the peer's whole reaction) or a `close` would then run
 * halfway through a state change. Deferred to a microtask, every change is complete first, and frames
 * queued in the same step leave in one write.
 */
export const soon = (latch: Latch.Latch): void => {
  queueMicrotask(() => latch.openUnsafe())
}

/** What the scheduler asks of the rest of the session. */
export interface OutboundHooks {
  /** The session's failure, once it has failed: nothing more is queued, and waits end. */
  readonly failure: () => DuplexError | undefined
  /** Ends the session (the control queue overflowed: the peer does not read). */
  readonly fail: (error: DuplexError, goAwayCode: number | undefined) => void
  /** A queued window update as a frame, computed as it is written; `undefined` when none is due any more. */
  readonly windowUpdate: (s: StreamState) => Uint8Array | undefined
}

/** @internal */
export interface Outbound {
  /** Queues a control frame (ACK, RST, Ping ACK, window update): written ahead of the data path. */
  readonly enqueue: (item: ControlItem) => void
  /** Queues a data-path frame (SYN, Data, FIN, RST, our GoAway): `header`, then `payload` if any. Returns its sequence number. */
  readonly queueFrame: (header: Uint8Array, payload?: Uint8Array) => number
  /** The data path has room: a frame queued now does not overfill the session's send buffer. */
  readonly hasRoom: () => boolean
  /** Waits until the data path has room (or the session failed). */
  readonly awaitRoom: Effect.Effect<void>
  /** Waits until the frame numbered `seq` has been written (or the session failed). */
  readonly awaitWritten: (seq: number) => Effect.Effect<void, DuplexError>
  /** The sequence number of the last data-path frame queued. */
  readonly lastQueued: () => number
  /** The one writer of the connection, to run as a fiber; fails when a write to the connection does. */
  readonly writerLoop: Effect.Effect<never, DuplexError>
  /** The session failed: what waits to be written is dropped, and waits for room or for a write end. */
  readonly clear: () => void
  /**
   * The session is ending gracefully: from now on nothing is queued (a frame offered is dropped), and this
   * waits until everything queued before is written, so that our FIN can follow it with nothing after.
   */
  readonly seal: Effect.Effect<void, DuplexError>
  /** Control frames waiting to be written. */
  readonly controlQueued: number
  readonly framesOut: number
  readonly dataFramesOut: number
}

/** @internal */
export const makeOutbound = (conn: Duplex.Duplex, label: string, hooks: OutboundHooks): Outbound => {
  const control: Array<ControlItem> = []
  /** Wakes the writer: control frames or data wait. */
  const writerWake = Latch.makeUnsafe(false)
  let writerScheduled = false
  /** The writer is in a write the connection has not taken yet. */
  let writerHeld = false
  const wakeWriter = (): void => {
    if (writerScheduled) return
    writerScheduled = true
    queueMicrotask(() => {
      writerScheduled = false
      writerWake.openUnsafe()
    })
  }
  /** Data-path frames (SYN, Data, FIN) waiting for the writer, in order, as header and payload pieces. */
  let outgoing: Array<Uint8Array> = []
  /** Bytes queued in `outgoing` or being written: bounded by {@link MAX_OUTGOING_BYTES}. */
  let outgoingBytes = 0
  /** Data-path items queued, and written: `end` waits until its FIN is written. */
  let queuedSeq = 0
  let writtenSeq = 0
  /** Opened when `outgoing` has room again, or something was written. */
  const outgoingMoved = Latch.makeUnsafe(true)
  let framesOut = 0
  let dataFramesOut = 0
  /** Nothing more is queued: the session is ending gracefully (see `seal`). */
  let sealed = false

  // ---- control queue ------------------------------------------------------------------------------
  const enqueue = (item: ControlItem): void => {
    if (hooks.failure() !== undefined || sealed) return
    control.push(item)
    // Only a writer held back by the connection says the peer does not read: a queue that grew within
    // one read of the connection (a burst of pings) leaves in the writer's next round.
    if (control.length > MAX_CONTROL_FRAMES && writerHeld) {
      hooks.fail(
        new DuplexError({
          reason: new ProtocolError({
            label,
            problem: `more than ${MAX_CONTROL_FRAMES} control frames wait to be written: the peer does not read`
          })
        }),
        GO_AWAY_PROTOCOL_ERROR
      )
      return
    }
    wakeWriter()
  }

  /** Every queued control frame, as one buffer. */
  const drainControl = (): Uint8Array | undefined => {
    if (control.length === 0) return undefined
    const items = control.splice(0, control.length)
    const frames: Array<Uint8Array> = []
    for (const item of items) {
      if (item.frame !== undefined) frames.push(item.frame)
      else if (item.update !== undefined) {
        const frame = hooks.windowUpdate(item.update)
        if (frame !== undefined) frames.push(frame)
      }
    }
    if (frames.length === 0) return undefined
    framesOut += frames.length
    if (frames.length === 1) return frames[0]
    const out = Buffer.allocUnsafe(frames.length * HEADER_BYTES)
    frames.forEach((f, i) => out.set(f, i * HEADER_BYTES))
    return out
  }

  // ---- the writer ---------------------------------------------------------------------------------
  /**
   * The one writer of the connection: each round writes every queued control frame, then every queued
   * data-path frame, in one `writeAll`. Control first: an ACK queued by the reader reaches the wire
   * before any data the application writes on that stream afterwards; a stream's own frames keep their
   * order, FIN after its data.
   */
  const flushOnce: Effect.Effect<void, DuplexError> = Effect.suspend(() => {
    const controlBytes = drainControl()
    const data = outgoing
    const dataBytes = outgoingBytes
    const seq = queuedSeq
    if (controlBytes === undefined && data.length === 0) {
      outgoingMoved.openUnsafe() // the control queue may have emptied into nothing: `seal` waits for that
      return Effect.void
    }
    outgoing = []
    const pieces = controlBytes === undefined ? data : [controlBytes, ...data]
    writerHeld = true
    return Effect.map(conn.writeAll(pieces), () => {
      writerHeld = false
      outgoingBytes -= dataBytes
      writtenSeq = seq
      outgoingMoved.openUnsafe()
    })
  })
  const writerLoop = Effect.gen(function* () {
    while (true) {
      yield* writerWake.await
      writerWake.closeUnsafe()
      yield* flushOnce
      if (control.length > 0 || outgoing.length > 0) writerWake.openUnsafe()
    }
  })

  // ---- the data path ------------------------------------------------------------------------------
  const queueFrame = (header: Uint8Array, payload?: Uint8Array): number => {
    if (sealed) return queuedSeq
    outgoing.push(header)
    framesOut++
    if (payload !== undefined && payload.length > 0) {
      outgoing.push(payload)
      outgoingBytes += payload.length
      dataFramesOut++
    }
    outgoingBytes += HEADER_BYTES
    // Numbered before the wake-up: opening a latch resumes its waiter at once, and the writer must see
    // this frame's number with the frame.
    const seq = ++queuedSeq
    wakeWriter()
    return seq
  }

  const awaitRoom: Effect.Effect<void> = Effect.suspend(function loop(): Effect.Effect<void> {
    if (outgoingBytes < MAX_OUTGOING_BYTES || hooks.failure() !== undefined) return Effect.void
    outgoingMoved.closeUnsafe()
    return Effect.andThen(outgoingMoved.await, loop)
  })

  const awaitWritten = (seq: number): Effect.Effect<void, DuplexError> =>
    Effect.suspend(function loop(): Effect.Effect<void, DuplexError> {
      if (writtenSeq >= seq) return Effect.void
      const failure = hooks.failure()
      if (failure !== undefined) return Effect.fail(failure)
      outgoingMoved.closeUnsafe()
      return Effect.andThen(outgoingMoved.await, loop)
    })

  /** Waits until nothing is queued and no write is in progress (or the session failed). */
  const awaitIdle: Effect.Effect<void, DuplexError> = Effect.suspend(function loop(): Effect.Effect<void, DuplexError> {
    const failure = hooks.failure()
    if (failure !== undefined) return Effect.fail(failure)
    if (control.length === 0 && outgoing.length === 0 && !writerHeld) return Effect.void
    wakeWriter()
    outgoingMoved.closeUnsafe()
    return Effect.andThen(outgoingMoved.await, loop)
  })

  return {
    enqueue,
    queueFrame,
    hasRoom: () => outgoingBytes < MAX_OUTGOING_BYTES,
    awaitRoom,
    awaitWritten,
    lastQueued: () => queuedSeq,
    writerLoop,
    clear: () => {
      control.length = 0
      outgoing = []
      outgoingMoved.openUnsafe()
    },
    seal: Effect.suspend(() => {
      sealed = true
      return awaitIdle
    }),
    get controlQueued() {
      return control.length
    },
    get framesOut() {
      return framesOut
    },
    get dataFramesOut() {
      return dataFramesOut
    }
  }
}
