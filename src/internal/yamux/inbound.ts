/**
 * Inbound dispatch of a yamux session: the reader of the connection. It decodes frames and dispatches
 * each at once (payload into its stream's buffer, flags and window updates into the streams' state),
 * and never writes and never waits: whatever it must answer goes to the control queue.
 *
 * @internal
 */
import type * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type * as Duplex from "../../Duplex.js"
import { Broken, DuplexError, ProtocolError } from "../../DuplexError.js"
import { type BytePipe, inboundPipeOf, TAKEN } from "../bytePipe.js"
import {
  encodeHeader,
  FLAG_ACK,
  FLAG_FIN,
  FLAG_RST,
  FLAG_SYN,
  FrameDecoder,
  GO_AWAY_PROTOCOL_ERROR,
  type Header,
  PROTOCOL_VERSION,
  SESSION_STREAM_ID,
  TYPE_DATA,
  TYPE_GO_AWAY,
  TYPE_PING,
  TYPE_WINDOW_UPDATE
} from "./codec.js"
import type { Credit } from "./credit.js"
import type { Outbound } from "./outbound.js"
import type { SessionConfig } from "./session.js"
import { isReset, type StreamState, type Streams, type StreamTable } from "./stream.js"

const protocolError = (label: string, problem: string) =>
  new DuplexError({ reason: new ProtocolError({ label, problem }) })

/** What the reader asks of the session's lifecycle. */
export interface InboundHooks {
  /** The session's failure, once it has failed: the reader stops. */
  readonly failure: () => DuplexError | undefined
  /** Ends the session (see the session's `failUnsafe`). */
  readonly fail: (error: DuplexError, goAwayCode: number | undefined) => void
  /** The peer's EOF with no stream left: the session ends gracefully (see the session's `endGracefully`). */
  readonly ended: () => void
  /** Our GoAway is out: the peer's SYNs are refused. */
  readonly goingAway: () => boolean
  /** The peer's GoAway, with its code. */
  readonly goAway: (code: number) => void
  /** The peer answered our ping `opaque`. */
  readonly pong: (opaque: number) => void
}

/** @internal */
export interface Inbound {
  /**
   * Starts reading the connection: attached to its inbound pipe when it has one (nothing more to run);
   * otherwise the read loop is returned, to run as a fiber.
   */
  readonly start: () => Effect.Effect<void> | undefined
  /** Stops the reader consumer attached to the connection's pipe, if there is one. */
  readonly detach: () => void
  readonly framesIn: number
}

/** @internal */
export const makeInbound = (
  conn: Duplex.Duplex,
  config: SessionConfig,
  clock: Clock.Clock,
  table: StreamTable,
  streams: Streams,
  credit: Credit,
  outbound: Outbound,
  hooks: InboundHooks
): Inbound => {
  const { label, windowBytes } = config
  const nowMillis = () => clock.currentTimeMillisUnsafe()
  const decoder = new FrameDecoder()
  let framesIn = 0
  /** Stops the reader consumer attached to the connection's pipe, if there is one. */
  let detachReader = (): void => {}
  /** The session stopped reading (it failed or ended): a chunk read meanwhile is not dispatched. */
  let detached = false
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
            hooks.goingAway() ||
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
          hooks.pong(h.length)
          return undefined
        }
        return protocolError(label, "a ping with neither SYN nor ACK")
      }
      case TYPE_GO_AWAY: {
        hooks.goAway(h.length)
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
    if (table.streams.size === 0) hooks.ended()
    else hooks.fail(ended, undefined)
    return undefined
  }

  /** Reading failed: the peer broke the protocol (GoAway, code 1) or the connection broke. */
  const onReadError = (error: DuplexError): void =>
    hooks.fail(error, error.reason._tag === "ProtocolError" ? GO_AWAY_PROTOCOL_ERROR : undefined)

  /** The reader as a fiber, for a duplex that can only be read; it stops once detached. */
  const readLoop = Effect.gen(function* () {
    while (hooks.failure() === undefined && !detached) {
      const chunk = yield* conn.read
      if (detached) return
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
        if (hooks.failure() !== undefined) return TAKEN
        const error = dispatch(bytes)
        if (error !== undefined) stop(error)
        return TAKEN
      },
      end: () => {
        if (hooks.failure() !== undefined) return
        const error = onEnd()
        if (error !== undefined) stop(error)
      },
      fail: (error) => {
        if (hooks.failure() === undefined) stop(error)
      }
    })
    // What was buffered was dispatched during `attach`, and may have ended the session already.
    if (hooks.failure() !== undefined) detach()
    else detachReader = detach
  }

  /**
   * Dispatches every frame of one chunk of the connection, then wakes each stream that got data, once:
   * its reader takes all of it in one turn (waking it per piece would cost a suspension per piece).
   */
  const dispatch = (chunk: Uint8Array): DuplexError | undefined => {
    decoder.push(chunk)
    try {
      for (let d = decoder.next(); d !== undefined && hooks.failure() === undefined; d = decoder.next()) {
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

  return {
    start: () => {
      const pipe = inboundPipeOf(conn)
      if (pipe !== undefined) {
        attachReader(pipe)
        return undefined
      }
      return readLoop.pipe(Effect.catch((error) => Effect.sync(() => onReadError(error))))
    },
    detach: () => {
      detached = true
      detachReader()
    },
    get framesIn() {
      return framesIn
    }
  }
}
