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
import { type BytePipe, KEPT, type OutboundPort, PAUSE, type PushSink, TAKEN } from "./bytePipe.js"
import { consume, PipeConsumer } from "./pipeConsumer.js"

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
    const running = new Pump(from, to, options.endOnEof, resume)
    running.start()
    return running.interrupted
  })

/**
 * Copies `a` into `b` and `b` into `a` at once, each direction a pump with `endOnEof` (its EOF half-closes
 * the other side), and succeeds with the bytes each copied once both are done: the two pumps of a splice in
 * one callback, with no fiber per direction.
 *
 * The first failure stops the other direction (it detaches), runs `abort` and fails with it. Interruption
 * stops both and runs `abort`.
 *
 * @internal
 */
export const pumpBoth = (
  aIn: BytePipe,
  bOut: OutboundPort,
  bIn: BytePipe,
  aOut: OutboundPort,
  abort: () => Effect.Effect<void>
): Effect.Effect<{ readonly aToB: number; readonly bToA: number }, DuplexError> =>
  Effect.callback<{ readonly aToB: number; readonly bToA: number }, DuplexError>((resume) => {
    const both = new PumpPair(resume, abort)
    const aToB = new Pump(aIn, bOut, true, both, 0)
    const bToA = new Pump(bIn, aOut, true, both, 1)
    both.pumps = [aToB, bToA]
    aToB.start()
    bToA.start()
    return both.interrupted
  })

/** The two pumps of {@link pumpBoth}, and what each copied. */
class PumpPair {
  pumps: readonly [Pump, Pump] | undefined = undefined
  aToB = 0
  bToA = 0
  private pending = 2
  private finished = false

  constructor(
    private readonly resume: (
      effect: Effect.Effect<{ readonly aToB: number; readonly bToA: number }, DuplexError>
    ) => void,
    private readonly abort: () => Effect.Effect<void>
  ) {}

  done(which: 0 | 1, exit: Exit.Exit<number, DuplexError>): void {
    if (this.finished) return
    if (Exit.isFailure(exit)) {
      this.stop()
      return this.resume(Effect.andThen(this.abort(), Effect.failCause(exit.cause)))
    }
    if (which === 0) this.aToB = exit.value
    else this.bToA = exit.value
    if (--this.pending === 0) {
      this.finished = true
      this.resume(Effect.succeed({ aToB: this.aToB, bToA: this.bToA }))
    }
  }

  get interrupted(): Effect.Effect<void> {
    return Effect.suspend(() => {
      this.stop()
      return this.abort()
    })
  }

  private stop(): void {
    if (this.finished) return
    this.finished = true
    this.pumps?.[0].stop()
    this.pumps?.[1].stop()
  }
}

/**
 * A running pump: the source's consumer itself (its methods are the {@link PushSink}'s), so that an idle
 * pump is this one object and no closure; the callbacks a destination needs are made when it first makes
 * the pump wait.
 */
class Pump implements PushSink {
  readonly takesLent = true
  private bytes = 0
  private done = false
  /** The destination's wait for room, while there is one. */
  private waiting: (() => void) | undefined = undefined
  private onRoomFn: ((error: DuplexError | undefined) => void) | undefined = undefined

  /** `resume` is the pump's callback, or the pair it is one of (told with its index: no closure per pump). */
  constructor(
    private readonly from: BytePipe,
    private readonly to: OutboundPort,
    private readonly endOnEof: boolean,
    private readonly resume: ((exit: Exit.Exit<number, DuplexError>) => void) | PumpPair,
    private readonly which: 0 | 1 = 0
  ) {}

  start(): void {
    if (this.done) return // stopped before it started (the other pump of a pair failed at once)
    this.from.attachUnsafe(this)
    // `attachUnsafe` delivers what is buffered already, and that may have finished the pump.
    if (this.done) this.from.detachSink(this)
  }

  /** Interruption: the pump detaches; what was handed over stays handed over. */
  get interrupted(): Effect.Effect<void> {
    return Effect.sync(() => this.stop())
  }

  /** Detaches, and cancels the destination's wait: what was handed over stays handed over. */
  stop(): void {
    if (this.done) return
    this.done = true
    this.release()
  }

