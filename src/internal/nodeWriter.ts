/**
 * The outbound side of a duplex over a Node `Writable`.
 *
 * Writes are served in call order and never interleave: a write hands its chunk to the stream in pieces
 * of at most `highWaterMark` bytes while the stream holds less than its own `writableHighWaterMark`, and
 * completes once every piece is handed over and the stream is below its mark again. A write that has to
 * wait is a {@link Job} in one FIFO, driven by a `'drain'` listener that stays on the stream for its life
 * (as do the `'close'` and `'error'` listeners), so nothing is added or removed per write and no fiber
 * waits per piece: a batch (`writeAll`, a pump's chunk) is one job however many pieces it has.
 *
 * The bound: a piece is handed over only while the stream holds less than `writableHighWaterMark`, so at
 * most `writableHighWaterMark + highWaterMark` bytes wait in user space for the kernel.
 *
 * @internal
 */
import type * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as net from "node:net"
import type * as NodeStream from "node:stream"
import type { DirectionStats } from "../Duplex.js"
import { Broken, Closed, DuplexError } from "../DuplexError.js"
import type { OutboundPort } from "./bytePipe.js"
import { codeOf } from "./errors.js"
import { type SideEndTarget, type Stopper, stopWatching, watchSideEnd } from "./streamEnd.js"

type Done = (error: DuplexError | undefined) => void

/** A write (or the end) waiting for room, in call order. */
interface Job {
  readonly chunks: ReadonlyArray<Uint8Array>
  /** The next chunk to hand over, and the offset in it. */
  index: number
  offset: number
  /** An `end` queued behind the writes before it. */
  readonly end: boolean
  readonly done: Done
}

const NO_CHUNKS: ReadonlyArray<Uint8Array> = []

const noop = () => {}

/** The empty list a writer starts with, shared and never written to (see {@link NodeWriter.pushJob}). */
const NONE: Array<never> = []

/** Where a stream keeps its writer, for the listeners that every writer shares. */
const WRITER = Symbol("fullduplex/NodeWriter")

type Fed = NodeStream.Writable & { [WRITER]?: NodeWriter | undefined }

// Shared by every stream written: Node calls a listener with the stream as `this`, and the writer is on
// the stream, so a writer makes no closure for them.
function onDrainShared(this: Fed): void {
  this[WRITER]?.onDrain()
}
function onCloseOrErrorShared(this: Fed, err?: unknown): void {
  this[WRITER]?.onCloseOrError(err)
}

/** @internal */
export class NodeWriter implements OutboundPort, SideEndTarget {
  /** Bytes handed to the stream. */
  bytes = 0
  peakBuffered = 0
  private jobs: Array<Job> = NONE
  private flushing = false
  /** Our abort or scope close: every operation fails `Closed`. */
  private closed = false
  /** `end` was called: later writes fail `Closed`. */
  private endRequested = false
  /** The end's outcome once the stream finished (or failed to); `null` while it runs. */
  private endOutcome: DuplexError | undefined | null = null
  private endStarted = false
  private endWaiters: Array<Done> = NONE
  private stopWatchingEnd: (() => void) | Stopper | undefined
  private blockedSince: bigint | undefined = undefined
  private blockedNanos = 0n
  /** Whether bytes handed over are done with once `writableLength` is 0 (a socket), so a lent buffer is free. */
  private readonly releasesOnWrite: boolean

  constructor(
    private readonly output: NodeStream.Writable,
    private readonly highWaterMark: number,
    private readonly label: string,
    private readonly clock: Clock.Clock,
    /** The OS code to report when the stream is found closed without an error of its own. */
    private readonly closedCode: (() => string | undefined) | undefined
  ) {
    this.releasesOnWrite = output instanceof net.Socket
    ;(output as Fed)[WRITER] = this
    output.on("drain", onDrainShared)
    output.on("close", onCloseOrErrorShared)
    output.on("error", onCloseOrErrorShared)
  }

  // ---------------------------------------------------------------------------------------------------
  // the duplex's operations
  // ---------------------------------------------------------------------------------------------------

  // `write`, `writeAll`, `end` and the wait for room are made on first use, as the pipe's members are: a
  // connection that never writes through them (a pump's) holds none.
  get write(): (chunk: Uint8Array) => Effect.Effect<void, DuplexError> {
    return (this.writeFn ??= (chunk) => this.writeNow(chunk))
  }
  private writeFn: ((chunk: Uint8Array) => Effect.Effect<void, DuplexError>) | undefined = undefined

