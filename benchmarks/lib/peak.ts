/**
 * How much a process's memory grows over a section of its life: the measurement of the bounds rows
 * (`benchmarks/bounds.ts`). Imports nothing but Node's globals, like `common.ts`.
 *
 * Plain `node` has no `global.gc`, so the base is the RSS as it is when the section starts, garbage
 * included, and the peak is what the process really reached: the largest of the RSS sampled every few
 * milliseconds and, when the process's lifetime peak (`process.resourceUsage().maxRSS`) rose during the
 * section, that peak (which no sampling interval can miss). Growth is peak − base.
 */

const round2 = (x: number): number => Math.round(x * 100) / 100
const MiB = 1024 * 1024

/** What {@link PeakRss.stop} reports; byte counts are exact, the `MiB` fields rounded for reading. */
export interface PeakFigures {
  /** Peak − base, in bytes: what the bound is checked against. */
  readonly growthBytes: number
  readonly growthMiB: number
  /** The section's base and peak RSS (named apart from the `Meter`'s process-wide `baseRssMiB` / `peakRssMiB`). */
  readonly sectionBaseRssMiB: number
  readonly sectionPeakRssMiB: number
  /** The largest RSS sampled, and how many samples were taken. */
  readonly sampledPeakRssMiB: number
  readonly samples: number
  /** `maxRSS` at the start and at the end of the section: when it rose, the peak is the end's. */
  readonly maxRssAtStartMiB: number
  readonly maxRssAtEndMiB: number
  /** The largest growth of V8's heap (`heapTotal`) and of buffer memory (`arrayBuffers`) in a sample. */
  readonly heapTotalGrowthMiB: number
  readonly arrayBuffersGrowthMiB: number
  readonly sectionMs: number
}

/**
 * Samples this process's RSS from its construction until {@link stop}. Create it right before the
 * section measured (for a server, when the connection arrives, before any of its bytes is read).
 */
export class PeakRss {
  private readonly base = process.memoryUsage()
  private readonly maxRssAtStart = process.resourceUsage().maxRSS * 1024
  private readonly t0 = performance.now()
  private sampledPeak = this.base.rss
  private heapTotalPeak = this.base.heapTotal
  private arrayBuffersPeak = this.base.arrayBuffers
  private samples = 0
  private figures: PeakFigures | undefined = undefined
  // Unref'd: sampling never keeps the process alive.
  private readonly timer = setInterval(() => this.sample(), 5).unref()

  /** Takes one sample now (the timer takes one every 5 ms; call it at moments of interest too). */
  sample(): void {
    const m = process.memoryUsage()
    this.samples++
    if (m.rss > this.sampledPeak) this.sampledPeak = m.rss
    if (m.heapTotal > this.heapTotalPeak) this.heapTotalPeak = m.heapTotal
    if (m.arrayBuffers > this.arrayBuffersPeak) this.arrayBuffersPeak = m.arrayBuffers
  }

  /** Ends the section (idempotent: a second call returns the same figures). */
  stop(): PeakFigures {
    if (this.figures !== undefined) return this.figures
    clearInterval(this.timer)
    this.sample()
    const maxRssAtEnd = process.resourceUsage().maxRSS * 1024
    const peak = maxRssAtEnd > this.maxRssAtStart ? Math.max(maxRssAtEnd, this.sampledPeak) : this.sampledPeak
    const growthBytes = peak - this.base.rss
    this.figures = {
      growthBytes,
      growthMiB: round2(growthBytes / MiB),
      sectionBaseRssMiB: round2(this.base.rss / MiB),
      sectionPeakRssMiB: round2(peak / MiB),
      sampledPeakRssMiB: round2(this.sampledPeak / MiB),
      samples: this.samples,
      maxRssAtStartMiB: round2(this.maxRssAtStart / MiB),
      maxRssAtEndMiB: round2(maxRssAtEnd / MiB),
      heapTotalGrowthMiB: round2((this.heapTotalPeak - this.base.heapTotal) / MiB),
      arrayBuffersGrowthMiB: round2((this.arrayBuffersPeak - this.base.arrayBuffers) / MiB),
      sectionMs: Math.round(performance.now() - this.t0)
    }
    return this.figures
  }
}
