/**
 * A one-way pipe bounded in bytes: the buffer behind every fullduplex direction.
 *
 * One writer side, one reader side. Writers are served in FIFO order: a write that fits in the free room
 * is accepted at once; a larger one fills the room and waits with the rest. Each read takes one chunk;
 * once the buffer is empty or half free, the pipe refills from the waiting writes (the piece that fits),
 * completing each write whose last byte is accepted. So a write larger than the capacity proceeds in pieces of at most
 * `capacity` bytes as the reader drains, the buffer never holds more than `capacity` bytes from writers
 * that wait (push sources, which cannot wait, may overshoot by one chunk), and a pair deadlocks where a
 * connection with that much buffering would. With `capacity = 0` nothing is buffered: a read takes the
 * first waiting write whole (a lockstep rendezvous).
 *
 * A read delivers one chunk, never a batch of several, so a consumer that stops after any chunk (a
 * `Stream.take`, a `runHead`) leaves every later byte in the pipe for the next run.
 *
 * Every change of state happens in one synchronous step: in `Effect.suspend` when nothing needs to wait,
 * or in the `Effect.callback` registration that starts the wait. A fiber may yield between any two
 * operations, so a decision taken in one step and acted on in a later one could miss a wake-up.
 *
 * Chunks and their `subarray` pieces are passed by reference, with one exception that bounds memory
 * whatever the chunking: a chunk under {@link COALESCE_BELOW_BYTES} written or offered while others are
 * buffered is copied into a shared block of {@link BLOCK_BYTES} (with the small chunk buffered just before
 * it, if there is one), which records each chunk's length, and a read gets it back as a view of the block,
 * the same bytes and the same boundaries. So a peer that sends 1-byte chunks costs the pipe about two bytes
 * per byte, not an object of about a hundred, and a small piece of a large buffer does not keep that buffer
 * alive. Bytes are only ever written into the part of a block no chunk has been read from. Large chunks,
 * and a small one into an empty buffer (a ping-pong's), are not copied.
 *
 * @internal
 */
import * as Cause from "effect/Cause"
import type * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import type * as Pull from "effect/Pull"
import type { DirectionStats } from "../Duplex.js"
import { Broken, Closed, DuplexError } from "../DuplexError.js"

const noop = () => {}

/**
 * The empty list every pipe starts with, shared and never written to: a list is made when its first
 * element comes (an idle connection's pipe holds none of its four). Every `push` checks for it.
 */
const NONE: Array<never> = []

/**
 * Chunks smaller than this, written or offered while others are buffered, are copied into a block (see
 * the module's doc); larger ones are buffered by reference, where an object per chunk (about 100 bytes)
 * is a few percent of its bytes at most.
 */
export const COALESCE_BELOW_BYTES = 4 * 1024

/** The size of a block small chunks are copied into: four of the largest chunk it takes. */
export const BLOCK_BYTES = 16 * 1024

/**
 * Small chunks copied one after another into `block`, bytes `offset..fill` unread. Their lengths are
 * recorded in `lengths`, one byte each below {@link LONG_LENGTH} and three from it (the mark, then the
 * length big-endian), so that 1-byte chunks cost two bytes each: `lengths[read..written]` are unread.
 */
interface Run {
  block: Uint8Array
  lengths: Uint8Array
  written: number
  read: number
  offset: number
  fill: number
}

/** Told when a full pipe has room again (its source paused meanwhile). @internal */
export interface RoomListener {
  onRoom(): void
}

/** A recorded length of this or more takes three bytes. */
const LONG_LENGTH = 255

/**
 * The writer side of a duplex for code outside any fiber: a pump's destination. Every implementation
 * keeps the duplex's bound: a write that does not fit waits (its `done` is called later), and it is
 * never split across or interleaved with other writes. @internal
 */
export interface OutboundPort {
  /**
   * Hands `chunk` over. Returns `undefined` when it was accepted and more can be handed over now;
   * otherwise `done` is called once (with no error when more can be handed over, or with the error that
   * stopped the write), and the function returned cancels the wait (what was not accepted is dropped).
   */
  readonly writeUnsafe: (chunk: Uint8Array, done: (error: DuplexError | undefined) => void) => (() => void) | undefined
  /** Whether the destination may still read bytes handed over so far (so a lent buffer must not be reused). */
  readonly holdsBytes: () => boolean
  /** Half-close after every byte handed over; `done` gets the error, if it failed. */
  readonly endUnsafe: (done: (error: DuplexError | undefined) => void) => void
}

/** @internal */
export type Batch = readonly [Uint8Array, ...Array<Uint8Array>]

interface PendingWrite {
  rest: Uint8Array
  readonly resume: (exit: Exit.Exit<void, DuplexError>) => void
}

/** Why the writer side went away, when it was not a plain abort of a pair. @internal */
export interface BrokenCause {
  readonly code?: string | undefined
  readonly cause?: unknown
}

