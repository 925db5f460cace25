/**
 * The soak run: the scenarios of `test/stress/` at their `soak` sizes, each repeated round after round
 * until its share of the time is spent, then one summary per scenario.
 *
 *     npm run soak -- --minutes 30                            # about 30 minutes in all
 *     npm run soak -- --minutes 5 --scale 0.5                 # half the counts (a slower machine)
 *     npm run soak -- --minutes 5 --filter Mux                # only the tests whose names match (vitest -t)
 *     npm run soak -- --report test/stress/.results/ci.jsonl  # only summarise a results file
 *
 * It runs vitest on `test/stress/` (one file at a time) with `FULLDUPLEX_STRESS_PROFILE=soak`,
 * `FULLDUPLEX_SOAK_MINUTES`, `FULLDUPLEX_STRESS_RUN` (the results file, `test/stress/.results/<run>.jsonl`)
 * and `FC_SEED` (printed; pass `--seed` to replay a run's random choices). The scenarios' shares of the
 * minutes are in `test/stress/profile.ts` (with `--filter` each scenario still gets only its share); a
 * scenario always runs at least one round, so a short soak can take somewhat longer than asked. The summary is printed, and written as Markdown beside the results
 * (`<run>.md`) for `benchmarks/RESULTS.md`. The exit code is vitest's.
 */
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..")
const resultsDir = path.join(root, "test", "stress", ".results")

interface Args {
  readonly minutes: number
  readonly scale: number | undefined
  readonly seed: number
  readonly filter: string | undefined
  readonly report: string | undefined
}

const usage = "usage: npm run soak -- [--minutes N] [--scale X] [--seed S] [--filter PATTERN] | --report FILE"

const parseArgs = (argv: ReadonlyArray<string>): Args => {
  const values = new Map<string, string>()
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!
    const [flag, inline] = arg.includes("=") ? [arg.slice(0, arg.indexOf("=")), arg.slice(arg.indexOf("=") + 1)] : [arg]
    if (!["--minutes", "--scale", "--seed", "--filter", "--report"].includes(flag!)) {
      throw new Error(`unknown argument ${arg}\n${usage}`)
    }
    const value = inline ?? argv[++i]
    if (value === undefined) throw new Error(`${flag} needs a value\n${usage}`)
    values.set(flag!, value)
  }
  const number = (flag: string, fallback: number | undefined, check: (n: number) => boolean) => {
    const raw = values.get(flag)
    if (raw === undefined) return fallback
    const n = Number(raw)
    if (!check(n)) throw new Error(`${flag} ${raw}: not a valid value\n${usage}`)
    return n
  }
  return {
    minutes: number("--minutes", 10, (n) => Number.isFinite(n) && n > 0)!,
    scale: number("--scale", undefined, (n) => Number.isFinite(n) && n > 0),
    seed: number("--seed", Math.floor(Math.random() * 2 ** 31), Number.isSafeInteger)!,
    filter: values.get("--filter"),
    report: values.get("--report")
  }
}

// ---- the summary ------------------------------------------------------------------------------------------

/** One line of a results file (see `Summary` in test/stress/support.ts). */
interface Line {
  readonly scenario: string
  readonly rounds: number
  readonly connections: number
  readonly peakConcurrent: number
  readonly bytes: number
  readonly endings: Record<string, number>
  readonly peakRssMiB: number
  readonly fdsBefore: number
  readonly fdsAfter: number
  readonly millis: number
  readonly profile: string
  readonly seed: number
  readonly at: string
  readonly extra?: Record<string, unknown>
}

interface Row {
  scenario: string
  runs: number
  rounds: number
  connections: number
  peakConcurrent: number
  bytes: number
  endings: Record<string, number>
  peakRssMiB: number
  fdsBefore: number
  fdsAfter: number
  millis: number
}

const readLines = (file: string): Array<Line> =>
  fs
    .readFileSync(file, "utf8")
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => JSON.parse(l) as Line)

const aggregate = (lines: ReadonlyArray<Line>): Array<Row> => {
  const rows = new Map<string, Row>()
  for (const l of lines) {
    const row = rows.get(l.scenario) ?? {
      scenario: l.scenario,
      runs: 0,
      rounds: 0,
      connections: 0,
      peakConcurrent: 0,
      bytes: 0,
      endings: {},
      peakRssMiB: 0,
      fdsBefore: l.fdsBefore,
      fdsAfter: l.fdsAfter,
      millis: 0
    }
    row.runs++
    row.rounds += l.rounds
    row.connections += l.connections
    row.peakConcurrent = Math.max(row.peakConcurrent, l.peakConcurrent)
    row.bytes += l.bytes
    for (const [k, n] of Object.entries(l.endings)) row.endings[k] = (row.endings[k] ?? 0) + n
    row.peakRssMiB = Math.max(row.peakRssMiB, l.peakRssMiB)
    row.fdsAfter = l.fdsAfter
    row.millis += l.millis
    rows.set(l.scenario, row)
  }
  return [...rows.values()]
}

