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
import { type BytePipe, KEPT, TAKEN } from "./bytePipe.js"
import { consume, PipeConsumer } from "./pipeConsumer.js"

/**
 * Hands every chunk of `from` to `take` until the pipe's EOF (succeeds with `true`) or until `take`
 * answers `false` (succeeds with `false`; the chunk it was given is its own). Fails with the source's
 * error if it aborts. Interruption detaches: later chunks stay in the pipe.
 *
 * @internal
 */
export const collect = (from: BytePipe, take: (bytes: Uint8Array) => boolean): Effect.Effect<boolean, DuplexError> =>
  consume((resume) => new Collector(from, take, resume))

class Collector extends PipeConsumer<boolean> {
  constructor(
    from: BytePipe,
    private readonly take: (bytes: Uint8Array) => boolean,
    resume: (exit: Exit.Exit<boolean, DuplexError>) => void
  ) {
    super(from, resume)
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
}