/** {@link PushSink.chunk}'s answer: the chunk is taken, deliver the next one when it comes. @internal */
export const TAKEN = 0
/** {@link PushSink.chunk}'s answer (a flag): stop delivering until the attachment's `resume`. @internal */
export const PAUSE = 1
/** {@link PushSink.chunk}'s answer (a flag): the sink still holds the lent bytes; their buffer must not be reused. @internal */
export const KEPT = 2

/**
 * A consumer that takes every chunk as it arrives, in the step that delivers it, instead of reading (see
 * {@link BytePipe.attach}). It answers each chunk with {@link TAKEN}, or with the flags {@link PAUSE} (hold
 * further chunks back until the attachment's `resume`: the source is paused, as for a full buffer) and
 * {@link KEPT}. @internal
 */
export interface PushSink {
  /**
   * Takes `bytes`. When `lent` is true they live in a buffer the source reuses for its next read once
   * this returns: the sink must be done with them by then, or answer {@link KEPT} (the source then reads
   * into a new buffer). Only a sink with `takesLent` is lent bytes.
   */
  readonly chunk: (bytes: Uint8Array, lent: boolean) => number
  /** The writer side ended (EOF), after the last chunk. */
  readonly end: () => void
  /**
   * The writer side aborted: after the chunks it delivered, or at once while the sink is paused (the
   * chunks still buffered are then not delivered).
   */
  readonly fail: (error: DuplexError) => void
  /** The sink copies or keeps what it must of lent bytes, so the source may read into a buffer it reuses. */
  readonly takesLent?: boolean | undefined
}

/** An attached {@link PushSink}'s handle. @internal */
export interface Attachment {
  /** Deliveries go on after a {@link PAUSE}. A no-op once detached. */
  readonly resume: () => void
  /** Later chunks are buffered for readers again. */
  readonly detach: () => void
}

/** @internal */
export class BytePipe {
  /** Bytes accepted from the writer side: buffered, or handed over to a reader. */
  bytesIn = 0
  /** Bytes delivered to the reader side. */
  bytesOut = 0
  /** Chunks offered in a buffer the source reuses ({@link offerLentUnsafe}), and how many of them were copied. */
  lentChunks = 0
  copiedLentChunks = 0
  /** Lent chunks the consumer kept (the source read the next one into a new buffer). */
  keptLentChunks = 0
  /** Small chunks copied into a block rather than buffered by reference (see {@link COALESCE_BELOW_BYTES}). */
  coalescedChunks = 0
  buffered = 0
  peakBuffered = 0
  writerState: "open" | "ended" | "aborted" = "open"
  readerClosed = false
  /** Called when a read makes room in a buffer that a push source filled (see {@link offerUnsafe}). */
  roomListener: RoomListener | undefined = undefined

  /** The attached consumer, if any: it gets chunks in place of readers. */
  private sink: PushSink | undefined = undefined
  /** `deliver` is running: a wake-up from inside it is picked up by its loop. */
  private delivering = false
  /** The attached consumer has been told of the end (or the abort). */
  private sinkDone = false
  /** The attached consumer answered {@link PAUSE} and has not resumed. */
  private sinkPaused = false

  /**
   * Buffered chunks are `chunks[head..]`; the consumed prefix is dropped as reads go. An entry that is a
   * run's block stands for the run's unread chunks (see {@link Run}).
   */
  private chunks: Array<Uint8Array> = NONE
  private head = 0
  /** The chunks buffered, each chunk of a run counted. */
  private queued = 0
  /** The runs among the buffered chunks, oldest first. */
  private runs: Array<Run> = NONE
  /** The oldest run's block, `undefined` when there is none: the one test a read of a large chunk pays. */
  private oldestBlock: Uint8Array | undefined = undefined
  /** The run small chunks are copied into now, if any: the last buffered entry. */
  private openRun: Run | undefined = undefined
  private writers: Array<PendingWrite> = NONE
  private readers: Array<(exit: Exit.Exit<void>) => void> = NONE
  private full = false
  private brokenCause: BrokenCause | undefined = undefined
  /** The error the reader gets after the buffered bytes, in place of `Broken` (see {@link abortWriter}). */
  private brokenOverride: DuplexError | undefined = undefined
  private blockedSince: bigint | undefined = undefined
  private blockedNanos = 0n

  /** The objects that hold buffered bytes: chunks buffered by reference, and blocks. For tests. */
  get bufferedEntries(): number {
    return this.chunks.length - this.head
  }

  constructor(
    /** The bound; {@link setCapacity} changes it (a child's output nobody reads spills up to `maxBuffer`). */
    public capacity: number,
    /** Label of the duplex that writes into this pipe; `undefined`: the reader's, "(peer)". */
    private readonly writerLabelText: string | undefined,
    /** Label of the duplex that reads from it. */
    readonly readerLabel: string,
    private readonly clock: Clock.Clock
  ) {}

  /** Label of the duplex that writes into this pipe (made when an error names it, not per pipe). */
  get writerLabel(): string {
    return this.writerLabelText ?? `${this.readerLabel} (peer)`
  }

