/**
 * Memory figures of a process that reports its idle and peak RSS (the echo server, proxy and cat runner
 * processes): how such a process samples itself, what it did run by run, how the figures are printed and
 * judged, and how the bench process talks to it (the next reply, the stop).
 */
import type { ChildProcess } from "node:child_process"
import type { Check } from "./harness.js"

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

/** The issues' memory target: peak RSS at most 64 MiB above the idle process. */
export const MAX_RSS_ABOVE_IDLE_BYTES = 64 * MiB

/** One process's figures, for a case's notes. */
export const describeMemory = (label: string, m: MemoryObservation): string =>
  `${label}: idle ${formatMiB(m.idleRssBytes)}, peak ${signedMiB(worst(m.aboveIdle))} in its worst run ` +
  `(run by run ${m.aboveIdle.map(signedMiB).join(", ")}; kernel high-water mark ` +
  `${signedMiB(m.maxRssAboveIdle)}), of which \`ArrayBuffer\`s at most ` +
  `${signedMiB(worst(m.arrayBuffersAboveIdle))}`

/** The memory target, judged on the subject's worst run, with the baseline's worst beside it. */
export const peakRssCheck = (
  what: string,
  subject: { readonly label: string; readonly memory: MemoryObservation },
  baseline: { readonly label: string; readonly memory: MemoryObservation }
): Check => {
  const subjectWorst = worst(subject.memory.aboveIdle)
  return {
    target: `peak RSS of ${what} ≤ ${formatMiB(MAX_RSS_ABOVE_IDLE_BYTES)} above idle`,
    met: subjectWorst <= MAX_RSS_ABOVE_IDLE_BYTES,
    figure:
      `${subject.label} ${signedMiB(subjectWorst)} in its worst run; ${baseline.label} ` +
      `${signedMiB(worst(baseline.memory.aboveIdle))}`
  }
}

/** A process's memory at one moment: its resident set size, and the part held by `ArrayBuffer`s. */
export interface Usage {
  readonly rssBytes: number
  readonly arrayBuffersBytes: number
}

/** How often the measured processes sample their memory, in milliseconds. */
export const SAMPLE_MILLIS = 50

/** This process's memory now. */
export const usageNow = (): Usage => {
  const { rss, arrayBuffers } = process.memoryUsage()
  return { rssBytes: rss, arrayBuffersBytes: arrayBuffers }
}

/** The higher of each figure (not necessarily from one instant). */
export const higher = (a: Usage, b: Usage): Usage => ({
  rssBytes: Math.max(a.rssBytes, b.rssBytes),
  arrayBuffersBytes: Math.max(a.arrayBuffersBytes, b.arrayBuffersBytes)
})

/**
 * Samples this process's memory every {@link SAMPLE_MILLIS}: `take` samples once more and returns the peak
 * since the previous `take` (or the start), `stop` ends the sampling.
 */
export const peakSampler = (): { readonly take: () => Usage; readonly stop: () => void } => {
  let peak = usageNow()
  const timer = setInterval(() => {
    peak = higher(peak, usageNow())
  }, SAMPLE_MILLIS)
  return {
    take: () => {
      const taken = higher(peak, usageNow())
      peak = usageNow()
      return taken
    },
    stop: () => clearInterval(timer)
  }
}

/** The next IPC message of kind `tag` from a forked process; rejects, naming `what`, if it exits first. */
export const replyOf = <M extends { readonly _tag: string }, Tag extends M["_tag"]>(
  child: ChildProcess,
  tag: Tag,
  what: string
): Promise<Extract<M, { _tag: Tag }>> =>
  new Promise((resolve, reject) => {
    const onMessage = (message: M) => {
      if (message._tag !== tag) return
      child.off("exit", onExit)
      child.off("message", onMessage)
      resolve(message as Extract<M, { _tag: Tag }>)
    }
    const onExit = (code: number | null, signal: NodeJS.Signals | null) => {
      child.off("message", onMessage)
      reject(new Error(`${what} exited (${signal ?? code}) before its ${tag} message`))
    }
    child.on("message", onMessage).once("exit", onExit)
  })

/** Asks a forked process to stop (`send(stop)`), kills it if it has not exited within 5 s; resolves once it has. */
export const stopProcess = (child: ChildProcess, stop: unknown): Promise<void> => {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve()
  return new Promise((resolve) => {
    const kill = setTimeout(() => child.kill("SIGKILL"), 5000)
    child.once("exit", () => {
      clearTimeout(kill)
      resolve()
    })
    if (child.connected) child.send(stop as never)
    else child.kill("SIGTERM")
  })
}
