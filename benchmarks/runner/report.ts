/**
 * From the runs of a bench invocation to its tables: each row's rates, the per-round ratios (median,
 * min–max), CPU time per GiB (or per round trip) of the measured processes, and the memory of every
 * process.
 */
import { formatBytes, GiB } from "../lib/common.js"
import type { Case, Role, Row } from "../rows.js"
import type { ProcessResult, Run } from "./launch.js"

export interface Summary {
  readonly median: number
  readonly min: number
  readonly max: number
  readonly n: number
}

export const median = (xs: ReadonlyArray<number>): number => {
  const s = [...xs].sort((a, b) => a - b)
  const n = s.length
  return n === 0 ? NaN : n % 2 === 1 ? s[(n - 1) / 2]! : (s[n / 2 - 1]! + s[n / 2]!) / 2
}

export const summarize = (xs: ReadonlyArray<number>): Summary | undefined =>
  xs.length === 0 ? undefined : { median: median(xs), min: Math.min(...xs), max: Math.max(...xs), n: xs.length }

/** The runs of one invocation, by case, by round. */
export type Runs = ReadonlyMap<string, ReadonlyMap<number, Run>>

export const indexRuns = (runs: ReadonlyArray<Run>): Runs => {
  const byCase = new Map<string, Map<number, Run>>()
  for (const run of runs) {
    if (!byCase.has(run.case)) byCase.set(run.case, new Map())
    byCase.get(run.case)!.set(run.round, run)
  }
  return byCase
}

const ok = (run: Run | undefined): run is Run & { rate: number } => run !== undefined && run.error === undefined

/** CPU time of the measured processes of a run, per GiB of payload (s) or per round trip (µs). */
const cpuPerUnit = (c: Case, run: Run, measured: ReadonlyArray<Role>): number => {
  const ms = measured.reduce((sum, role) => sum + (run.processes[role]?.cpuMs ?? NaN), 0)
  return c.metric === "rtps" ? (ms * 1000) / c.units : ms / 1000 / (c.units / GiB)
}

export interface Comparison {
  readonly row: Row
  readonly subject: Case
  readonly anchor: Case
  /** Rounds in which both cases succeeded: the ratios are taken over these. */
  readonly rounds: ReadonlyArray<number>
  readonly subjectRate: Summary | undefined
  readonly anchorRate: Summary | undefined
  readonly ratio: Summary | undefined
  readonly subjectCpu: Summary | undefined
  readonly anchorCpu: Summary | undefined
  readonly cpuRatio: Summary | undefined
  readonly failed: number
  /** The largest share of the machine other work used during a run of either case. */
  readonly worstOtherLoad: number
  /** This anchor is the better of the row's `bestOf` anchors (the target's anchor). */
  readonly best: boolean
  /** The issue's target for the ratio to this anchor, if it sets one. */
  readonly target: number | undefined
}

export const compare = (row: Row, cases: ReadonlyMap<string, Case>, runs: Runs): ReadonlyArray<Comparison> => {
  const subject = cases.get(row.subject)!
  const medianRate = (id: string) => median([...(runs.get(id)?.values() ?? [])].filter(ok).map((r) => r.rate))
  const best = row.bestOf?.reduce((a, b) => (medianRate(b) > medianRate(a) ? b : a))
  return row.anchors.map((anchorId) => {
    const anchor = cases.get(anchorId)!
    const S = runs.get(subject.id) ?? new Map<number, Run>()
    const A = runs.get(anchor.id) ?? new Map<number, Run>()
    const rounds = [...S.keys()].filter((k) => ok(S.get(k)) && ok(A.get(k))).sort((a, b) => a - b)
    const s = rounds.map((k) => S.get(k)!)
    const a = rounds.map((k) => A.get(k)!)
    const sc = s.map((r) => cpuPerUnit(subject, r, row.measured))
    const ac = a.map((r) => cpuPerUnit(anchor, r, row.measured))
    const all = [...S.values(), ...A.values()]
    return {
      row,
      subject,
      anchor,
      rounds,
      subjectRate: summarize(s.map((r) => r.rate!)),
      anchorRate: summarize(a.map((r) => r.rate!)),
      ratio: summarize(rounds.map((_, i) => s[i]!.rate! / a[i]!.rate!)),
      subjectCpu: summarize(sc),
      anchorCpu: summarize(ac),
      cpuRatio: summarize(sc.map((x, i) => x / ac[i]!)),
      failed: all.filter((r) => r.error !== undefined).length,
      worstOtherLoad: Math.max(0, ...all.map((r) => r.otherLoad)),
      best: best === anchorId,
      target: row.targets?.[anchorId] ?? (best === anchorId ? row.targets?.["best"] : undefined)
    }
  })
}

