/**
 * Measuring, statistics and reporting for `npm run bench`.
 *
 * A case moves `payloadBytes` twice per round: once through the subject (fullduplex) and once through a
 * baseline (raw Node streams) that moves the same bytes with the same write size and the same buffering.
 * Each side gets one untimed warm-up run, then `runs` timed runs; subject and baseline runs alternate (and
 * the order flips every round) so that drift on a shared machine hits both alike.
 *
 * A case that counts operations rather than bytes (a 1-byte round trip) names its `operation`; its figures
 * are then shown as operations per second. A case may also hold resources over all its runs (`setUp` /
 * `tearDown`, say server processes), judge targets that are not about throughput (`checks`, say memory) and
 * report figures that are not judged (`reports`, say a one-off measurement of another approach).
 */
import { Data, Effect, Sink } from "effect"

/** One side of a case: a complete transfer of the case's payload, rejecting if a byte count is wrong. */
export interface Contender {
  /** Short name for the table, e.g. `Duplex.pair` or `PassThrough`. */
  readonly label: string
  readonly run: () => Promise<void>
}

/** Throughput targets a case is checked against (from the issue). */
export interface Targets {
  /** Lowest acceptable median throughput of the subject, in bytes per second. */
  readonly minSubjectBytesPerSecond?: number | undefined
  /** Lowest acceptable ratio subject median / baseline median. */
  readonly minRatio?: number | undefined
}

export interface BenchCase {
  readonly name: string
  /** Bytes per write call, on both sides. */
  readonly writeSize: number
  /** Bytes moved end to end by one run (for an echo: bytes sent, which are also the bytes received). */
  readonly payloadBytes: number
  /** One sentence for RESULTS.md: what is moved, how, and what the baseline is. */
  readonly description: string
  readonly subject: Contender
  readonly baseline: Contender
  readonly targets?: Targets | undefined
  /** What the last timed runs observed (buffer peaks, drain waits), for RESULTS.md: a short clause. */
  readonly observed?: (() => string) | undefined
  /**
   * What one write is when the case counts operations, not bytes (`"round trip"`): rates are then shown
   * as operations per second and the payload as their number. Default: bytes.
   */
  readonly operation?: string | undefined
  /** Starts what the case keeps over all its runs (a server process); runs before the warm-up. */
  readonly setUp?: (() => Promise<void>) | undefined
  /** Stops what `setUp` started; runs after the last run, also when a run failed. */
  readonly tearDown?: (() => Promise<void>) | undefined
  /** Targets that are not about throughput (peak memory, say), judged on what the runs observed. */
  readonly checks?: (() => ReadonlyArray<Check>) | undefined
  /**
   * Figures shown beside the target lines but not judged, one sentence each: say, a one-off measurement
   * of another approach that is too slow to run on every round.
   */
  readonly reports?: (() => ReadonlyArray<string>) | undefined
}

/** A target judged by the case itself, e.g. `peak RSS ≤ 64 MiB above idle`. */
export interface Check {
  /** The target, e.g. `peak RSS ≤ 64 MiB above idle`. */
  readonly target: string
  readonly met: boolean
  /** The figure it was judged on, e.g. `worst run +23 MiB`. */
  readonly figure: string
}

export interface Summary {
  readonly median: number
  readonly min: number
  readonly max: number
}

export interface CaseResult {
  readonly benchCase: BenchCase
  readonly runs: number
  /** Throughput of each timed run, bytes per second. */
  readonly subject: ReadonlyArray<number>
  readonly baseline: ReadonlyArray<number>
  readonly subjectSummary: Summary
  readonly baselineSummary: Summary
  /** Subject median / baseline median. */
  readonly ratio: number
}

// -----------------------------------------------------------------------------------------------------
// byte counting and checking
// -----------------------------------------------------------------------------------------------------

/** A byte count that does not match the payload: the run is invalid. */
export class ByteCountMismatch extends Data.TaggedError("ByteCountMismatch")<{
  readonly what: string
  readonly expected: number
  readonly actual: number
}> {
  override get message(): string {
    return `${this.what}: expected ${this.expected} bytes, got ${this.actual}`
  }
}

/** Fails with {@link ByteCountMismatch} unless `actual === expected`. */
export const verifyBytes = (what: string, expected: number, actual: number): Effect.Effect<void, ByteCountMismatch> =>
  actual === expected ? Effect.void : Effect.fail(new ByteCountMismatch({ what, expected, actual }))

/** The same check for Promise-based baselines: an Error to reject with, or `undefined`. */
export const byteCountError = (what: string, expected: number, actual: number): Error | undefined =>
  actual === expected ? undefined : new Error(new ByteCountMismatch({ what, expected, actual }).message)

/** A sink that counts the bytes of the chunks it is given. */
export const countBytes: Sink.Sink<number, Uint8Array> = Sink.reduceArray(
  () => 0,
  (total, chunks) => {
    for (const chunk of chunks) total += chunk.length
    return total
  }
)