  // ---------------------------------------------------------------------------------------------------
  // writer side
  // ---------------------------------------------------------------------------------------------------

  /**
   * Accepts `chunk`, waiting while the buffer is full.
   *
   * Interruption: the pieces accepted before the interruption stay accepted (they are in `bytesIn`);
   * the rest is dropped. Closing: an abort of either side completes a waiting write with `Closed` (own
   * abort) or `Broken` (the reader side closed).
   */
  // `write`, `writeAll`, `port`, `pull`, `pullAll` and their waits are made on first use: a Node socket's
  // inbound pipe, say, is written by its reader (`offerUnsafe`) and read one way only, and every member
  // made for nothing was allocated once per connection.
  get write(): (chunk: Uint8Array) => Effect.Effect<void, DuplexError> {
    return (this.writeFn ??= (chunk) => this.writeNow(chunk))
  }
  private writeFn: ((chunk: Uint8Array) => Effect.Effect<void, DuplexError>) | undefined = undefined

  private writeNow(chunk: Uint8Array): Effect.Effect<void, DuplexError> {
    return Effect.suspend(() => {
      const error = this.writeError("write")
      if (error !== undefined) return Exit.fail(error)
      if (this.writers.length === 0 && chunk.length <= this.capacity - this.buffered) {
        if (chunk.length > 0) {
          this.push(chunk)
          this.bytesIn += chunk.length
          this.wakeReaders()
        }
        return Exit.void
      }
      return Effect.callback<void, DuplexError>((resume) => {
        const pending = this.startWrite(chunk, resume)
        return pending === undefined ? undefined : Effect.sync(() => this.cancelWrite(pending))
      })
    })
  }

  /**
   * `write` of each chunk in order, as one write: the chunks that fit are accepted in one step (each wakes
   * the reader, which may make room for the next), and the write waits only at a chunk that does not fit.
   *
   * Interruption and closing: as for `write`, chunk by chunk.
   */
  get writeAll(): (chunks: Iterable<Uint8Array>) => Effect.Effect<void, DuplexError> {
    return (this.writeAllFn ??= (chunks) =>
      Effect.suspend(() =>
        this.writeFrom(Array.isArray(chunks) ? (chunks as ReadonlyArray<Uint8Array>) : [...chunks], 0)
      ))
  }
  private writeAllFn: ((chunks: Iterable<Uint8Array>) => Effect.Effect<void, DuplexError>) | undefined = undefined

  private writeFrom(list: ReadonlyArray<Uint8Array>, from: number): Effect.Effect<void, DuplexError> {
    const error = this.writeError("write")
    if (error !== undefined) return Exit.fail(error)
    let i = from
    for (; i < list.length; i++) {
      // A reader woken by the chunk before may have closed the pipe: the next round reports it.
      if (i > from && (this.readerClosed || this.writerState !== "open")) return this.writeFrom(list, i)
      const chunk = list[i]!
      if (this.writers.length > 0 || chunk.length > this.capacity - this.buffered) break
      if (chunk.length === 0) continue
      this.push(chunk)
      this.bytesIn += chunk.length
      this.wakeReaders()
    }
    if (i === list.length) return Exit.void
    return Effect.flatMap(this.writeNow(list[i]!), () => this.writeFrom(list, i + 1))
  }

  /**
   * `write` for code outside any fiber (a pump): accepts `chunk`, or as much of it as fits. Returns
   * `undefined` when all of it was accepted; otherwise `done` is called once, when the rest is accepted
   * (with no error) or when the pipe closed (with the error), and the returned function drops the rest.
   */
  writeUnsafe(chunk: Uint8Array, done: (error: DuplexError | undefined) => void): (() => void) | undefined {
    let sync = true
    let failed: DuplexError | undefined
    let completed = false
    const pending = this.startWrite(chunk, (exit) => {
      const error = Exit.isSuccess(exit) ? undefined : (Cause.squash(exit.cause) as DuplexError)
      if (sync) {
        completed = true
        failed = error
      } else done(error)
    })
    sync = false
    if (!completed) return pending === undefined ? noop : () => this.cancelWrite(pending)
    if (failed === undefined) return undefined
    done(failed)
    return noop
  }

  /** This pipe's writer side as a pump's destination. */
  get port(): OutboundPort {
    return (this.portObject ??= {
      writeUnsafe: (chunk, done) => this.writeUnsafe(chunk, done),
      holdsBytes: () => true,
      endUnsafe: (done) => done(this.end())
    })
  }
  private portObject: OutboundPort | undefined = undefined