  private writeNow(chunk: Uint8Array): Effect.Effect<void, DuplexError> {
    return Effect.suspend(() => {
      // Fast path, one synchronous step: nobody else is writing, the stream has room, the chunk is one
      // piece. Order is kept: with no write queued, this one is next in line anyway.
      if (this.jobs.length === 0 && chunk.length <= this.highWaterMark && this.room() && this.canWrite()) {
        if (chunk.length > 0 && !this.put(chunk)) return Exit.fail(this.streamFailure("write")!)
        // Handed over; what is left is to wait for room, behind any write queued meanwhile.
        return this.room() ? Exit.void : this.waitRoom
      }
      return Effect.callback<void, DuplexError>((resume) => {
        const cancel = this.writeUnsafe(chunk, (error) => resume(error === undefined ? Exit.void : Exit.fail(error)))
        if (cancel === undefined) return resume(Exit.void)
        return Effect.sync(cancel)
      })
    })
  }

  /**
   * Several chunks as one write. While the stream has room they are corked and handed over together (one
   * `writev`), so a frame's header and payload leave in one system call.
   */
  get writeAll(): (chunks: Iterable<Uint8Array>) => Effect.Effect<void, DuplexError> {
    return (this.writeAllFn ??= (chunks) => this.writeAllNow(chunks))
  }
  private writeAllFn: ((chunks: Iterable<Uint8Array>) => Effect.Effect<void, DuplexError>) | undefined = undefined

  private writeAllNow(chunks: Iterable<Uint8Array>): Effect.Effect<void, DuplexError> {
    return Effect.suspend(() => {
      const list = Array.isArray(chunks) ? (chunks as ReadonlyArray<Uint8Array>) : [...chunks]
      if (list.length === 1) return this.write(list[0]!)
      if (list.length === 0) return Exit.void
      return Effect.callback<void, DuplexError>((resume) => {
        const cancel = this.start(list, false, (error) => resume(error === undefined ? Exit.void : Exit.fail(error)))
        if (cancel === undefined) return resume(Exit.void)
        return Effect.sync(cancel)
      })
    })
  }

  /** Half-close once every write before it is handed over; completes when the stream has finished. */
  get end(): Effect.Effect<void, DuplexError> {
    return (this.endEffect ??= Effect.callback<void, DuplexError>((resume) => {
      const done: Done = (error) => resume(error === undefined ? Exit.void : Exit.fail(error))
      this.endUnsafe(done)
      return Effect.sync(() => {
        const i = this.endWaiters.indexOf(done)
        if (i >= 0) this.endWaiters.splice(i, 1)
      })
    }))
  }
  private endEffect: Effect.Effect<void, DuplexError> | undefined = undefined

  /** Waits until the stream has room, behind every write queued before. */
  private get waitRoom(): Effect.Effect<void, DuplexError> {
    return (this.waitRoomEffect ??= Effect.callback<void, DuplexError>((resume) => {
      if (this.jobs.length === 0 && this.room()) return resume(Exit.void)
      const job: Job = {
        chunks: NO_CHUNKS,
        index: 0,
        offset: 0,
        end: false,
        done: (error) => resume(error === undefined ? Exit.void : Exit.fail(error))
      }
      this.queue(job)
      return Effect.sync(() => this.cancel(job))
    }))
  }
  private waitRoomEffect: Effect.Effect<void, DuplexError> | undefined = undefined

  // ---------------------------------------------------------------------------------------------------
  // OutboundPort
  // ---------------------------------------------------------------------------------------------------

  writeUnsafe(chunk: Uint8Array, done: Done): (() => void) | undefined {
    if (this.jobs.length === 0 && chunk.length <= this.highWaterMark && this.room() && this.canWrite()) {
      if (chunk.length > 0 && !this.put(chunk)) {
        done(this.streamFailure("write"))
        return noop
      }
      if (this.room()) return undefined
      const job: Job = { chunks: NO_CHUNKS, index: 0, offset: 0, end: false, done }
      this.queue(job)
      return () => this.cancel(job)
    }
    return this.start([chunk], false, done)
  }

  holdsBytes(): boolean {
    return !this.releasesOnWrite || this.output.writableLength > 0
  }

  endUnsafe(done: Done): void {
    if (this.closed) return done(this.closedError("end", "abort"))
    if (this.endOutcome !== null) return done(this.endOutcome)
    if (this.endRequested) {
      this.waitEnd(done)
      return
    }
    this.endRequested = true
    this.waitEnd(done)
    if (this.jobs.length === 0) this.startEnd()
    else this.pushJob({ chunks: NO_CHUNKS, index: 0, offset: 0, end: true, done: noop })
  }