// -----------------------------------------------------------------------------------------------------
// formatting
// -----------------------------------------------------------------------------------------------------

const fixed = (x: number, digits: number): string => (Number.isFinite(x) ? x.toFixed(digits) : "–")

const rateText = (metric: Case["metric"], x: number): string =>
  metric === "rtps" ? `${fixed(x / 1000, 1)}k` : x >= 100 ? fixed(x, 0) : fixed(x, 1)

const rangeText = (metric: Case["metric"], s: Summary | undefined): string =>
  s === undefined
    ? "–"
    : `${rateText(metric, s.median)} (${rateText(metric, s.min)}–${rateText(metric, s.max)})` +
      (metric === "rtps" ? " rt/s" : "")

const ratioText = (s: Summary | undefined): string =>
  s === undefined ? "–" : `**${fixed(s.median, 2)}×** (${fixed(s.min, 2)}–${fixed(s.max, 2)})`

const cpuText = (c: Comparison): string => {
  if (c.subjectCpu === undefined || c.anchorCpu === undefined || c.cpuRatio === undefined) return "–"
  const unit = c.subject.metric === "rtps" ? " µs/rt" : " s/GiB"
  const d = c.subject.metric === "rtps" ? 1 : 2
  return `${fixed(c.subjectCpu.median, d)} · ${fixed(c.anchorCpu.median, d)}${unit} (${fixed(c.cpuRatio.median, 2)}×)`
}

/** Peak RSS (the largest over the rounds) and base RSS (median) of one process of a case, in MiB. */
const memory = (runs: Runs, caseId: string, role: Role): { peak: number; base: number } | undefined => {
  const results = [...(runs.get(caseId)?.values() ?? [])]
    .map((r) => r.processes[role])
    .filter((p): p is ProcessResult => p !== undefined)
  if (results.length === 0) return undefined
  return { peak: Math.max(...results.map((p) => p.peakRssMiB)), base: median(results.map((p) => p.baseRssMiB)) }
}

const memoryText = (runs: Runs, c: Case, roles: ReadonlyArray<Role>): string =>
  roles
    .map((role) => {
      const m = memory(runs, c.id, role)
      return m === undefined
        ? `${role} –`
        : `${roles.length > 1 ? `${role} ` : ""}${fixed(m.peak, 0)} (${fixed(m.base, 0)})`
    })
    .join(", ")

const targetText = (c: Comparison): string => {
  if (c.target === undefined) return ""
  const verdict = (ok: boolean | undefined) => (ok === undefined ? "–" : ok ? "met" : "**not met**")
  const rate = `≥ ${c.target}×: ${verdict(c.ratio === undefined ? undefined : c.ratio.median >= c.target)}`
  const maxCpu = c.row.maxCpuRatio
  if (maxCpu === undefined) return rate
  const cpu = verdict(c.cpuRatio === undefined ? undefined : c.cpuRatio.median <= maxCpu)
  return `${rate}; CPU ≤ ${maxCpu}×: ${cpu}`
}

const runsText = (c: Comparison): string =>
  `n=${c.rounds.length}${c.failed > 0 ? `, **${c.failed} failed**` : ""}, ${fixed(c.worstOtherLoad * 100, 0)}%`

/** The main table: one line per (row, anchor). */
export const resultsTable = (comparisons: ReadonlyArray<Comparison>, runs: Runs): string => {
  const lines = [
    "| # | row (`--row`) | subject vs anchor | subject | anchor | ratio, median of rounds (min–max) | issue target | CPU of the measured process(es), subject · anchor (ratio) | peak RSS (base) MiB of the measured process(es), subject · anchor | rounds, other load (max) |",
    "|---|---|---|---|---|---|---|---|---|---|"
  ]
  let previous: Row | undefined
  for (const c of comparisons) {
    const first = c.row !== previous
    previous = c.row
    const head = first ? `| ${c.row.issue} | ${c.row.title} (\`${c.row.id}\`) |` : "| | ″ |"
    const vs = `${c.subject.label} vs ${c.anchor.label}${c.best ? " ★" : ""}`
    lines.push(
      `${head} ${vs} | ${rangeText(c.subject.metric, c.subjectRate)} | ${rangeText(c.anchor.metric, c.anchorRate)} | ` +
        `${ratioText(c.ratio)} | ${targetText(c)} | ${c.row.measured.join(" + ")}: ${cpuText(c)} | ` +
        `${memoryText(runs, c.subject, c.row.measured)} · ${memoryText(runs, c.anchor, c.row.measured)} | ${runsText(c)} |`
    )
  }
  return lines.join("\n")
}