  /**
   * The slow path of `write`, in one step: accept what fits, queue the rest. Returns the queued write, or
   * `undefined` when `resume` was called already.
   */
  private startWrite(
    chunk: Uint8Array,
    resume: (exit: Exit.Exit<void, DuplexError>) => void
  ): PendingWrite | undefined {
    const error = this.writeError("write")
    if (error !== undefined) {
      resume(Exit.fail(error))
      return undefined
    }
    let rest = chunk
    if (this.writers.length === 0) {
      const room = Math.max(0, this.capacity - this.buffered)
      if (rest.length <= room) {
        this.push(rest)
        this.bytesIn += rest.length
        this.wakeReaders()
        resume(Exit.void)
        return undefined
      }
      if (room > 0) {
        this.push(rest.subarray(0, room))
        this.bytesIn += room
        rest = rest.subarray(room)
      }
    }
    const pending: PendingWrite = { rest, resume }
    if (this.writers === NONE) this.writers = []
    this.writers.push(pending)
    this.startBlocked()
    this.wakeReaders()
    return pending
  }

  /**
   * Accepts `chunk` without waiting, for push sources such as a Node stream's `'data'` events. Returns
   * `false` once the buffer is full: the source should pause until its {@link roomListener} is told. Chunks
   * offered after the pipe closed are dropped. With `wake` false the reader is not woken: a source that
   * offers several chunks in one step calls {@link wakeUnsafe} after the last, so the reader takes them all
   * in one turn.
   */
  offerUnsafe(chunk: Uint8Array, wake = true): boolean {
    if (this.readerClosed || this.writerState !== "open") return true
    if (chunk.length > 0) {
      this.push(chunk)
      this.bytesIn += chunk.length
      if (wake) this.wakeReaders()
    }
    if (this.buffered >= this.capacity && !this.full) {
      this.full = true
      this.startBlocked()
    }
    return !this.full
  }

  /**
   * Offers bytes that live in a buffer the source reuses once this returns (a socket reading into a buffer
   * of its own). An attached consumer that takes lent bytes gets them in place; anything else gets a
   * copy. Returns the consumer's flags: {@link PAUSE} when the source should pause until its {@link roomListener} is told
   * (the consumer paused, or the buffer is full), {@link KEPT} when the buffer must not be reused.
   */
  offerLentUnsafe(bytes: Uint8Array): number {
    if (this.readerClosed || this.writerState !== "open") return TAKEN
    this.lentChunks++
    const sink = this.sink
    if (sink !== undefined && sink.takesLent === true && !this.sinkPaused && this.buffered === 0 && !this.delivering) {
      this.bytesIn += bytes.length
      this.bytesOut += bytes.length
      if (bytes.length < COALESCE_BELOW_BYTES) {
        // A small read goes over as a copy of its own: a consumer that keeps it (a write the kernel did not
        // take at once) must not keep the source's whole read buffer alive for a few bytes, nor make the
        // source read the next one into a new buffer. A peer trickling bytes would cost a buffer per byte.
        this.copiedLentChunks++
        const answer = sink.chunk(Buffer.from(bytes), false) & ~KEPT
        if ((answer & PAUSE) !== 0 && this.sink === sink) this.pauseSink()
        return answer
      }
      const answer = sink.chunk(bytes, true)
      if ((answer & KEPT) !== 0) this.keptLentChunks++
      if ((answer & PAUSE) !== 0 && this.sink === sink) this.pauseSink()
      return answer
    }
    this.copiedLentChunks++
    // A small chunk into a buffer that holds some is copied into a block by `push`: no copy of its own.
    const copy = bytes.length < COALESCE_BELOW_BYTES && this.chunks.length > this.head ? bytes : Buffer.from(bytes)
    return this.offerUnsafe(copy) ? TAKEN : PAUSE
  }

  /**
   * Changes the bound. A push source paused by a full buffer resumes at once if the new bound leaves room;
   * waiting writes move into it. A bound below what is buffered holds the source back from the next offer.
   */
  setCapacity(capacity: number): void {
    this.capacity = capacity
    if (this.full && !this.sinkPaused && this.buffered < capacity) this.resumeSource()
    if (this.writers.length > 0 && this.buffered < capacity) this.refill()
  }