  // ---------------------------------------------------------------------------------------------------
  // closing and stats
  // ---------------------------------------------------------------------------------------------------

  /** Our side is closed: pending and later operations fail `Closed`. The stream is left as it is. */
  closeLocal(): void {
    if (this.closed) return
    this.closed = true
    this.failAll(() => this.closedError("write", "abort"))
    // An end already settled (the usual close after a clean `end`) needs no error: building one, with its
    // stack, was a tenth of a short connection's cost.
    if (this.endOutcome === null) this.settleEnd(this.closedError("end", "abort"))
  }

  /** The end was requested and the stream has finished writing. */
  get endedCleanly(): boolean {
    return this.endRequested && this.output.writableFinished
  }

  stats(): DirectionStats {
    return {
      bytes: this.bytes,
      buffered: this.output.writableLength,
      peakBuffered: this.peakBuffered,
      blocked: this.blockedSince !== undefined,
      blockedMillis: this.blockedMillis()
    }
  }

  /** Removes the listeners this writer put on the stream. */
  dispose(): void {
    const output = this.output as Fed
    output.off("drain", onDrainShared)
    output.off("close", onCloseOrErrorShared)
    output.off("error", onCloseOrErrorShared)
    if (output[WRITER] === this) output[WRITER] = undefined
    this.stopEnd()
  }

  private stopEnd(): void {
    const stop = this.stopWatchingEnd
    this.stopWatchingEnd = undefined
    if (stop !== undefined) stopWatching(this.output, stop)
  }

  /** The stream's writable side finished (after our `end`), or failed. */
  sideEnded(err: Error | undefined): void {
    this.stopEnd()
    this.settleEnd(err ? this.cutShort("end", err) : undefined)
  }

  // ---------------------------------------------------------------------------------------------------
  // internals
  // ---------------------------------------------------------------------------------------------------

  /** The stream takes a piece now: it holds less than its high-water mark (or nothing). */
  private room(): boolean {
    const length = this.output.writableLength
    return length === 0 || length < this.output.writableHighWaterMark
  }

  private canWrite(): boolean {
    return !this.closed && !this.endRequested && !this.output.destroyed && !this.output.writableEnded
  }

  /**
   * Hands `piece` to the stream. False when the stream failed in that step (a write's `EPIPE` marks it
   * errored at once, and destroys it a tick later): the piece is not counted as accepted.
   */
  private put(piece: Uint8Array): boolean {
    const output = this.output
    output.write(piece)
    if (this.failed()) return false
    this.bytes += piece.length
    const length = output.writableLength
    if (length > this.peakBuffered) this.peakBuffered = length
    return true
  }

  /** A write of `chunks`: handed over now as far as there is room, the rest queued. */
  private start(chunks: ReadonlyArray<Uint8Array>, end: boolean, done: Done): (() => void) | undefined {
    const error = this.failure("write")
    if (error !== undefined) {
      done(error)
      return noop
    }
    const job: Job = { chunks, index: 0, offset: 0, end, done }
    if (this.jobs.length === 0) {
      if (this.advance(job)) return undefined
      const failed = this.streamFailure("write")
      if (failed !== undefined) {
        done(failed)
        return noop
      }
    }
    this.queue(job)
    return () => this.cancel(job)
  }

  /** Lists are made when their first element comes: an idle writer holds none. */
  private pushJob(job: Job): void {
    if (this.jobs === NONE) this.jobs = []
    this.jobs.push(job)
  }

  private waitEnd(done: Done): void {
    if (this.endWaiters === NONE) this.endWaiters = []
    this.endWaiters.push(done)
  }

  private queue(job: Job): void {
    this.pushJob(job)
    if (this.blockedSince === undefined) this.blockedSince = this.clock.monotonicTimeNanosUnsafe()
  }

  /**
   * Hands the job's pieces to the stream while it has room. True when every piece is handed over and the
   * stream still has room (the write is complete); false when it waits for room, or the stream failed.
   */
  private advance(job: Job): boolean {
    const chunks = job.chunks
    const output = this.output
    while (job.index < chunks.length) {
      if (!this.room() || this.failed()) return false
      // Several pieces at once leave in one `writev`.
      const cork = chunks.length - job.index > 1
      if (cork) output.cork()
      let failed = false
      while (job.index < chunks.length && this.room()) {
        const chunk = chunks[job.index]!
        const start = job.offset
        const end = Math.min(chunk.length, start + this.highWaterMark)
        if (end > start && !this.put(start === 0 && end === chunk.length ? chunk : chunk.subarray(start, end))) {
          failed = true
          break
        }
        if (end === chunk.length) {
          job.index++
          job.offset = 0
        } else job.offset = end
      }
      if (cork && !output.destroyed) output.uncork()
      if (failed) return false
    }
    return this.room() && !this.failed()
  }

