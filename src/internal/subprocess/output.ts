/**
 * A child's outputs when nobody is reading them.
 *
 * - {@link Tail}: the last bytes of an output, and the count of the ones before (stderr's tail, for error
 *   messages).
 * - {@link Spill}: a piped output (stdout, stderr in `pipe` mode) whose pipe is raised from its
 *   `highWaterMark` to `maxBuffer` while nobody may be reading it, so the child is not blocked on it;
 *   past `maxBuffer` the rest is counted and dropped (the child still never blocks), and the pipe's
 *   reader fails `MaxBufferExceeded` after the bytes that were kept. Nothing moves: the bytes stay in the
 *   pipe, in order, for whoever reads next (a reader, a pump, `exit`).
 *
 * @internal
 */
import type { BytePipe } from "../bytePipe.js"

/** @internal */
export class Tail {
  private chunks: Array<Uint8Array> = []
  private bytes = 0
  /** Every byte appended, kept or not. */
  totalBytes = 0
  constructor(private readonly limit: number) {}
  append(chunk: Uint8Array): void {
    this.totalBytes += chunk.length
    if (this.limit === 0) return
    this.chunks.push(chunk)
    this.bytes += chunk.length
    while (this.chunks.length > 1 && this.bytes - this.chunks[0]!.length >= this.limit) {
      this.bytes -= this.chunks.shift()!.length
    }
  }
  get value(): Uint8Array {
    const all = Buffer.concat(this.chunks)
    return all.length > this.limit ? all.subarray(all.length - this.limit) : all
  }
}

/** @internal */
export class Spill {
  /** Bytes dropped after the capture overflowed. */
  droppedBytes = 0
  overflowed = false
  private spilling = false
  private readonly onOverflow: Array<() => void> = []
  /** The pipe's own bound, restored when the spill ends. */
  private readonly highWaterMark: number

  constructor(
    private readonly pipe: BytePipe,
    readonly maxBuffer: number,
    /** The error the pipe's reader gets after the kept bytes. */
    private readonly overflowError: () => Parameters<BytePipe["abortWriter"]>[2]
  ) {
    this.highWaterMark = pipe.capacity
  }

  /** Raises the bound to `maxBuffer` (a full pipe resumes its source) or lowers it back. */
  set(spilling: boolean): void {
    if (spilling === this.spilling || this.overflowed) return
    this.spilling = spilling
    // One byte over `maxBuffer` fills the pipe: exactly `maxBuffer` bytes fit.
    this.pipe.setCapacity(spilling ? this.maxBuffer + 1 : this.highWaterMark)
    if (spilling && this.pipe.buffered > this.maxBuffer) this.overflow()
  }

  /** The reader's hook when the pipe is full (see NodeReader): drop from here on, or pause. */
  readonly full = (): ((bytes: number) => void) | undefined => {
    if (!this.spilling || this.pipe.buffered <= this.maxBuffer) return undefined
    this.overflow()
    return this.drop
  }

  private readonly drop = (bytes: number): void => {
    this.droppedBytes += bytes
  }

  private overflow(): void {
    if (this.overflowed) return
    this.overflowed = true
    this.pipe.abortWriter(false, undefined, this.overflowError())
    for (const f of this.onOverflow.splice(0)) f()
  }

  /** Calls `f` once the capture overflows (now, if it has); returns the way to unregister it. */
  whenOverflowed(f: () => void): () => void {
    if (this.overflowed) {
      f()
      return () => {}
    }
    this.onOverflow.push(f)
    return () => {
      const i = this.onOverflow.indexOf(f)
      if (i >= 0) this.onOverflow.splice(i, 1)
    }
  }

  /** Every byte buffered now, taken from the pipe (what nobody has read). */
  takeBuffered(): Uint8Array {
    const chunks: Array<Uint8Array> = []
    for (let chunk = this.pipe.takeUnsafe(); chunk !== undefined; chunk = this.pipe.takeUnsafe()) chunks.push(chunk)
    return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)
  }
}