const bytesText = (n: number): string =>
  n >= 2 ** 30 ? `${(n / 2 ** 30).toFixed(2)} GiB` : n >= 2 ** 20 ? `${(n / 2 ** 20).toFixed(1)} MiB` : `${n} B`

const endingsText = (endings: Record<string, number>): string =>
  Object.entries(endings)
    .sort((a, b) => b[1] - a[1])
    .map(([k, n]) => `${k} ×${n}`)
    .join("; ")

const markdown = (rows: ReadonlyArray<Row>, title: string): string =>
  [
    `### ${title}`,
    "",
    "| scenario | rounds | connections | peak at once | bytes moved | peak RSS | fds before → after | time | endings and errors, by reason |",
    "|---|---|---|---|---|---|---|---|---|",
    ...rows.map(
      (r) =>
        `| ${r.scenario} | ${r.rounds} | ${r.connections} | ${r.peakConcurrent} | ${r.bytes === 0 ? "n/a" : bytesText(r.bytes)} | ` +
        `${r.peakRssMiB} MiB | ${r.fdsBefore} → ${r.fdsAfter} | ${(r.millis / 1000).toFixed(1)} s | ${endingsText(r.endings)} |`
    ),
    ""
  ].join("\n")

const summarise = (file: string, title: string): void => {
  const rows = aggregate(readLines(file))
  if (rows.length === 0) {
    console.log(`no summaries in ${file}`)
    return
  }
  const text = markdown(rows, title)
  console.log(`\n${text}`)
  const out = file.replace(/\.jsonl$/, ".md")
  fs.writeFileSync(out, text)
  console.log(`(written to ${path.relative(root, out)})`)
}

// ---- the run ------------------------------------------------------------------------------------------

const main = async (): Promise<number> => {
  const args = parseArgs(process.argv.slice(2))
  if (args.report !== undefined) {
    summarise(path.resolve(args.report), `Stress summary of ${path.basename(args.report)}`)
    return 0
  }
  const run = `soak-${new Date().toISOString().replace(/[:.]/g, "-")}`
  fs.mkdirSync(resultsDir, { recursive: true })
  const started = Date.now()
  console.log(
    `soak ${run}: ${args.minutes} minute(s), seed ${args.seed}${args.scale === undefined ? "" : `, scale ${args.scale}`}` +
      `${args.filter === undefined ? "" : `, filter ${args.filter}`}`
  )
  const vitest = path.join(root, "node_modules", "vitest", "vitest.mjs")
  const vitestArgs = [
    vitest,
    "run",
    "test/stress/",
    "--no-file-parallelism",
    ...(args.filter === undefined ? [] : ["-t", args.filter])
  ]
  const code = await new Promise<number>((resolve) => {
    const child = spawn(process.execPath, vitestArgs, {
      cwd: root,
      stdio: "inherit",
      env: {
        ...process.env,
        FULLDUPLEX_STRESS_PROFILE: "soak",
        FULLDUPLEX_SOAK_MINUTES: String(args.minutes),
        FULLDUPLEX_STRESS_RUN: run,
        FC_SEED: String(args.seed),
        ...(args.scale === undefined ? {} : { FULLDUPLEX_STRESS_SCALE: String(args.scale) })
      }
    })
    // Ctrl-C reaches vitest through the terminal's process group; wait for it to finish its teardown.
    process.on("SIGINT", () => {})
    child.once("exit", (exitCode, signal) => resolve(exitCode ?? (signal === null ? 1 : 128)))
  })
  const file = path.join(resultsDir, `${run}.jsonl`)
  const minutes = ((Date.now() - started) / 60_000).toFixed(1)
  if (fs.existsSync(file)) {
    summarise(file, `Soak ${run} (${minutes} min, asked ${args.minutes}; seed ${args.seed}; vitest exit code ${code})`)
  } else console.log(`no scenario reported (vitest exit code ${code})`)
  return code
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error(error instanceof Error ? error.message : error)
    process.exit(2)
  }
)
