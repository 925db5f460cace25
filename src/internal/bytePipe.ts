/**
 * A one-way pipe bounded in bytes: the buffer behind every fullduplex direction.
 *
 * One writer side, one reader side. Writers are served in FIFO order; a write that fits in the free room
 * is accepted at once, a larger one fills the room and waits with the rest. A read takes everything that
 * is available: the buffered chunks and, hand-over style, the rest of every waiting write, which then
 * completes. So the buffer never holds more than `capacity` bytes from writers that wait (push sources,
 * which cannot wait, may overshoot by one chunk), a writer is held back until a reader comes, and
 * `capacity = 0` is a lockstep rendezvous.
 *
 * Nothing here copies bytes: chunks and their `subarray` pieces are passed by reference.
 *
 * @internal
 */
import * as Cause from "effect/Cause"
import type * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as Pull from "effect/Pull"
import { Broken, Closed, DuplexError } from "../DuplexError.js"

/** @internal */
export type Batch = readonly [Uint8Array, ...Array<Uint8Array>]

interface PendingWrite {
  rest: Uint8Array
  resume: ((exit: Exit.Exit<void, DuplexError>) => void) | undefined
  outcome: Exit.Exit<void, DuplexError> | undefined
}

/** Why the writer side went away, when it was not a plain abort of a pair. @internal */
export interface BrokenCause {
  readonly code?: string | undefined
  readonly cause?: unknown
}

/** @internal */
export class BytePipe {
  /** Bytes accepted from the writer side: buffered, or handed over to a reader. */
  bytesIn = 0
  /** Bytes delivered to the reader side. */
  bytesOut = 0
  buffered = 0
  peakBuffered = 0
  writerState: "open" | "ended" | "aborted" = "open"
  readerClosed = false
  /** Called when a read empties a buffer that a push source filled (see {@link offerUnsafe}). */
  onRoom: (() => void) | undefined = undefined

  private chunks: Array<Uint8Array> = []
  private writers: Array<PendingWrite> = []
  private readers: Array<(exit: Exit.Exit<void>) => void> = []
  private full = false
  private brokenCause: BrokenCause | undefined = undefined
  private blockedSince: bigint | undefined = undefined
  private blockedNanos = 0n

  constructor(
    readonly capacity: number,
    /** Label of the duplex that writes into this pipe. */
    readonly writerLabel: string,
    /** Label of the duplex that reads from it. */
    readonly readerLabel: string,
    private readonly clock: Clock.Clock
  ) {}

  // ---------------------------------------------------------------------------------------------------
  // writer side
  // ---------------------------------------------------------------------------------------------------

  /**
   * Accepts `chunk`, waiting while the buffer is full.
   *
   * Interruption: the bytes that fitted before the wait stay accepted (they are in `bytesIn`); the rest
   * is dropped. Closing: an abort of either side completes a waiting write with `Closed` (own abort) or
   * `Broken` (the reader side closed).
   */
  readonly write = (chunk: Uint8Array): Effect.Effect<void, DuplexError> =>
    Effect.suspend(() => {
      const error = this.writeError("write")
      if (error !== undefined) return Exit.fail(error)
      let rest = chunk
      if (this.writers.length === 0) {
        const room = this.capacity - this.buffered
        if (rest.length <= room) {
          if (rest.length > 0) {
            this.push(rest)
            this.bytesIn += rest.length
            this.wakeReaders()
          }
          return Exit.void
        }
        if (room > 0) {
          this.push(rest.subarray(0, room))
          this.bytesIn += room
          rest = rest.subarray(room)
        }
      }
      const pending: PendingWrite = { rest, resume: undefined, outcome: undefined }
      this.writers.push(pending)
      this.startBlocked()
      this.wakeReaders()
      return Effect.callback<void, DuplexError>((resume) => {
        if (pending.outcome !== undefined) return resume(pending.outcome)
        pending.resume = resume
        return Effect.sync(() => this.cancelWrite(pending))
      })
    })

  /**
   * Accepts `chunk` without waiting, for push sources such as a Node stream's `'data'` events. Returns
   * `false` once the buffer is full: the source should pause until {@link onRoom} is called. Chunks
   * offered after the pipe closed are dropped.
   */
  offerUnsafe(chunk: Uint8Array): boolean {
    if (this.readerClosed || this.writerState !== "open") return true
    if (chunk.length > 0) {
      this.push(chunk)
      this.bytesIn += chunk.length
      this.wakeReaders()
    }
    if (this.buffered >= this.capacity && !this.full) {
      this.full = true
      this.startBlocked()
    }
    return !this.full
  }

  /** Half-close: EOF reaches the reader after every accepted and waiting byte. Idempotent. */
  end(): DuplexError | undefined {
    if (this.writerState === "ended") return undefined
    const error = this.writeError("end")
    if (error !== undefined) return error
    this.writerState = "ended"
    this.wakeReaders()
    return undefined
  }

  /**
   * The writer side is gone. With `discard` (a reset) buffered bytes are dropped and the reader fails at
   * once; without it (a source that failed after delivering data) the reader gets the buffered bytes
   * first. Waiting writes fail with `Closed`: they belong to the side that aborted.
   */
  abortWriter(discard: boolean, cause?: BrokenCause): void {
    if (this.writerState === "aborted") return
    this.writerState = "aborted"
    this.brokenCause = cause
    if (discard) this.clear()
    this.failWriters(() => this.closedError("write", "abort"))
    this.wakeReaders()
  }

  // ---------------------------------------------------------------------------------------------------
  // reader side
  // ---------------------------------------------------------------------------------------------------

