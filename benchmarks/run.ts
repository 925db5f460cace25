/**
 * `npm run bench`: runs every case, prints a markdown table and writes `benchmarks/RESULTS.md`.
 *
 * Options (CLI flags win over environment variables):
 *
 * - `--runs N` / `BENCH_RUNS=N`: timed runs per side of each case (default 5, at least 1), after one
 *   untimed warm-up run per side.
 * - `--filter TEXT` / `BENCH_FILTER=TEXT`: only the cases whose name contains TEXT (case-insensitive).
 *   A filtered run prints its table but leaves RESULTS.md alone.
 * - `BENCH_TIMEOUT_MS`: a run that takes longer fails the benchmark (default 60000).
 *
 * Example: `BENCH_RUNS=7 npm run bench -- --filter pair`.
 */
import { writeFileSync } from "node:fs"
import * as os from "node:os"
import { fileURLToPath } from "node:url"
import { parseArgs } from "node:util"
import * as prettier from "prettier"
import { cases as exchangeCases } from "./exchange.js"
import { type BenchCase, type CaseResult, describeWork, measure, perWrite, table, targetLines } from "./harness.js"
import { cases as muxCases } from "./mux.js"
import { cases as pairCases } from "./pair.js"
import { cases as proxyCases } from "./proxy.js"
import { cases as subprocessCases } from "./subprocess.js"
import { cases as tcpCases } from "./tcp.js"

const allCases: ReadonlyArray<BenchCase> = [
  ...pairCases,
  ...exchangeCases,
  ...tcpCases,
  ...proxyCases,
  ...subprocessCases,
  ...muxCases
]

const { values } = parseArgs({
  options: { runs: { type: "string" }, filter: { type: "string" } },
  allowPositionals: false
})
const runs = Number(values.runs ?? process.env["BENCH_RUNS"] ?? 5)
if (!Number.isSafeInteger(runs) || runs < 1) throw new Error(`runs must be a whole number ≥ 1, got ${runs}`)
const filter = (values.filter ?? process.env["BENCH_FILTER"] ?? "").toLowerCase()
const selected = allCases.filter((c) => c.name.toLowerCase().includes(filter))
if (selected.length === 0) {
  throw new Error(`no case matches filter "${filter}"; cases: ${allCases.map((c) => c.name).join(", ")}`)
}

const cpu = os.cpus()[0]?.model ?? "unknown CPU"
const cpuCount = os.availableParallelism()
console.log(
  `fullduplex benchmarks: ${selected.length} case(s), 1 warm-up + ${runs} timed runs per side, ` +
    `node ${process.version}, ${cpu} (${cpuCount} CPUs)\n`
)

const loadAverage = () => os.loadavg()[0]!.toFixed(2)
const loadAtStart = loadAverage()
const started = Date.now()
const results: Array<CaseResult> = []
for (const benchCase of selected) {
  console.log(
    `${benchCase.name}: ${describeWork(benchCase)}, ${benchCase.subject.label} vs ${benchCase.baseline.label}`
  )
  results.push(await measure(benchCase, runs, (line) => console.log(line)))
}
const elapsedSeconds = (Date.now() - started) / 1000
const loadAtEnd = loadAverage()

/** The row's description, then what was measured per write and observed in the last runs. */
const rowNotes = (r: CaseResult): string => {
  const observed = r.benchCase.observed?.()
  return `${r.benchCase.description} (${perWrite(r)}${observed === undefined ? "" : `; ${observed}`}.)`
}

const resultTable = table(results)
const targets = targetLines(results)
console.log(`\n${resultTable}\n`)
for (const line of targets) console.log(line)
for (const r of results) console.log(`\n${r.benchCase.name}: ${rowNotes(r)}`)
console.log(`\n(${elapsedSeconds.toFixed(1)} s; 1-minute load average ${loadAtStart} at start, ${loadAtEnd} at end)`)

