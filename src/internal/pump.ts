/**
 * A one-way copy from a duplex's inbound pipe to a destination's outbound port, with no fiber per chunk.
 *
 * The pump is a consumer attached to the source's {@link BytePipe}: each chunk is handed to the
 * destination in the step that delivers it (a socket's read callback, a peer's write). When the
 * destination cannot take more at once, the pump answers {@link PAUSE}: the source's pipe holds deliveries
 * back (and pauses its source, as for a reader that does not read), until the destination calls back with
 * room. So the pump holds no byte of its own, and the bounds are the two sides' own: the source's
 * `highWaterMark` and the destination's. Bytes lent by the source (a socket reading into a reused buffer)
 * are answered {@link KEPT} when the destination still holds them.
 *
 * Effect sees the pump only at its edges: it starts, it ends (the source's EOF, after the destination's
 * half-close when asked), it fails (either side's error), or it is interrupted (the pump detaches; what
 * was handed over stays handed over).
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type { DuplexError } from "../DuplexError.js"
import { type Attachment, type BytePipe, KEPT, type OutboundPort, PAUSE, TAKEN } from "./bytePipe.js"

/** @internal */
export interface PumpOptions {
  /** At the source's EOF, half-close the destination and complete once it has finished. */
  readonly endOnEof: boolean
}

/**
 * Copies `from` into `to` until the source's EOF; succeeds with the bytes copied.
 *
 * Interruption: the pump detaches; bytes handed to the destination stay handed over, a chunk the
 * destination was still waiting to take is dropped. Closing: an abort of either side fails the pump
 * with that side's error.
 *
 * @internal
 */
export const pump = (from: BytePipe, to: OutboundPort, options: PumpOptions): Effect.Effect<number, DuplexError> =>
  Effect.callback<number, DuplexError>((resume) => {
    const stop = start(from, to, options, resume)
    return Effect.sync(stop)
  })

const start = (
  from: BytePipe,
  to: OutboundPort,
  options: PumpOptions,
  resume: (exit: Exit.Exit<number, DuplexError>) => void
): (() => void) => {
  let bytes = 0
  let done = false
  /** The destination's wait for room, while there is one. */
  let waiting: (() => void) | undefined
  // Set once `attach` returns; it may deliver (and the pump finish) before that.
  let attachment: Attachment | undefined
  /** Cancels the destination's wait, if any, and detaches from the source. */
  const release = (): void => {
    const wait = waiting
    waiting = undefined
    wait?.()
    attachment?.detach()
  }
  const finish = (exit: Exit.Exit<number, DuplexError>): void => {
    if (done) return
    done = true
    release()
    resume(exit)
  }
  const onRoom = (error: DuplexError | undefined): void => {
    waiting = undefined
    if (error !== undefined) return finish(Exit.fail(error))
    attachment?.resume()
  }
  attachment = from.attach({
    takesLent: true,
    chunk: (chunk, lent) => {
      if (done) return TAKEN
      bytes += chunk.length
      const wait = to.writeUnsafe(chunk, onRoom)
      if (wait === undefined) return lent && to.holdsBytes() ? KEPT : TAKEN
      waiting = wait
      return lent ? PAUSE | KEPT : PAUSE
    },
    end: () => {
      if (done) return
      if (!options.endOnEof) return finish(Exit.succeed(bytes))
      to.endUnsafe((error) => finish(error === undefined ? Exit.succeed(bytes) : Exit.fail(error)))
    },
    fail: (error) => finish(Exit.fail(error))
  })
  if (done) attachment.detach()
  return () => {
    if (done) return
    done = true
    release()
  }
}