  chunk(bytes: Uint8Array, lent: boolean): number {
    if (this.done) return TAKEN
    this.bytes += bytes.length
    const wait = this.to.writeUnsafe(bytes, (this.onRoomFn ??= (error) => this.onRoom(error)))
    if (wait === undefined) return lent && this.to.holdsBytes() ? KEPT : TAKEN
    this.waiting = wait
    return lent ? PAUSE | KEPT : PAUSE
  }

  end(): void {
    if (this.done) return
    if (!this.endOnEof) return this.finish(Exit.succeed(this.bytes))
    this.to.endUnsafe((error) => this.finish(error === undefined ? Exit.succeed(this.bytes) : Exit.fail(error)))
  }

  fail(error: DuplexError): void {
    this.finish(Exit.fail(error))
  }

  private onRoom(error: DuplexError | undefined): void {
    this.waiting = undefined
    if (error !== undefined) return this.finish(Exit.fail(error))
    this.from.resumeSink(this)
  }

  /** Cancels the destination's wait, if any, and detaches from the source. */
  private release(): void {
    const wait = this.waiting
    this.waiting = undefined
    wait?.()
    this.from.detachSink(this)
  }

  private finish(exit: Exit.Exit<number, DuplexError>): void {
    if (this.done) return
    this.done = true
    this.release()
    if (typeof this.resume === "function") this.resume(exit)
    else this.resume.done(this.which, exit)
  }
}

/** How {@link pumpUntilWait} ended: at the source's EOF, or at the first hand-over the destination could not take at once. @internal */
export type UntilWait =
  | { readonly _tag: "End" }
  | {
      readonly _tag: "Waiting"
      /** Completes once the destination has taken the rest of that hand-over (fails with its error). */
      readonly room: Effect.Effect<void, DuplexError>
    }

/**
 * Copies `from` into `to` as {@link pump} does while the destination takes every chunk at once, and
 * detaches at the first it cannot: that chunk stays with the destination, and `room` completes once it
 * has taken it. What the source delivers afterwards stays in its pipe for the caller to read. So a copy
 * that must go on reading while its destination waits (the spill echo) is one object while nothing waits.
 *
 * Interruption: the pump detaches (once it has succeeded with `Waiting`, interrupting `room` cancels the
 * destination's wait: the rest of that chunk is dropped).
 *
 * @internal
 */
export const pumpUntilWait = (from: BytePipe, to: OutboundPort): Effect.Effect<UntilWait, DuplexError> =>
  consume((resume) => new WaitPump(from, to, resume))

class WaitPump extends PipeConsumer<UntilWait> {
  private wait: (() => void) | undefined = undefined
  private onRoomFn: ((error: DuplexError | undefined) => void) | undefined = undefined
  /** The destination's answer, once it came: `null` for room, else its error. */
  private answer: DuplexError | null | undefined = undefined
  private resumeRoom: ((exit: Exit.Exit<void, DuplexError>) => void) | undefined = undefined

  constructor(
    from: BytePipe,
    private readonly to: OutboundPort,
    resume: (exit: Exit.Exit<UntilWait, DuplexError>) => void
  ) {
    super(from, resume)
  }

  chunk(bytes: Uint8Array, lent: boolean): number {
    if (this.done) return TAKEN
    const wait = this.to.writeUnsafe(bytes, (this.onRoomFn ??= (error) => this.onRoom(error)))
    if (wait === undefined) return lent && this.to.holdsBytes() ? KEPT : TAKEN
    this.wait = wait
    this.finish(Exit.succeed({ _tag: "Waiting", room: this.room }))
    return lent ? KEPT : TAKEN
  }

  end(): void {
    this.finish(Exit.succeed({ _tag: "End" }))
  }

  private get room(): Effect.Effect<void, DuplexError> {
    return Effect.callback<void, DuplexError>((resume) => {
      if (this.answer !== undefined) return resume(this.answer === null ? Exit.void : Exit.fail(this.answer))
      this.resumeRoom = resume
      return Effect.sync(() => {
        this.resumeRoom = undefined
        const wait = this.wait
        this.wait = undefined
        wait?.()
      })
    })
  }

  private onRoom(error: DuplexError | undefined): void {
    this.wait = undefined
    this.answer = error ?? null
    const resume = this.resumeRoom
    this.resumeRoom = undefined
    resume?.(error === undefined ? Exit.void : Exit.fail(error))
  }
}
