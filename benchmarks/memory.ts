/**
 * Memory figures of a process that reports its idle and peak RSS (the echo server and cat runner
 * processes): what one such process did, run by run, and how the figures are printed.
 */

const MiB = 1024 * 1024

/** What one process's memory did, run by run (the warm-up included). */
export interface MemoryObservation {
  idleRssBytes: number
  /** Peak RSS above idle, per run. */
  aboveIdle: Array<number>
  /** Peak memory in `ArrayBuffer`s above idle, per run. */
  arrayBuffersAboveIdle: Array<number>
  /** The kernel's high-water mark (`ru_maxrss`) of the process, minus its idle RSS, after the last run. */
  maxRssAboveIdle: number
}

/** One sample as the processes report it. */
export interface MemoryReport {
  readonly idle: { readonly rssBytes: number; readonly arrayBuffersBytes: number }
  readonly peak: { readonly rssBytes: number; readonly arrayBuffersBytes: number }
  readonly maxRssBytes: number
}

export const emptyMemoryObservation = (): MemoryObservation => ({
  idleRssBytes: 0,
  aboveIdle: [],
  arrayBuffersAboveIdle: [],
  maxRssAboveIdle: 0
})

export const recordMemory = ({ idle, peak, maxRssBytes }: MemoryReport, observation: MemoryObservation): void => {
  observation.idleRssBytes = idle.rssBytes
  observation.aboveIdle.push(peak.rssBytes - idle.rssBytes)
  observation.arrayBuffersAboveIdle.push(peak.arrayBuffersBytes - idle.arrayBuffersBytes)
  observation.maxRssAboveIdle = maxRssBytes - idle.rssBytes
}

export const formatMiB = (bytes: number): string => `${(bytes / MiB).toFixed(1)} MiB`
export const signedMiB = (bytes: number): string => `${bytes < 0 ? "−" : "+"}${formatMiB(Math.abs(bytes))}`
export const worst = (values: ReadonlyArray<number>): number => Math.max(...values)
