/**
 * What the benchmark modes beside the throughput rows (`--bounds`, `--accept`) share: their outcome and
 * options, the choice of cases by `--filter`, the commands they print, and their own section of
 * RESULTS.md, between two markers, which a run of the mode rewrites and a full run carries over.
 */
import type { Case } from "../rows.js"
import { type Run, runCase } from "./launch.js"

export interface ModeOutcome {
  /** The section of RESULTS.md, markers included. */
  readonly markdown: string
  /** The table and notes, for the terminal. */
  readonly text: string
  /** The mode's target was missed, or a run failed (a process crashed or timed out). */
  readonly failed: boolean
  readonly runs: ReadonlyArray<Run>
}

export interface ModeOptions {
  readonly timeoutMs: number
  /** Only the cases whose id or label contains this (case-insensitive). */
  readonly filter?: string | undefined
  /** Called with every run as it ends (the runner appends it to its records). */
  readonly onRun?: ((run: Run) => void) | undefined
}

/** The median of `xs` (the mean of the middle two for an even count). */
export const median = (xs: ReadonlyArray<number>): number => {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}

/** `x` with `digits` decimals, `—` when it is not a finite number. */
export const fixed = (x: number, digits: number): string => (Number.isFinite(x) ? x.toFixed(digits) : "—")

/** `median (min–max)` of the rounds' figures, `—` without any. */
export const spread = (xs: ReadonlyArray<number>, digits: number): string => {
  const ok = xs.filter(Number.isFinite)
  if (ok.length === 0) return "—"
  const range = ok.length > 1 ? ` (${fixed(Math.min(...ok), digits)}–${fixed(Math.max(...ok), digits)})` : ""
  return `${fixed(median(ok), digits)}${range}`
}

/** The cases `filter` selects (all without one); none is an error naming them all. */
export const selectCases = <C extends { readonly case: Case }>(
  all: ReadonlyArray<C>,
  filter: string | undefined,
  mode: string
): ReadonlyArray<C> => {
  const text = filter?.toLowerCase()
  const selected = all.filter(
    (c) => text === undefined || [c.case.id, c.case.label].some((s) => s.toLowerCase().includes(text))
  )
  if (selected.length === 0) {
    throw new Error(`no ${mode} case matches "${filter}"; cases: ${all.map((c) => c.case.id).join(", ")}`)
  }
  return selected
}

/** A process's command as the runner started it, the port it was told replaced by `PORT`. */
export const commandOf = (argv: ReadonlyArray<string>): string =>
  argv.map((a) => (a.startsWith("--port=") ? "--port=PORT" : a)).join(" ")

/** The section of `file` from `start` to `end`, markers included, or `undefined`. */
export const sectionOf = (file: string, start: string, end: string): string | undefined => {
  const from = file.indexOf(start)
  const to = file.indexOf(end)
  return from >= 0 && to > from ? file.slice(from, to + end.length) : undefined
}

/** `file`'s text with its section from `start` to `end` replaced by `section` (appended if it has none). */
export const withSection = (file: string, start: string, end: string, section: string): string => {
  const from = file.indexOf(start)
  const to = file.indexOf(end)
  if (from >= 0 && to > from) return file.slice(0, from) + section + file.slice(to + end.length)
  return `${file.replace(/\n*$/, "")}\n\n${section}\n`
}

/**
 * The order of `round`: the cases rotated by one per round and reversed every other round, so that the two
 * sides of a ratio alternate (A, B, …, then …, B, A) and a drift of the machine hits both alike.
 */
export const roundOrder = <C>(cases: ReadonlyArray<C>, round: number): Array<C> => {
  const rotated = cases.map((_, i) => cases[(i + round) % cases.length]!)
  return round % 2 === 1 ? rotated.reverse() : rotated
}

/**
 * Runs every selected case once per round, in {@link roundOrder}, each a fresh process, and logs each run
 * as `<mode> round i/n <case>: <what describe says> (<wall> s, other load <x>%)`. Returns each case's
 * evaluated rounds (by case id) and every run.
 */
export const runRounds = async <C extends { readonly case: Case }, R>(
  mode: string,
  selected: ReadonlyArray<C>,
  rounds: number,
  options: ModeOptions,
  evaluate: (c: C, run: Run) => R,
  describe: (c: C, r: R, run: Run) => string,
  log: (line: string) => void
): Promise<{ readonly byCase: Map<string, Array<R>>; readonly runs: ReadonlyArray<Run> }> => {
  const byCase = new Map<string, Array<R>>(selected.map((c) => [c.case.id, []]))
  const runs: Array<Run> = []
  for (let round = 0; round < rounds; round++) {
    for (const c of roundOrder(selected, round)) {
      const run = await runCase(c.case, round, options.timeoutMs)
      runs.push(run)
      options.onRun?.(run)
      const r = evaluate(c, run)
      byCase.get(c.case.id)!.push(r)
      log(
        `${mode} round ${round + 1}/${rounds} ${c.case.id}: ${describe(c, r, run)}` +
          ` (${(run.wallMs / 1000).toFixed(1)} s, other load ${(run.otherLoad * 100).toFixed(0)}%)` +
          (run.noise.length > 0 ? ` [noise: ${run.noise.join(" / ").slice(0, 300)}]` : "")
      )
    }
  }
  return { byCase, runs }
}
