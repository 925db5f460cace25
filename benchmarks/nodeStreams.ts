/**
 * Raw Node stream helpers for the baselines: what a careful Node programmer writes without fullduplex.
 */
import { PassThrough, type Writable } from "node:stream"

/** The buffers of a default `PassThrough`: its writable and readable `highWaterMark` (64 KiB each in Node 22+). */
export const passThroughHighWaterMarks = (): { readonly writable: number; readonly readable: number } => {
  const probe = new PassThrough()
  const marks = { writable: probe.writableHighWaterMark, readable: probe.readableHighWaterMark }
  probe.destroy()
  return marks
}

/**
 * Bytes a default `PassThrough` can hold: its writable buffer plus its readable buffer. The baselines use
 * default PassThroughs, and the subjects get a `Duplex.pair` capacity equal to this, so both sides buffer
 * the same amount per direction.
 */
export const passThroughBuffering = (): number => {
  const { writable, readable } = passThroughHighWaterMarks()
  return writable + readable
}

/** `64 KiB writable + 64 KiB readable highWaterMark = 128 KiB`, from the running Node's defaults. */
export const describePassThroughBuffering = (format: (bytes: number) => string): string => {
  const { writable, readable } = passThroughHighWaterMarks()
  return `${format(writable)} writable + ${format(readable)} readable highWaterMark = ${format(writable + readable)}`
}

/** What {@link writeAllThenEnd} did: how many writes, and how many of them had to wait for `'drain'`. */
export interface WriteProgress {
  writes: number
  drainWaits: number
}

/**
 * Writes `chunks` in order, honouring `write()`'s return value (waits for `'drain'` when it is `false`),
 * then calls `end()`. Errors surface through the stream's `'error'` event, which the caller listens to.
 * The returned counters are updated as the writes go.
 */
export const writeAllThenEnd = (writable: Writable, chunks: ReadonlyArray<Uint8Array>): WriteProgress => {
  const progress: WriteProgress = { writes: 0, drainWaits: 0 }
  const writeMore = (): void => {
    while (progress.writes < chunks.length) {
      const ok = writable.write(chunks[progress.writes++])
      if (!ok) {
        progress.drainWaits++
        writable.once("drain", writeMore)
        return
      }
    }
    writable.end()
  }
  writeMore()
  return progress
}
