/**
 * Credit accounting of a yamux session, both ways: the receive windows we grant (returned as the
 * application reads, grown while a stream is held back by its window, bounded by the session's buffer),
 * and the send credit the peer grants, which a stream's write waits for under the session's stall watch.
 *
 * @internal
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Latch from "effect/Latch"
import { DuplexError, StallDetected } from "../../DuplexError.js"
import { encodeHeader, INITIAL_STREAM_WINDOW_BYTES, TYPE_WINDOW_UPDATE } from "./codec.js"
import type { Outbound } from "./outbound.js"
import type { SessionConfig } from "./session.js"
import { type StreamState, writeError } from "./stream.js"

/** @internal */
export interface Credit {
  /** Extra window announced with our SYN or ACK, beyond the spec's initial 256 KiB. */
  readonly extraWindow: number
  /**
   * What the session may have to buffer: what it holds unread (streams already forgotten included) plus
   * the credit its open streams' peers still have. A new stream is admitted only if its window fits too.
   */
  readonly committedBytes: () => number
  /** `bytes` of payload went into a stream's buffer. */
  readonly buffered: (bytes: number) => void
  /** What `s` had buffered is dropped (a reset or an abort). */
  readonly dropBuffered: (s: StreamState) => void
  /** After a read: return credit once enough has been consumed. */
  readonly consumed: (s: StreamState) => void
  /** The window update queued for `s`, as written now; `undefined` when there is no credit to return. */
  readonly windowUpdate: (s: StreamState) => Uint8Array | undefined
  /** The peer's window update: `bytes` more we may send on `s`. */
  readonly granted: (s: StreamState, bytes: number) => void
  /**
   * Waits until the stream has credit (or fails), bounded by the stall limit: the session's stall watch
   * fails the wait once it has lasted `stallMillis` (one timer for the session, not one per wait).
   */
  readonly awaitCredit: (s: StreamState) => Effect.Effect<void, DuplexError>
  /** The stall watch, to run as a fiber for the session's lifetime. */
  readonly stallWatch: Effect.Effect<never>
  /** Bytes received and not yet read, over every stream. */
  readonly bufferedBytes: number
  /** The most `bufferedBytes` has been. */
  readonly peakBufferedBytes: number
  readonly windowUpdatesOut: number
}

/** @internal */
export const makeCredit = (
  config: SessionConfig,
  clock: Clock.Clock,
  streams: ReadonlyMap<number, StreamState>,
  outbound: Outbound,
  failure: () => DuplexError | undefined,
  /** Buffer room may have come back (bytes read or dropped): see `StreamTable.roomFreed`. */
  roomFreed: () => void
): Credit => {
  const nowMillis = () => clock.currentTimeMillisUnsafe()

  // ---- what we may receive ------------------------------------------------------------------------
  /** Bytes received and not yet read, over every stream: added as payload arrives, taken as it is read or dropped. */
  let bufferedTotal = 0
  let peakBuffered = 0
  let windowUpdatesOut = 0
  /**
   * Credit is returned once half the window has been read since the last update (Clark's rule, and
   * hashicorp/yamux's: never a silly window). Not capped at a frame: with the window grown to 1 MiB, an
   * update per frame's worth (256 KiB) cost four updates per MiB, each a write and a wake-up of the
   * sender, and one stream ran about 10% slower over loopback than with an update per half window.
   */
  const thresholdOf = (s: StreamState): number => Math.floor(s.window / 2)

  const committedBytes = (): number => {
    let credit = 0
    for (const s of streams.values()) if (s.recv._tag === "Open") credit += s.recvCredit
    return bufferedTotal + credit
  }

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

  const windowUpdate = (s: StreamState): Uint8Array | undefined => {
    s.updateQueued = false
    const delta = s.inbound.bytesOut - s.creditedOut
    // A direction the peer finished, or a reset stream, gets no more credit.
    if (delta <= 0 || s.recv._tag !== "Open") return undefined
    s.creditedOut = s.inbound.bytesOut
    const creditLeft = s.recvCredit
    s.recvCredit += delta
    const growth = growthOf(s, creditLeft)
    s.window += growth
    s.recvCredit += growth
    windowUpdatesOut++
    return encodeHeader(TYPE_WINDOW_UPDATE, 0, s.id, delta + growth)
  }

  const consumed = (s: StreamState): void => {
    bufferedTotal -= s.inbound.bytesOut - s.countedOut
    s.countedOut = s.inbound.bytesOut
    if (s.recv._tag !== "Open") {
      // No credit follows these bytes (the peer finished, or the stream is gone): their room is back for
      // good. Bytes of an open direction are not: the credit they return will be granted again.
      roomFreed()
      return
    }
    if (s.updateQueued) return
    if (s.inbound.bytesOut - s.creditedOut >= thresholdOf(s)) {
      s.updateQueued = true
      outbound.enqueue({ update: s })
    }
  }

  // ---- what we may send ---------------------------------------------------------------------------
  const awaitCredit = (s: StreamState): Effect.Effect<void, DuplexError> =>
    Effect.suspend(() => {
      if (s.sendCredit > 0 || writeError(s, "write", failure()) !== undefined) return Exit.void
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
      if (s.sendCredit > 0 || writeError(s, "write", failure()) !== undefined) return Exit.void
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

  return {
    extraWindow: config.windowBytes - INITIAL_STREAM_WINDOW_BYTES,
    committedBytes,
    buffered: (bytes) => {
      bufferedTotal += bytes
      if (bufferedTotal > peakBuffered) peakBuffered = bufferedTotal
    },
    dropBuffered: (s) => {
      bufferedTotal -= s.inbound.buffered
      roomFreed()
    },
    consumed,
    windowUpdate,
    granted: (s, bytes) => {
      s.sendCredit += bytes
      s.creditChanged.openUnsafe()
    },
    awaitCredit,
    stallWatch,
    get bufferedBytes() {
      return bufferedTotal
    },
    get peakBufferedBytes() {
      return peakBuffered
    },
    get windowUpdatesOut() {
      return windowUpdatesOut
    }
  }
}