  /** Wakes a reader waiting for data (after offers made with `wake` false). */
  wakeUnsafe(): void {
    this.wakeReaders()
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
   * first. Waiting writes fail with `Closed`: they belong to the side that aborted. `error`, if given, is
   * what the reader fails with instead of `Broken` (a child's output that overflowed its capture).
   */
  abortWriter(discard: boolean, cause?: BrokenCause, error?: DuplexError): void {
    if (this.writerState === "aborted") return
    this.writerState = "aborted"
    this.brokenCause = cause
    this.brokenOverride = error
    if (discard) this.clear()
    this.full = false // nothing is held back any more: the source is gone
    this.failWriters(() => this.closedError("write", "abort"))
    this.stopBlocked()
    this.wakeReaders()
  }

  // ---------------------------------------------------------------------------------------------------
  // reader side
  // ---------------------------------------------------------------------------------------------------

  /**
   * The next chunk, as a batch of one. Fails with `Cause.Done` at EOF.
   *
   * Interruption: a read interrupted while waiting took nothing. Closing: `Closed` after the reader
   * side closed, `Broken` once the writer side aborted (after the buffered bytes, if it did not discard
   * them), `Done` after `end` and the last byte.
   */
  get pull(): Pull.Pull<Batch, DuplexError> {
    return (this.pullEffect ??= Effect.suspend(() => this.pullNow()))
  }
  private pullEffect: Pull.Pull<Batch, DuplexError> | undefined = undefined

  private pullNow(): Pull.Pull<Batch, DuplexError> {
    const ready = this.readyExit()
    if (ready !== undefined) return ready
    return this.waitThenPull
  }

  /**
   * Every chunk buffered now (at least one), as one batch; fails with `Cause.Done` at EOF. For a consumer
   * that reads to the end anyway (`exchange`, `pipeThrough`): a consumer that stops after a chunk loses
   * the rest of its batch. Fails at once with the cause given to {@link failReads}, if any.
   */
  get pullAll(): Pull.Pull<Batch, DuplexError> {
    return (this.pullAllEffect ??= Effect.suspend(() => this.pullAllNow()))
  }
  private pullAllEffect: Pull.Pull<Batch, DuplexError> | undefined = undefined

  private pullAllNow(): Pull.Pull<Batch, DuplexError> {
    if (this.readFailure !== undefined) return Exit.failCause(this.readFailure)
    if (this.buffered === 0 || this.readerClosed) {
      const ready = this.readyExit()
      if (ready !== undefined) return ready
      return this.waitThenPullAll
    }
    // The chunks here now; each take may let a waiting writer's next piece in, which waits for the next batch.
    const count = this.queued
    const batch: [Uint8Array, ...Array<Uint8Array>] = [this.takeChunk()]
    for (let i = 1; i < count && this.buffered > 0; i++) batch.push(this.takeChunk())
    return Exit.succeed(batch)
  }

  /**
   * Fails the pending {@link pullAll} and every later one with `cause`, before any buffered byte: the
   * reader's own writer failed (`pipeThrough`), so its output fails at once. The cause's errors are the
   * caller's to type.
   */
  failReads(cause: Cause.Cause<unknown>): void {
    if (this.readFailure !== undefined) return
    this.readFailure = cause as Cause.Cause<DuplexError>
    this.wakeReaders()
  }

  private readFailure: Cause.Cause<DuplexError> | undefined = undefined

  /**
   * One chunk, or `None` at EOF: the same as one `pull`, without the Stream's batch and `Done` failure.
   * It shares its position with `pull`.
   */
  get read(): Effect.Effect<Option.Option<Uint8Array>, DuplexError> {
    return (this.readEffect ??= Effect.suspend(() => this.readNow()))
  }
  private readEffect: Effect.Effect<Option.Option<Uint8Array>, DuplexError> | undefined = undefined

  // The same branches as `readyExit`, kept apart on purpose: one helper returning a chunk, EOF or an error
  // for both made this path polymorphic, and an in-memory ping-pong about 15% slower.
  private readNow(): Effect.Effect<Option.Option<Uint8Array>, DuplexError> {
    if (this.readerClosed) return Exit.fail(this.closedError("read", "abort"))
    if (this.buffered > 0) return Exit.succeed(Option.some(this.takeChunk()))
    if (this.writers.length > 0) return Exit.succeed(Option.some(this.handOver()))
    if (this.writerState === "ended") return Exit.succeed(Option.none())
    if (this.writerState === "aborted") return Exit.fail(this.brokenRead())
    return this.waitThenRead
  }

  /** The oldest buffered chunk, taken without an effect; `undefined` when none is (or the reader closed). */
  takeUnsafe(): Uint8Array | undefined {
    return this.readerClosed || this.buffered === 0 ? undefined : this.takeChunk()
  }

  /** What a read gets now, or `undefined` when it has to wait. */
  private readyExit(): Exit.Exit<Batch, DuplexError | Cause.Done> | undefined {
    if (this.readerClosed) return Exit.fail(this.closedError("read", "abort"))
    if (this.buffered > 0) return Exit.succeed([this.takeChunk()])
    if (this.writers.length > 0) return Exit.succeed([this.handOver()])
    if (this.writerState === "ended") return Exit.fail(Cause.Done())
    if (this.writerState === "aborted") return Exit.fail(this.brokenRead())
    return undefined
  }

  // The reader's `resume` itself is the waiter: no closure is made per wait on this hot path. The state
  // is checked again here, in the same step that registers the waiter, so no wake-up can fall between.
  // Made on first wait, as the other members: an idle connection that has never waited holds none of them.
  private get waitReadable(): Effect.Effect<void> {
    return (this.waitReadableEffect ??= Effect.callback<void>((resume) => this.registerReader(resume)))
  }
  private waitReadableEffect: Effect.Effect<void> | undefined = undefined
  private registerReader(resume: (exit: Exit.Exit<void>) => void): Effect.Effect<void> | undefined {
    if (
      this.readerClosed ||
      this.buffered > 0 ||
      this.writers.length > 0 ||
      this.writerState !== "open" ||
      this.readFailure !== undefined
    ) {
      resume(Exit.void)
      return undefined
    }
    // The first reader to wait takes the field, and its cancel is made once per pipe: a wait allocates
    // nothing of ours. Its cancel runs only while it is the one waiting there (a reader that was woken is
    // not interrupted out of the wait), so clearing the field is right. Readers that wait beside it queue.
    if (this.reader === undefined) {
      this.reader = resume
      return (this.cancelReaderEffect ??= Effect.sync(() => {
        this.reader = undefined
      }))
    }
    if (this.readers === NONE) this.readers = []
    this.readers.push(resume)
    return Effect.sync(() => {
      const i = this.readers.indexOf(resume)
      if (i >= 0) this.readers.splice(i, 1)
    })
  }
  private reader: ((exit: Exit.Exit<void>) => void) | undefined = undefined
  private cancelReaderEffect: Effect.Effect<void> | undefined = undefined

  // The waits of `pull`, `pullAll` and `read`, made once: a reader that waits allocates no effect for it.
  private get waitThenPull(): Pull.Pull<Batch, DuplexError> {
    return (this.waitThenPullEffect ??= Effect.flatMap(this.waitReadable, () => this.pull))
  }
  private waitThenPullEffect: Pull.Pull<Batch, DuplexError> | undefined = undefined
  private get waitThenPullAll(): Pull.Pull<Batch, DuplexError> {
    return (this.waitThenPullAllEffect ??= Effect.flatMap(this.waitReadable, () => this.pullAll))
  }
  private waitThenPullAllEffect: Pull.Pull<Batch, DuplexError> | undefined = undefined
  private get waitThenRead(): Effect.Effect<Option.Option<Uint8Array>, DuplexError> {
    return (this.waitThenReadEffect ??= Effect.flatMap(this.waitReadable, () => this.read))
  }
  private waitThenReadEffect: Effect.Effect<Option.Option<Uint8Array>, DuplexError> | undefined = undefined

  /**
   * Attaches a consumer that takes every chunk as it arrives, in the step that offers or writes it, with
   * no read and no fiber woken: what is buffered now goes to it at once. The consumer may hold deliveries
   * back ({@link PAUSE}); meanwhile chunks are buffered, and the source is paused, as for a reader that
   * does not read. Nothing else may read while one is attached.
   */
  attach(sink: PushSink): Attachment {
    this.attachUnsafe(sink)
    return {
      resume: () => this.resumeSink(sink),
      detach: () => this.detachSink(sink)
    }
  }

  /** {@link attach} without the handle: {@link resumeSink} and {@link detachSink} take the sink instead. */
  attachUnsafe(sink: PushSink): void {
    this.sink = sink
    this.sinkDone = false
    this.sinkPaused = false
    this.onAttach?.(sink)
    this.deliver()
  }

  /** Deliveries to `sink` go on after a {@link PAUSE}. A no-op once it is detached. */
  resumeSink(sink: PushSink): void {
    if (this.sink !== sink || !this.sinkPaused) return
    this.sinkPaused = false
    this.deliver()
    this.roomAfterDelivery()
  }

  /** Later chunks are buffered for readers again (a no-op unless `sink` is the one attached). */
  detachSink(sink: PushSink): void {
    if (this.sink !== sink) return
    this.sink = undefined
    this.sinkPaused = false
    this.roomAfterDelivery()
  }

  /** Called when a consumer attaches (the Node adapter then reads into a reused buffer, if it can). */
  onAttach: ((sink: PushSink) => void) | undefined = undefined

  /** Whether the attached consumer, if any, takes lent bytes and is taking them now. */
  get sinkTakesLent(): boolean {
    return this.sink?.takesLent === true && !this.sinkPaused
  }

  /** The consumer paused: the source is held back as by a full buffer. */
  private pauseSink(): void {
    this.sinkPaused = true
    if (!this.full) {
      this.full = true
      this.startBlocked()
    }
  }

  /** After deliveries resumed (or the consumer left): a source paused for it may go on once there is room. */
  private roomAfterDelivery(): void {
    if (this.full && !this.sinkPaused && (this.buffered === 0 || 2 * this.buffered <= this.capacity)) {
      this.resumeSource()
    }
  }

  /** Hands the attached consumer what there is: buffered chunks, waiting writes, then the end. */
  private deliver(): void {
    if (this.delivering) return
    this.delivering = true
    try {
      for (let sink = this.sink; sink !== undefined && sink === this.sink;) {
        if (this.readerClosed || this.sinkDone) return
        if (this.sinkPaused) {
          // An abort reaches a paused consumer at once: a pump held back by a destination that does not
          // drain must not wait on it to learn that its source is gone.
          if (this.writerState !== "aborted") return
          this.sinkDone = true
          return sink.fail(this.brokenRead())
        }
        let answer: number
        if (this.buffered > 0) answer = sink.chunk(this.takeChunk(), false)
        else if (this.writers.length > 0) answer = sink.chunk(this.handOver(), false)
        else if (this.writerState === "ended") {
          this.sinkDone = true
          return sink.end()
        } else if (this.writerState === "aborted") {
          this.sinkDone = true
          return sink.fail(this.brokenRead())
        } else return
        if ((answer & PAUSE) !== 0 && this.sink === sink) this.pauseSink()
      }
    } finally {
      this.delivering = false
    }
  }

  /** The reader side is gone: buffered bytes are dropped, waiting writers fail with `Broken`. */
  closeReader(): void {
    if (this.readerClosed) return
    this.sink = undefined
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

  /**
   * This pipe as one direction of a duplex's `stats`: seen from the writer (`outbound`, bytes accepted)
   * or from the reader (`inbound`, bytes delivered).
   */
  directionStats(side: "writer" | "reader"): DirectionStats {
    return {
      bytes: side === "writer" ? this.bytesIn : this.bytesOut,
      buffered: this.buffered,
      peakBuffered: this.peakBuffered,
      blocked: this.blocked,
      blockedMillis: this.blockedMillis()
    }
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
    // A large chunk, or a small one into an empty buffer (a ping-pong's), pays two tests: no copy, no block.
    if (chunk.length < COALESCE_BELOW_BYTES && this.chunks.length > this.head) this.coalesce(chunk)
    else {
      if (this.openRun !== undefined) this.sealRun()
      if (this.chunks === NONE) this.chunks = []
      this.chunks.push(chunk)
    }
    this.queued++
    this.buffered += chunk.length
    if (this.buffered > this.peakBuffered) this.peakBuffered = this.buffered
  }

  /** Copies a small chunk behind the buffered ones: into the open run, or a new one (see the module's doc). */
  private coalesce(chunk: Uint8Array): void {
    this.coalescedChunks++
    let run = this.openRun
    if (run === undefined || run.block.length - run.fill < chunk.length) {
      const last = this.chunks.length - 1
      const previous = this.chunks[last]!
      const merge =
        run === undefined &&
        previous.length < COALESCE_BELOW_BYTES &&
        (this.runs.length === 0 || this.runs[this.runs.length - 1]!.block !== previous)
      if (run !== undefined) this.sealRun()
      // Memory of its own (not a slice of Node's shared pool), so that a view a reader keeps keeps only it.
      run = {
        block: Buffer.allocUnsafeSlow(BLOCK_BYTES),
        lengths: new Uint8Array(16),
        written: 0,
        read: 0,
        offset: 0,
        fill: 0
      }
      if (merge) {
        // The small chunk buffered by reference just before goes into the block too, in its place.
        appendTo(run, previous)
        this.chunks[last] = run.block
      } else {
        if (this.chunks === NONE) this.chunks = []
        this.chunks.push(run.block)
      }
      if (this.runs === NONE) this.runs = []
      this.runs.push(run)
      if (this.runs.length === 1) this.oldestBlock = run.block
      this.openRun = run
    }
    appendTo(run, chunk)
  }

  /**
   * The open run takes no more chunks. When its unread bytes are less than half of its block, they move to
   * a block of their size, so that a run cut short by a large chunk does not hold a block for a few bytes.
   */
  private sealRun(): void {
    const run = this.openRun!
    this.openRun = undefined
    const unread = run.fill - run.offset
    if (2 * unread >= run.block.length) return
    const block = Buffer.from(run.block.subarray(run.offset, run.fill))
    if (run.block === this.oldestBlock) this.oldestBlock = block
    run.block = block
    run.fill = unread
    run.offset = 0
    run.lengths = run.lengths.slice(run.read, run.written)
    run.written -= run.read
    run.read = 0
    this.chunks[this.chunks.length - 1] = block
  }

  /** Takes the oldest buffered chunk, then lets waiting writes (or a paused source) into the room. */
  private takeChunk(): Uint8Array {
    let chunk = this.chunks[this.head]!
    if (chunk !== this.oldestBlock) this.dropHead()
    else {
      // The next chunk of the oldest run: a view of the bytes it was copied to, which are never written again.
      const run = this.runs[0]!
      const lengths = run.lengths
      const short = lengths[run.read++]!
      const end = run.offset + (short < LONG_LENGTH ? short : (lengths[run.read++]! << 8) | lengths[run.read++]!)
      chunk = run.block.subarray(run.offset, end)
      run.offset = end
      if (run.read === run.written) {
        this.runs.shift()
        this.oldestBlock = this.runs.length === 0 ? undefined : this.runs[0]!.block
        if (this.openRun === run) this.openRun = undefined
        this.dropHead()
      }
    }
    this.queued--
    this.buffered -= chunk.length
    this.bytesOut += chunk.length
    // Silly-window avoidance (Clark's rule, RFC 1122 §4.2.3.3): let writers in only once the buffer is
    // empty or at least half free. Refilling any room a read frees would cut the waiting write into
    // pieces the size of the chunk just read, and once a piece is tiny every later one stays tiny.
    if (this.buffered === 0 || 2 * this.buffered <= this.capacity) {
      if (this.writers.length > 0) this.refill()
      if (this.full && !this.sinkPaused) this.resumeSource()
    }
    return chunk
  }

  private dropHead(): void {
    if (++this.head === this.chunks.length) {
      this.chunks = NONE
      this.head = 0
    } else if (this.head >= 64 && this.head * 2 >= this.chunks.length) {
      // A buffer that waiting writers keep refilling never drains: drop the consumed prefix, amortised O(1).
      this.chunks = this.chunks.slice(this.head)
      this.head = 0
    }
  }

  private resumeSource(): void {
    this.full = false
    this.stopBlocked()
    this.roomListener?.onRoom()
  }

  /** Moves waiting writes into the free room in FIFO order; a write completes with its last byte. */
  private refill(): void {
    while (this.writers.length > 0) {
      const w = this.writers[0]!
      const room = this.capacity - this.buffered
      if (room <= 0) break
      if (w.rest.length > room) {
        this.push(w.rest.subarray(0, room))
        this.bytesIn += room
        w.rest = w.rest.subarray(room)
        break
      }
      this.push(w.rest)
      this.bytesIn += w.rest.length
      this.writers.shift()
      w.resume(Exit.void)
    }
    this.stopBlocked()
  }

  /** Capacity 0: nothing is ever buffered, so the reader takes the first waiting write whole. */
  private handOver(): Uint8Array {
    const w = this.writers.shift()!
    this.bytesIn += w.rest.length
    this.bytesOut += w.rest.length
    w.resume(Exit.void)
    this.stopBlocked()
    return w.rest
  }

  private cancelWrite(pending: PendingWrite): void {
    const i = this.writers.indexOf(pending)
    if (i < 0) return
    this.writers.splice(i, 1)
    this.stopBlocked()
  }

  private failWriters(error: () => DuplexError): void {
    if (this.writers.length === 0) return
    const writers = this.writers
    this.writers = NONE
    for (const w of writers) w.resume(Exit.fail(error()))
    this.stopBlocked()
  }

  private clear(): void {
    this.chunks = NONE
    this.head = 0
    this.queued = 0
    this.runs = NONE
    this.oldestBlock = undefined
    this.openRun = undefined
    this.buffered = 0
    this.full = false
    this.stopBlocked()
  }

  private wakeReaders(): void {
    if (this.sink !== undefined) return this.deliver()
    const first = this.reader
    const others = this.readers
    if (first === undefined && others.length === 0) return
    this.reader = undefined
    this.readers = NONE
    first?.(Exit.void)
    for (const resume of others) resume(Exit.void)
  }

  private startBlocked(): void {
    if (this.blockedSince === undefined) this.blockedSince = this.clock.monotonicTimeNanosUnsafe()
  }

  /** Stops the blocked clock unless a writer still waits or a push source is still paused. */
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

  private brokenRead(): DuplexError {
    if (this.brokenOverride !== undefined) return this.brokenOverride
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

/** Copies `chunk` (small, and with room for it) behind the run's chunks. */
const appendTo = (run: Run, chunk: Uint8Array): void => {
  const length = chunk.length
  if (run.written + (length < LONG_LENGTH ? 1 : 3) > run.lengths.length) {
    // A run records at most a byte per byte of its block: each chunk has a byte, a long one 255 or more.
    const lengths = new Uint8Array(Math.min(2 * run.lengths.length, BLOCK_BYTES))
    lengths.set(run.lengths)
    run.lengths = lengths
  }
  if (length < LONG_LENGTH) run.lengths[run.written++] = length
  else {
    run.lengths[run.written++] = LONG_LENGTH
    run.lengths[run.written++] = length >>> 8
    run.lengths[run.written++] = length & 0xff
  }
  run.block.set(chunk, run.fill)
  run.fill += length
}

/** Where a duplex built on a {@link BytePipe} keeps its inbound pipe and its outbound port. @internal */
export const Ports = Symbol.for("fullduplex/internal/Ports")

/** @internal */
export interface PortsOf {
  readonly inbound: BytePipe
  readonly outbound: OutboundPort | undefined
}

/**
 * Marks `duplex` as reading from `inbound` (so that a consumer may {@link BytePipe.attach} to it) and, when
 * given, as writing through `outbound` (so that a pump may write without a fiber). @internal
 */
export const withPorts = <D extends object>(duplex: D, inbound: BytePipe, outbound?: OutboundPort): D => {
  // Enumerable, so that a copy of the duplex's members (`Object.assign`, spread) keeps its ports.
  Object.defineProperty(duplex, Ports, { value: { inbound, outbound } satisfies PortsOf, enumerable: true })
  return duplex
}

/** The inbound pipe of a duplex built on one, if it is. @internal */
export const inboundPipeOf = (duplex: object): BytePipe | undefined =>
  (duplex as { readonly [Ports]?: PortsOf })[Ports]?.inbound

/** The outbound port of a duplex that has one. @internal */
export const outboundPortOf = (duplex: object): OutboundPort | undefined =>
  (duplex as { readonly [Ports]?: PortsOf })[Ports]?.outbound