/** `count` references to one chunk of `writeSize` bytes (contents are irrelevant: no path inspects them). */
export const chunks = (writeSize: number, payloadBytes: number): ReadonlyArray<Uint8Array> => {
  if (payloadBytes % writeSize !== 0) throw new Error(`payload ${payloadBytes} is not a multiple of ${writeSize}`)
  const chunk = new Uint8Array(writeSize).fill(0x5a)
  return Array.from({ length: payloadBytes / writeSize }, () => chunk)
}

// -----------------------------------------------------------------------------------------------------
// measuring
// -----------------------------------------------------------------------------------------------------

const timeoutMillis = Number(process.env["BENCH_TIMEOUT_MS"] ?? 60_000)

/** Runs `run` once and returns its wall-clock duration in milliseconds; a run that hangs is an error. */
const timeOnce = async (what: string, run: () => Promise<void>): Promise<number> => {
  let timer: NodeJS.Timeout | undefined
  const hang = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no result after ${timeoutMillis} ms`)), timeoutMillis)
  })
  try {
    const start = performance.now()
    await Promise.race([run(), hang])
    return performance.now() - start
  } finally {
    clearTimeout(timer)
  }
}

const summarize = (values: ReadonlyArray<number>): Summary => {
  const sorted = [...values].sort((x, y) => x - y)
  const n = sorted.length
  if (n === 0) throw new Error("no runs")
  const mid = Math.floor(n / 2)
  const median = n % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
  return { median, min: sorted[0]!, max: sorted[n - 1]! }
}

/** Warms up both sides once, then times `runs` alternating rounds. */
export const measure = async (
  benchCase: BenchCase,
  runs: number,
  log: (line: string) => void = () => {}
): Promise<CaseResult> => {
  await benchCase.setUp?.()
  try {
    return await measureRuns(benchCase, runs, log)
  } finally {
    await benchCase.tearDown?.()
  }
}

const measureRuns = async (benchCase: BenchCase, runs: number, log: (line: string) => void): Promise<CaseResult> => {
  const { name, payloadBytes, subject, baseline } = benchCase
  await timeOnce(`${name} / ${subject.label} (warm-up)`, subject.run)
  await timeOnce(`${name} / ${baseline.label} (warm-up)`, baseline.run)
  const subjectRates: Array<number> = []
  const baselineRates: Array<number> = []
  for (let round = 0; round < runs; round++) {
    const order = round % 2 === 0 ? ([subject, baseline] as const) : ([baseline, subject] as const)
    for (const contender of order) {
      const millis = await timeOnce(`${name} / ${contender.label}`, contender.run)
      const rate = payloadBytes / (millis / 1000)
      ;(contender === subject ? subjectRates : baselineRates).push(rate)
    }
    log(
      `  ${name} round ${round + 1}/${runs}: ${subject.label} ${formatCaseRate(benchCase, subjectRates.at(-1)!)}, ` +
        `${baseline.label} ${formatCaseRate(benchCase, baselineRates.at(-1)!)}`
    )
  }
  const subjectSummary = summarize(subjectRates)
  const baselineSummary = summarize(baselineRates)
  return {
    benchCase,
    runs,
    subject: subjectRates,
    baseline: baselineRates,
    subjectSummary,
    baselineSummary,
    ratio: subjectSummary.median / baselineSummary.median
  }
}

// -----------------------------------------------------------------------------------------------------
// formatting
// -----------------------------------------------------------------------------------------------------

const KiB = 1024
const MiB = 1024 * KiB
const GiB = 1024 * MiB
const TiB = 1024 * GiB

/** `65536` → `64 KiB`, `1073741824` → `1 GiB`. */
export const formatBytes = (n: number): string => {
  const [value, unit] =
    n >= TiB
      ? [n / TiB, "TiB"]
      : n >= GiB
        ? [n / GiB, "GiB"]
        : n >= MiB
          ? [n / MiB, "MiB"]
          : n >= KiB
            ? [n / KiB, "KiB"]
            : [n, "B"]
  return `${Number.isInteger(value) ? value : value.toFixed(1)} ${unit}`
}

const rateUnit = (bytesPerSecond: number): readonly [number, string] =>
  bytesPerSecond >= GiB ? [GiB, "GiB/s"] : [MiB, "MiB/s"]

const digits = (value: number): string => value.toFixed(value >= 100 ? 0 : value >= 10 ? 1 : 2)

/** A throughput in GiB/s (MiB/s below 1 GiB/s). */
export const formatRate = (bytesPerSecond: number): string => {
  const [scale, unit] = rateUnit(bytesPerSecond)
  return `${digits(bytesPerSecond / scale)} ${unit}`
}

/** `41.2k round trips/s`: a rate of operations, in thousands per second. */
const formatOperations = (perSecond: number, operation: string): string =>
  `${digits(perSecond / 1000)}k ${operation}s/s`

/** A case's rate: bytes per second, or operations per second for a case with an `operation`. */
export const formatCaseRate = (benchCase: BenchCase, bytesPerSecond: number): string =>
  benchCase.operation === undefined
    ? formatRate(bytesPerSecond)
    : formatOperations(bytesPerSecond / benchCase.writeSize, benchCase.operation)

/** What one run moves: `1 GiB in 64 KiB writes`, or `50,000 round trips of 1 B`. */
export const describeWork = (benchCase: BenchCase): string =>
  benchCase.operation === undefined
    ? `${formatBytes(benchCase.payloadBytes)} in ${formatBytes(benchCase.writeSize)} writes`
    : `${formatPayload(benchCase)} of ${formatBytes(benchCase.writeSize)}`

/** The payload column: bytes, or the number of operations. */
const formatPayload = (benchCase: BenchCase): string =>
  benchCase.operation === undefined
    ? formatBytes(benchCase.payloadBytes)
    : `${(benchCase.payloadBytes / benchCase.writeSize).toLocaleString("en-US")} ${benchCase.operation}s`

/** `12.3 GiB/s (11.9–12.8)`: median, then min–max in the median's unit. */
const formatSummary = (benchCase: BenchCase, s: Summary): string => {
  if (benchCase.operation !== undefined) {
    const k = (bytesPerSecond: number) => digits(bytesPerSecond / benchCase.writeSize / 1000)
    return `${formatOperations(s.median / benchCase.writeSize, benchCase.operation)} (${k(s.min)}k–${k(s.max)}k)`
  }
  const [scale, unit] = rateUnit(s.median)
  return `${digits(s.median / scale)} ${unit} (${digits(s.min / scale)}–${digits(s.max / scale)})`
}

/** Median wall-clock time per write call (or operation) of both sides, e.g. `0.42 µs per write vs 0.13 µs`. */
export const perWrite = (r: CaseResult): string => {
  const micros = (bytesPerSecond: number) => ((r.benchCase.writeSize / bytesPerSecond) * 1e6).toFixed(2)
  return (
    `median time per ${r.benchCase.operation ?? "write"}: ${r.benchCase.subject.label} ` +
    `${micros(r.subjectSummary.median)} µs, ` +
    `${r.benchCase.baseline.label} ${micros(r.baselineSummary.median)} µs`
  )
}

const formatRatio = (ratio: number): string => `${ratio.toFixed(ratio >= 10 ? 1 : 2)}×`

/** The results as a markdown table. */
export const table = (results: ReadonlyArray<CaseResult>): string => {
  const header = [
    "case",
    "write size",
    "payload",
    "subject median (min–max)",
    "baseline median (min–max)",
    "ratio (subject / baseline)"
  ]
  const rows = results.map((r) => [
    `\`${r.benchCase.name}\``,
    formatBytes(r.benchCase.writeSize),
    formatPayload(r.benchCase),
    `${r.benchCase.subject.label}: ${formatSummary(r.benchCase, r.subjectSummary)}`,
    `${r.benchCase.baseline.label}: ${formatSummary(r.benchCase, r.baselineSummary)}`,
    formatRatio(r.ratio)
  ])
  const line = (cells: ReadonlyArray<string>) => `| ${cells.join(" | ")} |`
  return [line(header), line(header.map(() => "---")), ...rows.map(line)].join("\n")
}