if (filter !== "") {
  console.log(`Filtered run ("${filter}"): benchmarks/RESULTS.md not written.`)
} else {
  const date = new Date().toISOString().replace(/\.\d+Z$/, "Z")
  const markdown = [
    "# fullduplex benchmark results",
    "",
    `Produced by \`npm run bench\` (\`tsx benchmarks/run.ts\`) on ${date}, Node ${process.version}, ` +
      `CPU \`${cpu}\`.`,
    `Figures are medians (with min–max) of ${runs} timed runs per side, after one untimed warm-up run, on a ` +
      `shared ${cpuCount}-core machine; subject and baseline runs alternate. Throughput is payload / wall-clock ` +
      `time of one whole run (setup, transfer and byte-count check). The ratio is subject median / baseline ` +
      `median, both measured in this run. The whole run took ${elapsedSeconds.toFixed(0)} s; the 1-minute load ` +
      `average was ${loadAtStart} at the start and ${loadAtEnd} at the end.`,
    "",
    resultTable,
    "",
    ...targets.map((line) => `- ${line}`),
    "",
    "## What each row measures",
    "",
    ...results.map((r) => `- \`${r.benchCase.name}\`: ${rowNotes(r)}`),
    "",
    "## Reading the figures",
    "",
    "- In the in-memory rows (`pair`, `exchange`) no path copies or inspects payload bytes (except where a " +
      "row says Node joined chunks): every write " +
      "hands over a reference to the same chunk, and every reader only adds up lengths. The figures measure " +
      "per-write overhead (scheduling, bookkeeping, events) times the write size, not memory bandwidth, which " +
      "is why they can exceed any memory bus; the time per write under each row is the more telling number.",
    "- A PassThrough's `'data'` listener runs synchronously inside `write()`, so in the `'data'` baselines a " +
      "chunk usually reaches the reader in the writer's own call stack and the stream's buffers stay empty (see " +
      "the `write()` counts under each row). The buffering is the same on paper; the Duplex.pair reader is a " +
      "separate fiber. The `for-await` row shows Node with an asynchronous reader.",
    "- The library is loaded from `src/` through tsx, which compiles TypeScript with esbuild's `keepNames`: " +
      "each named closure created in `src/` (and `benchmarks/`) code gets an extra `__name` call. A " +
      "build made without `keepNames` (tsup's default) would not pay that; Node's own stream code and the " +
      "`effect` package (plain JS) are not affected.",
    "- The `tcp` rows go through the kernel's loopback, which copies every byte into and out of socket " +
      "buffers, and their clients check what comes back (the echo rows the first and last byte of every piece " +
      "received, against the pattern sent). In the echo and ping-pong rows the server and the client share " +
      "the bench process, so one thread runs both ends, on both sides; the memory row's servers have a " +
      "process (and a core) of their own, and both load the same modules, so their idle figures compare.",
    "- A Node socket reads into a fresh 64 KiB `Buffer` each time, held outside the JavaScript heap in an " +
      "`ArrayBuffer` until a garbage collection frees it. V8 starts an (incremental) collection for that " +
      "reason only once external memory has grown by 64 MiB since the last full one (`kExternalAllocation" +
      "SoftLimit`), so during a 1 GiB echo that garbage is most of any server's RSS growth, `socket.pipe`'s " +
      "included: compare each server's peak RSS with its peak `ArrayBuffer` figure under the memory row.",
    "- In the `proxy` row the client (the bench process), the echo server and each proxy have a process of " +
      "their own, so three busy processes share the two cores, and the wall-clock figures swing with any other " +
      "load; the proxies' CPU time per run, in the report lines, compares the proxies themselves. Both proxies " +
      "read into fresh 64 KiB `Buffer`s as above: their collection is a large part of each proxy's CPU time.",
    "- The `subprocess` rows copy every byte into and out of two pipes, and `cat` needs a core of its own: on a " +
      "2-core machine `cat`, the bench process and V8's garbage-collection helper threads share two cores, so " +
      "these rows are the most sensitive to other load. A child's stdout is a Node socket over a pipe, read " +
      "into fresh 64 KiB `Buffer`s as above, on every side: collecting them is a large part of each side's " +
      "CPU time, and most of each runner's RSS growth in the memory row. The execa `input` line is one run, " +
      "in a fresh process, before that row's runs; it is reported, not judged.",
    "- The `mux` rows move 1 GiB one way over loopback TCP with the sender and the receiver in the bench " +
      "process, on both sides: one thread runs both ends, so the figures compare the CPU cost per byte of the " +
      "two ends together, and each row reports that CPU time, which drifts less than the wall-clock figures " +
      "when other work shares the machine. The `Tcp` rows (fullduplex without the multiplexer) show how much " +
      "of a gap to raw TCP is the duplex the multiplexer runs over.",
    ""
  ].join("\n")
  const path = fileURLToPath(new URL("./RESULTS.md", import.meta.url))
  // Formatted with the repo's Prettier settings, so that `prettier --check .` accepts the generated file.
  const prettierOptions = (await prettier.resolveConfig(path)) ?? {}
  writeFileSync(path, await prettier.format(markdown, { ...prettierOptions, filepath: path }))
  console.log(`Wrote ${path}`)
}