/** Every process of every case: peak RSS (largest over rounds) and base RSS (median). */
export const memoryTable = (cases: ReadonlyArray<Case>, runs: Runs): string => {
  const lines = [
    "| case | fullduplex? | every process: peak RSS (base) MiB | client CPU time, median (all of the process, module loading included) |",
    "|---|---|---|---|"
  ]
  for (const c of cases) {
    const roles = c.processes.map((p) => p.role)
    const total = median(
      [...(runs.get(c.id)?.values() ?? [])].filter(ok).map((r) => Number(r.processes.client?.["cpuTotalMs"]))
    )
    const procs = roles
      .map((role) => {
        const m = memory(runs, c.id, role)
        return `${role} ${m === undefined ? "–" : `${fixed(m.peak, 0)} (${fixed(m.base, 0)})`}`
      })
      .join(", ")
    lines.push(`| \`${c.id}\` | ${c.fullduplex ? "yes" : "no"} | ${procs} | ${fixed(total, 0)} ms |`)
  }
  return lines.join("\n")
}

/** Ping-pong latency: median over rounds of each run's p50 and p99. */
export const latencyTable = (cases: ReadonlyArray<Case>, runs: Runs): string => {
  const lines = ["| case | round trips/s | p50 µs | p99 µs |", "|---|---|---|---|"]
  for (const c of cases.filter((x) => x.metric === "rtps")) {
    const ok1 = [...(runs.get(c.id)?.values() ?? [])].filter(ok)
    const field = (k: string) => summarize(ok1.map((r) => Number(r.processes.client?.[k])))
    const q = (s: Summary | undefined) =>
      s === undefined ? "–" : `${fixed(s.median, 0)} (${fixed(s.min, 0)}–${fixed(s.max, 0)})`
    lines.push(
      `| \`${c.id}\` (${c.label}) | ${rangeText("rtps", field("rtps"))} | ${q(field("p50us"))} | ${q(field("p99us"))} |`
    )
  }
  return lines.join("\n")
}

/**
 * Issue #12's memory targets: the measured process's peak RSS (the largest over the rounds) at most
 * `maxPeakRssAboveAnchorMiB` above the target anchor's, with both processes' base RSS beside it.
 */
export const memoryTargetLines = (rows: ReadonlyArray<Row>, cases: ReadonlyMap<string, Case>, runs: Runs) =>
  rows
    .filter((r) => r.maxPeakRssAboveAnchorMiB !== undefined)
    .map((r) => {
      const role = r.measured[0]!
      const anchorId =
        r.targets?.["best"] !== undefined
          ? compare(r, cases, runs).find((c) => c.best)?.anchor.id
          : Object.keys(r.targets ?? {})[0]
      const s = memory(runs, r.subject, role)
      const a = anchorId === undefined ? undefined : memory(runs, anchorId, role)
      if (s === undefined || a === undefined) return `\`${r.id}\`: no run to judge the memory target on.`
      const limit = r.maxPeakRssAboveAnchorMiB!
      const over = s.peak - a.peak
      return (
        `\`${r.id}\`: the ${role}'s peak RSS ${fixed(s.peak, 0)} MiB (base ${fixed(s.base, 0)}), ` +
        `${cases.get(anchorId!)!.label}'s ${fixed(a.peak, 0)} MiB (base ${fixed(a.base, 0)}): ` +
        `${over >= 0 ? "+" : ""}${fixed(over, 0)} MiB (issue target ≤ +${limit} MiB: ${over <= limit ? "met" : "**not met**"}).`
      )
    })

/** The Mux rows' receive buffering: the receiving session's `stats.peakBufferedBytes` against its bound. */
export const bufferingLines = (rows: ReadonlyArray<Row>, runs: Runs): ReadonlyArray<string> =>
  rows
    .filter((r) => r.peakBuffered === true)
    .map((r) => {
      const servers = [...(runs.get(r.subject)?.values() ?? [])]
        .map((run) => run.processes.server)
        .filter((p): p is ProcessResult => p !== undefined)
      if (servers.length === 0) return `\`${r.subject}\`: no run reported.`
      const peak = Math.max(...servers.map((p) => Number(p["peakBufferedBytes"])))
      const bound = Number(servers[0]!["peakBufferedBound"])
      const within = servers.every((p) => p["peakBufferedWithinBound"] === true)
      return (
        `\`${r.subject}\`: the receiving session's \`stats.peakBufferedBytes\` at most ${peak.toLocaleString("en-US")} B ` +
        `(${formatBytes(peak)}) over ${servers.length} runs; bound ${formatBytes(bound)} ` +
        `(streams × largest window): ${within ? "within" : "**EXCEEDED**"}.`
      )
    })