/** One line per target: met or not, with the figure it was judged on; then each case's report lines. */
export const targetLines = (results: ReadonlyArray<CaseResult>): ReadonlyArray<string> =>
  results.flatMap((r) => {
    const t = r.benchCase.targets ?? {}
    const rate = (bytesPerSecond: number) => formatCaseRate(r.benchCase, bytesPerSecond)
    const lines: Array<string> = []
    if (t.minSubjectBytesPerSecond !== undefined) {
      const met = r.subjectSummary.median >= t.minSubjectBytesPerSecond
      lines.push(
        `Target \`${r.benchCase.name}\` ≥ ${rate(t.minSubjectBytesPerSecond)}: ${met ? "MET" : "NOT MET"} ` +
          `(median ${rate(r.subjectSummary.median)}).`
      )
    }
    if (t.minRatio !== undefined) {
      const met = r.ratio >= t.minRatio
      lines.push(
        `Target \`${r.benchCase.name}\` ≥ ${t.minRatio}× the ${r.benchCase.baseline.label} baseline: ` +
          `${met ? "MET" : "NOT MET"} (ratio ${formatRatio(r.ratio)}).`
      )
    }
    for (const check of r.benchCase.checks?.() ?? []) {
      lines.push(`Target \`${r.benchCase.name}\` ${check.target}: ${check.met ? "MET" : "NOT MET"} (${check.figure}).`)
    }
    for (const report of r.benchCase.reports?.() ?? [])
      lines.push(`Report \`${r.benchCase.name}\` (no target): ${report}`)
    return lines
  })
