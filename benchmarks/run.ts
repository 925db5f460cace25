/**
 * `npm run bench`: builds the package and the benchmarks, then (this file, compiled, under plain `node`)
 * runs every case of the selected rows as fresh processes, round after round, and prints the tables; a
 * full run (no `--filter` / `--row`) also writes `benchmarks/RESULTS.md`.
 *
 * Options (after `npm run bench --`):
 *
 * - `--rounds N`: rounds (default 5). Each round runs every selected case once, in an order rotated by
 *   one case per round and reversed every other round, so the two sides of a ratio alternate (A, B, …,
 *   then …, B, A) and drift hits both alike.
 * - `--bytes SIZE`: payload of the TCP, proxy, cat and Mux rows (default `1g`; `64m`, `256m`, …, a
 *   multiple of 64 KiB); the in-memory rows move 16 × SIZE.
 * - `--roundtrips N`: timed round trips of the ping-pong rows (default 10000, after 1000 untimed).
 * - `--filter TEXT`: only the rows whose id, title or case ids contain TEXT (case-insensitive).
 * - `--row ID[,ID…]`: only these rows (their ids are in the table and in RESULTS.md).
 * - `--timeout SECONDS`: a run (all its processes) that takes longer fails (default 180).
 * - `--no-write`: a full run that leaves RESULTS.md alone.
 * - `--bounds`: only the bounds rows of issue #20 (`bounds.ts`: what hostile peers cost, against the bound
 *   each must stay under), `--rounds` of them (default 3), `--filter` selecting among their cases; it
 *   rewrites only their section of RESULTS.md (unless filtered or `--no-write`). A full run runs them too,
 *   after the throughput rows, for 3 rounds. A bound exceeded (or a bounds run failed) sets exit code 1.
 * - `--accept`: only the accept-burst rows (`accept.ts`: a 2,000-connection burst against a raw `net`
 *   server, `Tcp.serve` and `Echo.serve`, with the machine idle and with one core kept busy: CPU µs per
 *   connection, burst time, failed connects, the kernel's ListenOverflows), `--rounds` of them (default
 *   5), `--filter` selecting among their cases; it rewrites only their section of RESULTS.md (unless
 *   filtered or `--no-write`). A full run does not run them and keeps their section as it was. A run
 *   that failed (a process crashed or timed out) sets exit code 1; missed targets do not.
 * - `--scale`: only the scale rows of issue #21 (`scale.ts`: memory per idle connection at 1,000 and
 *   10,000 connections for each server against a raw `net` server, per idle mux session and stream
 *   against libp2p-yamux, the base RSS, and `Echo.serve` under 1 / 100 / 1,000 concurrent clients against
 *   a raw echo server), `--rounds` of them (default 3), `--filter` selecting among their cases; it
 *   rewrites only their section of RESULTS.md (unless filtered or `--no-write`). A full run does not run
 *   them and keeps their section as it was. A run that failed (a process crashed, timed out, or lost
 *   connections) sets exit code 1; missed targets do not.
 *
 * Every run's records go to `benchmarks/results/<date>.jsonl` (not committed).
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { parseArgs } from "node:util"
import { ACCEPT_ROUNDS, acceptSectionOf, runAccept, withAcceptSection } from "./accept.js"
import { SCALE_ROUNDS, runScale, scaleSectionOf, withScaleSection } from "./scale.js"
import { BOUNDS_ROUNDS, type BoundsOutcome, runBounds, withBoundsSection } from "./bounds.js"
import { formatBytes, parseSize, WRITE_BYTES } from "./lib/common.js"
import { type Case, makeCases, MEM_FACTOR, type Row, ROWS } from "./rows.js"
import { checkBaselineImports, ROOT, type Run, runCase } from "./runner/launch.js"
import {
  bufferingLines,
  compare,
  type Comparison,
  indexRuns,
  latencyTable,
  memoryTable,
  memoryTargetLines,
  resultsTable
} from "./runner/report.js"
import { roundOrder, sectionOf } from "./runner/modes.js"
import { methodText, noteLines, readingText } from "./runner/text.js"

const { values } = parseArgs({
  options: {
    rounds: { type: "string" },
    bytes: { type: "string" },
    roundtrips: { type: "string" },
    filter: { type: "string" },
    row: { type: "string" },
    timeout: { type: "string" },
    "no-write": { type: "boolean" },
    bounds: { type: "boolean" },
    accept: { type: "boolean" },
    scale: { type: "boolean" }
  },
  allowPositionals: false
})

const boundsOnly = values.bounds === true
const acceptOnly = values.accept === true
const scaleOnly = values.scale === true
if ([boundsOnly, acceptOnly, scaleOnly].filter(Boolean).length > 1)
  throw new Error("--bounds, --accept and --scale are separate runs: choose one")
if (boundsOnly && values.row !== undefined)
  throw new Error("--bounds runs the bounds rows: --row selects throughput rows")
if (acceptOnly && values.row !== undefined)
  throw new Error("--accept runs the accept-burst rows: --row selects throughput rows")
if (scaleOnly && values.row !== undefined) throw new Error("--scale runs the scale rows: --row selects throughput rows")
const rounds = Number(
  values.rounds ?? (boundsOnly ? BOUNDS_ROUNDS : acceptOnly ? ACCEPT_ROUNDS : scaleOnly ? SCALE_ROUNDS : 5)
)
if (!Number.isSafeInteger(rounds) || rounds < 1) throw new Error(`--rounds must be a whole number ≥ 1, got ${rounds}`)
const bytes = parseSize(values.bytes ?? "1g")
if (bytes <= 0 || bytes % (16 * WRITE_BYTES) !== 0) {
  throw new Error(`--bytes must be a multiple of 1 MiB (16 streams × 64 KiB writes), got ${bytes}`)
}
const roundTrips = Number(values.roundtrips ?? 10_000)
const timeoutMs = Number(values.timeout ?? 180) * 1000
const settings = { bytes, memBytes: MEM_FACTOR * bytes, roundTrips, warmupRoundTrips: 1000 }
const allCases = makeCases(settings)
const caseById = new Map(allCases.map((c) => [c.id, c]))

const selectRows = (): ReadonlyArray<Row> => {
  if (values.row !== undefined) {
    const ids = values.row.split(",").map((s) => s.trim())
    const unknown = ids.filter((id) => !ROWS.some((r) => r.id === id))
    if (unknown.length > 0)
      throw new Error(`unknown row ${unknown.join(", ")}; rows: ${ROWS.map((r) => r.id).join(", ")}`)
    return ROWS.filter((r) => ids.includes(r.id))
  }
  if (values.filter !== undefined) {
    const text = values.filter.toLowerCase()
    const rows = ROWS.filter((r) =>
      [r.id, r.title, r.subject, ...r.anchors].some((s) => s.toLowerCase().includes(text))
    )
    if (rows.length === 0)
      throw new Error(`no row matches "${values.filter}"; rows: ${ROWS.map((r) => r.id).join(", ")}`)
    return rows
  }
  return ROWS
}

const rows = boundsOnly || acceptOnly || scaleOnly ? [] : selectRows()
const full = values.row === undefined && values.filter === undefined
const needed = new Set(rows.flatMap((r) => [r.subject, ...r.anchors]))
const cases: ReadonlyArray<Case> = allCases.filter((c) => needed.has(c.id)) // grouped by family, as defined
checkBaselineImports(cases)

const machine = {
  cpu: os.cpus()[0]?.model ?? "unknown",
  cores: os.availableParallelism(),
  node: process.version,
  os: `${os.type()} ${os.release()} ${os.arch()}`,
  memoryGiB: os.totalmem() / 1024 ** 3,
  loadStart: os.loadavg()
}
const log = (line: string) => process.stderr.write(`${line}\n`)
log(
  (boundsOnly
    ? `bench: bounds rows only, ${rounds} round(s)`
    : acceptOnly
      ? `bench: accept-burst rows only, ${rounds} round(s)`
      : scaleOnly
        ? `bench: scale rows only, ${rounds} round(s)`
        : `bench: ${rows.length} row(s), ${cases.length} case(s), ${rounds} round(s), ${formatBytes(bytes)} ` +
          `(in memory ${formatBytes(settings.memBytes)})`) +
    `, node ${machine.node}, ${machine.cpu} × ${machine.cores}, ` +
    `load ${machine.loadStart.map((x) => x.toFixed(2)).join(" ")}`
)

const resultsDir = path.join(ROOT, "benchmarks", "results")
fs.mkdirSync(resultsDir, { recursive: true })
const started = new Date()
const jsonl = path.join(resultsDir, `${started.toISOString().replace(/[:.]/g, "-")}.jsonl`)
fs.writeFileSync(jsonl, `${JSON.stringify({ started, settings, rounds, rows: rows.map((r) => r.id), machine })}\n`)

const resultsFile = path.join(ROOT, "benchmarks", "RESULTS.md")
const record = (run: Run) => fs.appendFileSync(jsonl, `${JSON.stringify(run)}\n`)
const bounds = (n: number): Promise<BoundsOutcome> =>
  runBounds(n, log, { timeoutMs, filter: boundsOnly ? values.filter : undefined, onRun: record }).then((outcome) => {
    console.log(`\nBounds under hostile peers (issue #20):\n\n${outcome.text}\n`)
    if (outcome.failed) process.exitCode = 1
    return outcome
  })

const readResults = (): string =>
  fs.existsSync(resultsFile) ? fs.readFileSync(resultsFile, "utf8") : "# fullduplex benchmark results\n"

if (scaleOnly) {
  const outcome = await runScale(rounds, log, { timeoutMs, filter: values.filter, onRun: record })
  console.log(`\nTen thousand connections:\n\n${outcome.text}\n`)
  if (outcome.failed) process.exitCode = 1
  if (!full) log(`Filtered run: benchmarks/RESULTS.md not written.`)
  else if (values["no-write"] === true) log(`--no-write: benchmarks/RESULTS.md not written.`)
  else {
    fs.writeFileSync(resultsFile, withScaleSection(readResults(), outcome.markdown))
    log(`Wrote the scale section of ${path.relative(ROOT, resultsFile)}`)
  }
} else if (acceptOnly) {
  const outcome = await runAccept(rounds, log, { timeoutMs, filter: values.filter, onRun: record })
  console.log(`\nAccept bursts:\n\n${outcome.text}\n`)
  if (outcome.failed) process.exitCode = 1
  if (!full) log(`Filtered run: benchmarks/RESULTS.md not written.`)
  else if (values["no-write"] === true) log(`--no-write: benchmarks/RESULTS.md not written.`)
  else {
    fs.writeFileSync(resultsFile, withAcceptSection(readResults(), outcome.markdown))
    log(`Wrote the accept section of ${path.relative(ROOT, resultsFile)}`)
  }
} else if (boundsOnly) {
  const outcome = await bounds(rounds)
  if (!full) log(`Filtered run: benchmarks/RESULTS.md not written.`)
  else if (values["no-write"] === true) log(`--no-write: benchmarks/RESULTS.md not written.`)
  else {
    fs.writeFileSync(resultsFile, withBoundsSection(readResults(), outcome.markdown))
    log(`Wrote the bounds section of ${path.relative(ROOT, resultsFile)}`)
  }
} else {
  const t0 = performance.now()
  const runs: Array<Run> = []
  for (let round = 0; round < rounds; round++) {
    const order = roundOrder(cases, round)
    for (const c of order) {
      const run = await runCase(c, round, timeoutMs)
      runs.push(run)
      record(run)
      const rate = run.rate === undefined ? "" : c.metric === "rtps" ? `${run.rate} rt/s` : `${run.rate} MiB/s`
      log(
        `round ${round + 1}/${rounds} ${c.id}: ${run.error === undefined ? rate : `FAILED ${run.error}`}` +
          ` (${(run.wallMs / 1000).toFixed(1)} s, other load ${(run.otherLoad * 100).toFixed(0)}%)` +
          (run.noise.length > 0 ? ` [noise: ${run.noise.join(" / ").slice(0, 300)}]` : "")
      )
    }
  }
  const elapsedS = (performance.now() - t0) / 1000
  const loadEnd = os.loadavg()

  const byCase = indexRuns(runs)
  const comparisons: ReadonlyArray<Comparison> = rows.flatMap((r) => compare(r, caseById, byCase))
  const tables = [
    resultsTable(comparisons, byCase),
    "",
    ...(cases.some((c) => c.metric === "rtps") ? ["Ping-pong latency:", "", latencyTable(cases, byCase), ""] : []),
    ...bufferingLines(rows, byCase).map((l) => `- ${l}`),
    ...memoryTargetLines(rows, caseById, byCase).map((l) => `- ${l}`)
  ].join("\n")
  console.log(`\n${tables}\n`)
  const notes = noteLines(comparisons, runs)
  for (const line of notes) console.log(`- ${line}`)
  console.log(`\n(${(elapsedS / 60).toFixed(1)} min; records in ${path.relative(ROOT, jsonl)})`)
  // A full run measures the bounds too, after the throughput rows, and keeps their section in RESULTS.md.
  const boundsOutcome = full ? await bounds(BOUNDS_ROUNDS) : undefined

  if (!full) {
    log(`Filtered run: benchmarks/RESULTS.md not written.`)
  } else if (values["no-write"] === true) {
    log(`--no-write: benchmarks/RESULTS.md not written.`)
  } else {
    const loads = (l: ReadonlyArray<number>) => l.map((x) => x.toFixed(2)).join(" / ")
    // The accept-burst rows are not rerun by a full run: their last section is kept as it was.
    const acceptSection = acceptSectionOf(readResults())
    // Nor are the scale rows.
    const scaleSection = scaleSectionOf(readResults())
    // The load section comes from `npm run soak` (test/stress), not from here: kept as it is.
    const loadSection = sectionOf(readResults(), "<!-- load:start -->", "<!-- load:end -->")
    const markdown = [
      "# fullduplex benchmark results",
      "",
      `Written by \`npm run bench\` (${rounds} rounds, ${formatBytes(bytes)} per run, ${formatBytes(settings.memBytes)} ` +
        `in the in-memory rows, ${roundTrips} timed round trips in the ping-pong rows) on ` +
        `${started.toISOString().replace(/\.\d+Z$/, "Z")}; the run took ${(elapsedS / 60).toFixed(1)} minutes.`,
      "",
      "## Machine",
      "",
      `- CPU: ${machine.cpu}, ${machine.cores} cores available (\`os.availableParallelism()\`), ` +
        `${machine.memoryGiB.toFixed(1)} GiB of memory; ${machine.os}.`,
      `- Node ${machine.node}.`,
      `- Load average (1 / 5 / 15 min): ${loads(machine.loadStart)} at the start, ${loads(loadEnd)} at the end. ` +
        "The machine is shared: the last column of the table gives, for each row, the largest share of the " +
        "machine's CPU that other work used during any of its runs.",
      "",
      methodText(settings),
      "",
      "## Results",
      "",
      "Rates are MiB/s (round trips/s where marked), median (min–max) over the rounds. The ratio is " +
        "subject / anchor taken per round, then its median and min–max: above 1 the subject is faster. CPU " +
        "is user + system time (all threads) of the measured process(es), per GiB of payload (per round trip " +
        "in the ping-pong rows), median over rounds; its ratio is also per round, and below 1 the subject uses " +
        "less. RSS: the peak (`process.resourceUsage().maxRSS`, the largest over the rounds) and, in " +
        "parentheses, the base (RSS right after the process's imports, median). ★ marks the better of two " +
        "anchors, the target's anchor.",
      "",
      tables,
      "",
      readingText(),
      "",
      "## Notes on this run",
      "",
      ...notes.map((l) => `- ${l}`),
      "",
      "## Memory of every process",
      "",
      memoryTable(cases, byCase),
      "",
      "## What each case runs",
      "",
      ...cases.map((c) => `- \`${c.id}\`${c.fullduplex ? " (fullduplex)" : ""}: ${c.what}.`),
      "",
      ...(boundsOutcome === undefined ? [] : [boundsOutcome.markdown, ""]),
      ...(acceptSection === undefined ? [] : [acceptSection, ""]),
      ...(scaleSection === undefined ? [] : [scaleSection, ""]),
      ...(loadSection === undefined ? [] : [loadSection, ""]),
      "## Rerunning a row alone",
      "",
      "Each command builds the package and the benchmarks, then runs the row's subject and anchors for the " +
        "default 5 rounds of 1 GiB (add `--rounds N`, `--bytes 256m`). A run with `--row` or `--filter` prints " +
        "its table and leaves this file alone.",
      "",
      ...rows.map((r) => `- ${r.issue}, ${r.title}: \`npm run bench -- --row ${r.id}\``),
      ""
    ].join("\n")
    fs.writeFileSync(resultsFile, markdown)
    log(`Wrote ${path.relative(ROOT, resultsFile)}`)
  }
}
