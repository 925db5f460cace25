/**
 * A consumer of a duplex's inbound pipe that takes every chunk in the step that delivers it, with no fiber
 * and no read per chunk: the store-and-forward echo's request, gathered as it arrives.
 *
 * Like the {@link pump}'s, the collector is the pipe's {@link PushSink} itself. It keeps what it is given
 * (bytes lent by a socket are answered {@link KEPT}, so the socket reads its next chunk into a new
 * buffer) until the pipe's EOF, or until `take` answers `false`: then it detaches, and what the peer
 * sends afterwards is buffered in the pipe for whoever reads next (a lingering close discards it).
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type { DuplexError } from "../DuplexError.js"
import { type BytePipe, KEPT, type PushSink, TAKEN } from "./bytePipe.js"

/**
 * Hands every chunk of `from` to `take` until the pipe's EOF (succeeds with `true`) or until `take`
 * answers `false` (succeeds with `false`; the chunk it was given is its own). Fails with the source's
 * error if it aborts. Interruption detaches: later chunks stay in the pipe.
 *
 * @internal
 */
export const collect = (from: BytePipe, take: (bytes: Uint8Array) => boolean): Effect.Effect<boolean, DuplexError> =>
  Effect.callback<boolean, DuplexError>((resume) => {
    const running = new Collector(from, take, resume)
    running.start()
    return running.interrupted
  })

class Collector implements PushSink {
  readonly takesLent = true
  private done = false

  constructor(
    private readonly from: BytePipe,
    private readonly take: (bytes: Uint8Array) => boolean,
    private readonly resume: (exit: Exit.Exit<boolean, DuplexError>) => void
  ) {}

  start(): void {
    this.from.attachUnsafe(this)
    // `attachUnsafe` delivers what is buffered already, and that may have finished the collector.
    if (this.done) this.from.detachSink(this)
  }

  get interrupted(): Effect.Effect<void> {
    return Effect.sync(() => {
      if (this.done) return
      this.done = true
      this.from.detachSink(this)
    })
  }

  chunk(bytes: Uint8Array, lent: boolean): number {
    if (this.done) return TAKEN
    if (!this.take(bytes)) {
      this.finish(Exit.succeed(false))
      return TAKEN
    }
    return lent ? KEPT : TAKEN
  }

  end(): void {
    this.finish(Exit.succeed(true))
  }

  fail(error: DuplexError): void {
    this.finish(Exit.fail(error))
  }

  private finish(exit: Exit.Exit<boolean, DuplexError>): void {
    if (this.done) return
    this.done = true
    this.from.detachSink(this)
    this.resume(exit)
  }
}