  /** The stream failed or was destroyed (a write's `EPIPE` marks it errored in the same step). */
  private failed(): boolean {
    return this.output.destroyed || this.output.errored != null
  }

  onDrain(): void {
    if (this.jobs.length > 0) this.flush()
  }

  /** Serves queued jobs in order while the stream has room. */
  private flush(): void {
    if (this.flushing) return
    this.flushing = true
    try {
      while (this.jobs.length > 0) {
        const job = this.jobs[0]!
        if (job.end) {
          this.jobs.shift()
          this.startEnd()
          continue
        }
        // Writes queued before an `end` still go out: only our abort or the stream's own failure stops them.
        const error = this.streamFailure("write")
        if (error !== undefined) return this.failAll(() => error)
        if (!this.advance(job)) return
        this.jobs.shift()
        job.done(undefined)
      }
      this.stopBlocked()
    } finally {
      this.flushing = false
    }
  }

  private cancel(job: Job): void {
    const i = this.jobs.indexOf(job)
    if (i < 0) return
    this.jobs.splice(i, 1)
    if (this.jobs.length === 0) this.stopBlocked()
    // The head was waiting for room; the next one may not have to (it has its own pieces to hand over).
    else if (i === 0 && this.room()) this.flush()
  }

  private failAll(error: () => DuplexError): void {
    if (this.jobs.length === 0) return
    const jobs = this.jobs
    this.jobs = NONE
    this.stopBlocked()
    for (const job of jobs) job.done(error())
  }

  private startEnd(): void {
    if (this.endStarted) return
    this.endStarted = true
    const error = this.failure("end")
    if (error !== undefined) return this.settleEnd(error)
    this.stopWatchingEnd = watchSideEnd(this.output, "writable", this)
    this.output.end()
  }

  private settleEnd(outcome: DuplexError | undefined): void {
    if (this.endOutcome !== null) return
    if (!this.endRequested && outcome === undefined) return
    this.endOutcome = outcome
    const waiters = this.endWaiters
    this.endWaiters = NONE
    for (const done of waiters) done(outcome)
  }

  onCloseOrError(err?: unknown): void {
    if (this.jobs.length === 0) return
    const cause = err instanceof Error ? err : (this.output.errored ?? "closed before drain")
    this.failAll(() => this.cutShort("write", cause))
  }

  /** Why a new write (or the end) cannot go ahead now, if it cannot. */
  private failure(operation: "write" | "end"): DuplexError | undefined {
    if (operation === "write" && this.endRequested && !this.closed) return this.closedError(operation, "end")
    return this.streamFailure(operation)
  }

  /** Our abort, or the stream's own end or failure. */
  private streamFailure(operation: "write" | "end"): DuplexError | undefined {
    if (this.closed) return this.closedError(operation, "abort")
    const output = this.output
    if (output.destroyed || output.writableEnded || output.errored != null) {
      return this.brokenError(operation, output.errored ?? "stream closed")
    }
    return undefined
  }

  private cutShort(operation: "write" | "end", err: unknown): DuplexError {
    return this.closed ? this.closedError(operation, "abort") : this.brokenError(operation, err)
  }

  private closedError(operation: "write" | "end", after: "end" | "abort"): DuplexError {
    return new DuplexError({
      reason: new Closed({ label: this.label, direction: "outbound", operation, after, bytes: this.bytes })
    })
  }

  private brokenError(operation: "write" | "end", err: unknown): DuplexError {
    return new DuplexError({
      reason: new Broken({
        label: this.label,
        direction: "outbound",
        operation,
        bytes: this.bytes,
        code: codeOf(err) ?? this.closedCode?.(),
        cause: err
      })
    })
  }

  private stopBlocked(): void {
    if (this.blockedSince === undefined) return
    this.blockedNanos += this.clock.monotonicTimeNanosUnsafe() - this.blockedSince
    this.blockedSince = undefined
  }

  private blockedMillis(): number {
    const ongoing = this.blockedSince === undefined ? 0n : this.clock.monotonicTimeNanosUnsafe() - this.blockedSince
    return Number(this.blockedNanos + ongoing) / 1e6
  }
}
