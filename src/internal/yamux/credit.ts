/**
 * Credit accounting of a yamux session, both ways: the receive windows we grant (returned as the
 * application reads, grown while a stream is held back by its window, bounded by the session's buffer),
 * and the send credit the peer grants, which a stream's write waits for under the session's stall watch,
 * holding back frames too small to be worth sending (sender-side silly-window avoidance).
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

/**
 * The override delay of sender-side silly-window avoidance, in milliseconds: the longest a write holds
 * back a Data frame smaller than its stream's send threshold while more of it waits for credit (RFC 1122
 * §4.2.3.4, the override timeout; TCP's is "typically 0.1 to 1 second", sized for network round trips).
 * 20 ms: a peer that returns credit a piece at a time, a millisecond apart, fills an 8 KiB window well
 * within it, so the override samples the window the peer keeps rather than a moment of its refill; and a
 * peer that withholds credit gets what it did grant 20 ms late, never later.
 */
export const SEND_HOLD_OVERRIDE_MILLIS = 20

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
  /** The peer's window update: `bytes` more we may send on `s` (which may raise `s.sendWindow`). */
  readonly granted: (s: StreamState, bytes: number) => void
  /** A write with `left` bytes to go may queue a frame now: it has credit, and no reason to hold it back. */
  readonly sendsNow: (s: StreamState, left: number) => boolean
  /**
   * Waits until a write with `left` bytes to go may send (`sendsNow`), its hold is overridden, or the
   * stream fails. A wait with zero credit is bounded by the stall limit: the session's stall watch fails it
   * once it has lasted `stallMillis` (one timer for the session, not one per wait); a hold, by
   * {@link SEND_HOLD_OVERRIDE_MILLIS}.
   */
  readonly awaitCredit: (s: StreamState, left: number) => Effect.Effect<void, DuplexError>
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
  /*
   * Sender-side silly-window avoidance (RFC 813; RFC 1122 §4.2.3.4), the counterpart of the Clark rule
   * above, for a peer that returns credit in small pieces:
   *
   * - The peer's window. yamux never tells the sender the peer's window, so each stream estimates it:
   *   `s.sendWindow`, the most credit held at once. It starts at the spec's 256 KiB initial window; the
   *   peer's SYN or ACK, and every later window update, raise it whenever the credit held exceeds it.
   * - The threshold: min(sendWindow / 2, maxFrameBytes), as the receiver's.
   * - The rule. A write with `left` bytes to go and `credit` > 0 sends min(credit, maxFrameBytes, left) at
   *   once when credit ≥ left (the rest of the write fits: nothing more is queued) or credit ≥ the
   *   threshold. Otherwise (0 < credit < threshold, credit < left) it holds: it waits for credit as a write
   *   with none does, on `creditChanged`, and credit that reaches the threshold (or the rest of the write)
   *   ends the hold at once.
   * - The override. A peer may legally withhold credit, or never hold more than a small window out, so a
   *   hold ends once it has lasted SEND_HOLD_OVERRIDE_MILLIS. The credit held then is what the peer lets
   *   us have, its effective window: `sendWindow` is lowered to it, and the frame leaves. From then on
   *   frames are about sendWindow / 2, until credit beyond the estimate raises it again.
   *
   * The estimate is only as good as the sample: a peer that pauses (or is not run) for longer than the
   * delay during a hold has its estimate lowered below the window it keeps. Credit beyond the estimate
   * raises it again, at once with a peer that returns credit in updates of half its window (Clark's rule,
   * as `Mux` does); with one that keeps returning tiny pieces, frames shrink toward its pieces, as they
   * were without the hold.
   *
   * Deadlock freedom: every hold ends within the override delay, whatever the peer does, and credit only
   * grows during a wait, so a hold never turns back into a wait with zero credit. The one timer is the
   * hold's own (a sleep raced with `creditChanged`, only while a hold lasts); the fast path (`writeChunk`
   * with a chunk that fits in the credit) never holds: the rest of its write fits.
   *
   * A hold counts as waiting for credit in the stream's stats (`blockedSince` covers it), but the stall
   * watch fails only a wait with zero credit (`stallTimeout`'s contract): a stream in a hold has credit,
   * and sends it within the override delay.
   */
  const sendThresholdOf = (s: StreamState): number => Math.min(Math.floor(s.sendWindow / 2), config.maxFrameBytes)
  const sendsNow = (s: StreamState, left: number): boolean =>
    s.sendCredit > 0 && (s.sendCredit >= left || s.sendCredit >= sendThresholdOf(s))

  const awaitCredit = (s: StreamState, left: number): Effect.Effect<void, DuplexError> =>
    Effect.suspend(() => {
      if (sendsNow(s, left) || writeError(s, "write", failure()) !== undefined) return Exit.void
      s.blockedSince = nowMillis()
      // A hold is not the stall watch's to watch, and never becomes a wait it watches (credit only grows).
      if (s.sendCredit === 0 && stallWatchIdle) {
        stallWatchIdle = false
        stallWake.openUnsafe()
      }
      return Effect.ensuring(
        waitCredit(s, left, undefined),
        Effect.sync(() => endBlocked(s))
      )
    })
  /** `heldSince`: when the hold in progress began (the first look that found credit, below the threshold). */
  const waitCredit = (s: StreamState, left: number, heldSince: number | undefined): Effect.Effect<void, DuplexError> =>
    Effect.suspend(() => {
      const stalled = s.stalled
      if (stalled !== undefined) {
        s.stalled = undefined
        return Exit.fail(stalled)
      }
      if (sendsNow(s, left) || writeError(s, "write", failure()) !== undefined) return Exit.void
      s.creditChanged.closeUnsafe()
      if (s.sendCredit === 0) return Effect.andThen(s.creditChanged.await, waitCredit(s, left, undefined))
      const now = nowMillis()
      const since = heldSince ?? now
      const remaining = since + SEND_HOLD_OVERRIDE_MILLIS - now
      if (remaining <= 0) {
        // The override: the peer lets us hold no more than this. At this estimate the credit held is past
        // the threshold (half of it), so the write sends it all.
        s.sendWindow = s.sendCredit
        return Exit.void
      }
      return Effect.andThen(
        Effect.raceFirst(s.creditChanged.await, Effect.sleep(remaining)),
        waitCredit(s, left, since)
      )
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
   * Fails each credit wait that has lasted `stallMillis` with zero credit, sleeping until the earliest
   * deadline. Every wait has the same limit, so a wait that starts later never has an earlier deadline:
   * the watch needs waking only when it had no wait to watch. A wait with credit (a hold, or a wait just
   * granted some) ends on its own within the override delay: it is passed over.
   */
  const stallWatch = Effect.gen(function* () {
    while (true) {
      const now = nowMillis()
      let earliest: number | undefined
      const stalled: Array<StreamState> = []
      for (const s of streams.values()) {
        if (s.blockedSince === undefined || s.sendCredit > 0) continue
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
      if (s.sendCredit > s.sendWindow) s.sendWindow = s.sendCredit
      s.creditChanged.openUnsafe()
    },
    sendsNow,
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
