/**
 * What the consumers of an inbound pipe that end with a value share (the store-and-forward collector, the
 * spill echo's pump until a wait): attaching, detaching at the end or at an interruption, and resuming
 * the effect that waits on them once.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type { DuplexError } from "../DuplexError.js"
import type { BytePipe, PushSink } from "./bytePipe.js"

/** @internal */
export abstract class PipeConsumer<A> implements PushSink {
  readonly takesLent = true
  protected done = false

  constructor(
    protected readonly from: BytePipe,
    private readonly resume: (exit: Exit.Exit<A, DuplexError>) => void
  ) {}

  abstract chunk(bytes: Uint8Array, lent: boolean): number
  abstract end(): void

  fail(error: DuplexError): void {
    this.finish(Exit.fail(error))
  }

  /** Attaches; what the pipe holds already is delivered at once, and may have finished the consumer. */
  start(): void {
    this.from.attachUnsafe(this)
    if (this.done) this.from.detachSink(this)
  }

  /** Interruption: the consumer detaches; later chunks stay in the pipe. */
  get interrupted(): Effect.Effect<void> {
    return Effect.sync(() => {
      if (this.done) return
      this.done = true
      this.from.detachSink(this)
    })
  }

  protected finish(exit: Exit.Exit<A, DuplexError>): void {
    if (this.done) return
    this.done = true
    this.from.detachSink(this)
    this.resume(exit)
  }
}

/** Runs the consumer `make` builds until it finishes. @internal */
export const consume = <A>(
  make: (resume: (exit: Exit.Exit<A, DuplexError>) => void) => PipeConsumer<A>
): Effect.Effect<A, DuplexError> =>
  Effect.callback<A, DuplexError>((resume) => {
    const consumer = make(resume)
    consumer.start()
    return consumer.interrupted
  })