  /**
   * The next batch: everything available. Fails with `Cause.Done` at EOF.
   *
   * Interruption: a read interrupted while waiting took nothing. Closing: `Closed` after the reader
   * side closed, `Broken` once the writer side aborted (after the buffered bytes, if it did not discard
   * them), `Done` after `end` and the last byte.
   */
  readonly pull: Pull.Pull<Batch, DuplexError> = Effect.suspend(() => this.pullNow())

  private pullNow(): Pull.Pull<Batch, DuplexError> {
    if (this.readerClosed) return Exit.fail(this.closedRead())
    if (this.buffered > 0 || this.writers.length > 0) return Exit.succeed(this.takeAll())
    if (this.writerState === "ended") return Exit.fail(Cause.Done())
    if (this.writerState === "aborted") return Exit.fail(this.brokenRead())
    return Effect.flatMap(this.waitReadable, () => this.pull)
  }

  // The reader's `resume` itself is the waiter: no closure is made per wait on this hot path.
  private readonly waitReadable: Effect.Effect<void> = Effect.callback<void>((resume) => {
    this.readers.push(resume)
    return Effect.sync(() => {
      const i = this.readers.indexOf(resume)
      if (i >= 0) this.readers.splice(i, 1)
    })
  })

  /** The reader side is gone: buffered bytes are dropped, waiting writers fail with `Broken`. */
  closeReader(): void {
    if (this.readerClosed) return
    this.readerClosed = true
    this.clear()
    this.failWriters(() => this.brokenWrite("write"))
    this.wakeReaders()
  }

  // ---------------------------------------------------------------------------------------------------
  // accounting
  // ---------------------------------------------------------------------------------------------------

  /** A writer is held back right now: it waits for room, or a push source was told to pause. */
  get blocked(): boolean {
    return this.blockedSince !== undefined
  }

  /** Total time a writer was held back by this pipe, in milliseconds. */
  blockedMillis(): number {
    const ongoing = this.blockedSince === undefined ? 0n : this.clock.monotonicTimeNanosUnsafe() - this.blockedSince
    return Number(this.blockedNanos + ongoing) / 1e6
  }

  /** Errors a writer would get now, if any. */
  writeError(operation: "write" | "end"): DuplexError | undefined {
    if (this.writerState === "ended") return this.closedError(operation, "end")
    if (this.writerState === "aborted") return this.closedError(operation, "abort")
    if (this.readerClosed) return this.brokenWrite(operation)
    return undefined
  }

  // ---------------------------------------------------------------------------------------------------
  // internals
  // ---------------------------------------------------------------------------------------------------

  private push(chunk: Uint8Array): void {
    this.chunks.push(chunk)
    this.buffered += chunk.length
    if (this.buffered > this.peakBuffered) this.peakBuffered = this.buffered
  }

  private takeAll(): Batch {
    const batch = this.chunks
    let handed = 0
    if (this.writers.length > 0) {
      // Hand-over: the reader takes the rest of every waiting write, so the writers complete without the
      // buffer ever growing past its capacity.
      const writers = this.writers
      this.writers = []
      for (const w of writers) {
        batch.push(w.rest)
        handed += w.rest.length
        w.outcome = Exit.void
        w.resume?.(Exit.void)
      }
      this.bytesIn += handed
      this.stopBlocked()
    }
    this.bytesOut += this.buffered + handed
    this.chunks = []
    this.buffered = 0
    if (this.full) {
      this.full = false
      this.stopBlocked()
      this.onRoom?.()
    }
    return batch as unknown as Batch
  }

  private cancelWrite(pending: PendingWrite): void {
    const i = this.writers.indexOf(pending)
    if (i < 0) return
    this.writers.splice(i, 1)
    if (this.writers.length === 0) this.stopBlocked()
  }

  private failWriters(error: () => DuplexError): void {
    if (this.writers.length === 0) return
    const writers = this.writers
    this.writers = []
    for (const w of writers) {
      w.outcome = Exit.fail(error())
      w.resume?.(w.outcome)
    }
    this.stopBlocked()
  }

  private clear(): void {
    this.chunks = []
    this.buffered = 0
    if (this.full) {
      this.full = false
      this.stopBlocked()
    }
  }

  private wakeReaders(): void {
    if (this.readers.length === 0) return
    const readers = this.readers
    this.readers = []
    for (const resume of readers) resume(Exit.void)
  }

  private startBlocked(): void {
    if (this.blockedSince === undefined) this.blockedSince = this.clock.monotonicTimeNanosUnsafe()
  }

  private stopBlocked(): void {
    if (this.blockedSince === undefined || this.writers.length > 0 || this.full) return
    this.blockedNanos += this.clock.monotonicTimeNanosUnsafe() - this.blockedSince
    this.blockedSince = undefined
  }

  private closedError(operation: "read" | "write" | "end", after: "end" | "abort"): DuplexError {
    const direction = operation === "read" ? "inbound" : "outbound"
    const label = operation === "read" ? this.readerLabel : this.writerLabel
    const bytes = operation === "read" ? this.bytesOut : this.bytesIn
    return new DuplexError({ reason: new Closed({ label, direction, operation, after, bytes }) })
  }

  private closedRead(): DuplexError {
    return this.closedError("read", "abort")
  }

  private brokenRead(): DuplexError {
    const c = this.brokenCause
    return new DuplexError({
      reason: new Broken({
        label: this.readerLabel,
        direction: "inbound",
        operation: "read",
        bytes: this.bytesOut,
        code: c?.code,
        cause: c?.cause
      })
    })
  }

  private brokenWrite(operation: "write" | "end"): DuplexError {
    return new DuplexError({
      reason: new Broken({ label: this.writerLabel, direction: "outbound", operation, bytes: this.bytesIn })
    })
  }
}
