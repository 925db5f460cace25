/**
 * The prose of RESULTS.md: the method (fixed), and the notes computed from a run (noise, failures,
 * spreads, loader checks).
 */
import { formatBytes } from "../lib/common.js"
import { MEM_FACTOR, type Settings } from "../rows.js"
import type { Run } from "./launch.js"
import type { Comparison } from "./report.js"

export const methodText = (s: Settings): string =>
  [
    "## Method",
    "",
    "- **What runs.** `npm run bench` runs `npm run build` (tsup: `dist/`, the package as published), " +
      "compiles `benchmarks/` with `tsc -p benchmarks/tsconfig.json` into `benchmarks/build/`, and starts " +
      "the runner with plain `node`. Every measured process is `node benchmarks/build/endpoints/<endpoint>.js`: " +
      "plain JavaScript, no tsx, no type stripping, no loader, and `NODE_OPTIONS` removed from its " +
      "environment. The fullduplex endpoints import the library by its name (`import { Tcp } from " +
      '"fullduplex"`), which Node resolves through the package\'s own `exports` to `dist/index.js`; each ' +
      "reports the URL it loaded and the runner fails a run whose URL is not `dist/`. The baseline endpoints " +
      "import only `node:` modules, execa, `@chainsafe/libp2p-yamux` and the Node-only helpers of " +
      "`benchmarks/lib/common.ts`: they never load `effect` or `fullduplex`, except the two anchors of row 12, " +
      "which are the same baseline code started as `node --import effect …`.",
    "- **Processes.** Each endpoint runs in a fresh process of its own, and every run starts new ones: a " +
      "server process and a client process for the TCP rows, three for the proxy rows (echo server, proxy, " +
      "client), the client and its `cat` for the cat rows, one process for the in-memory rows. Servers accept " +
      "one connection (one session), report, and exit.",
    "- **The same on both sides of a ratio.** The payload (one 64 KiB chunk whose byte i is `i & 0xff`, " +
      "written over and over: a `write()` loop on the raw side, the library's `write` loop or " +
      "`Stream.fromIterable` over an array of references to it on the fullduplex side), 64 KiB writes, the " +
      "process layout, the socket options (`allowHalfOpen` and `noDelay`, fullduplex's defaults), and the " +
      "checks: every receiver counts bytes and compares each piece's first and last byte with the pattern " +
      "(the proxies and `socket.pipe` servers pass bytes through; their clients check them). A short count, " +
      "a wrong byte, a non-zero exit or a timeout fails the run, which the table counts as failed.",
    `- **Sizes.** ${formatBytes(s.bytes)} per run over TCP, pipes and Mux (16 streams: ` +
      `${formatBytes(s.bytes / 16)} each); ${formatBytes(s.memBytes)} (${MEM_FACTOR}×) in the in-memory rows, ` +
      `whose writes hand over references without copying, so that a run lasts long enough to time; ` +
      `${s.roundTrips} timed round trips of 1 byte after ${s.warmupRoundTrips} untimed ones in the ping-pong rows.`,
    "- **Timing.** The client's wall clock, from just before it connects or spawns (in memory: before the " +
      "pipe is made) until it has the last byte back, the discard server's byte-count reply, or every " +
      "stream's reply. Ping-pong times each round trip too (p50, p99).",
    "- **CPU and memory.** CPU is `process.cpuUsage()` (user + system, every thread of the process, V8's " +
      "collector threads included): a client's from the start of its timed section to its end; a server's " +
      "or proxy's from the moment it listens until it exits, after the connection has closed. `cat`'s own " +
      "CPU is not counted on either side. Each process reports its RSS right after its imports (its base: " +
      "Node, plus Effect and the library for a fullduplex process) and its peak RSS " +
      "(`process.resourceUsage().maxRSS`) at its exit.",
    "- **Rounds and ratios.** A round runs every selected case once; the order is rotated by one case each " +
      "round and reversed every other round, so the two sides of a ratio alternate (A, B, … then …, B, A). " +
      "A row's ratio is taken per round (subject / anchor of the same round), then its median and min–max " +
      "are reported; a round in which either side failed is left out of that row.",
    "- **Other load.** The runner reads `/proc/stat` before and after each run: the machine's busy time, " +
      "minus its own and its children's, as a share of all cores, is the other work that shared the machine " +
      "during the run."
  ].join("\n")

/** What holds for every run: how to read the figures. */
export const readingText = (): string =>
  [
    "## Reading the figures",
    "",
    "- **Loading Effect.** A fullduplex process starts from about twice the RSS of a plain Node process " +
      '(the base RSS in the memory table): `import ... from "fullduplex"` loads Effect and the whole library. ' +
      "It also changes how V8 collects the garbage of a transfer, which row 12 isolates: the same raw `net` " +
      'echo client and `spawn` cat client, in a process that has done `import "effect"` first, are slower and ' +
      "use more CPU per byte than in a plain process. Node reads each socket chunk into a fresh 64 KiB " +
      "`Buffer` held outside the JavaScript heap; once Effect is loaded, V8's young generation is larger, " +
      "fewer scavenges run, and the external memory is reclaimed by full mark-compacts instead (with " +
      "`--trace-gc`, a 256 MiB run of the raw echo client showed 6 scavenges and no mark-compact in a plain " +
      "process, 8 scavenges and 4 mark-compacts with Effect loaded). That is a floor no library on Effect can " +
      "go below: compare a fullduplex row with its row-12 anchor to see what the library itself costs.",
    "- **In memory.** No path copies or inspects more than the first and last byte of a chunk: every write " +
      "hands over a reference to the same 64 KiB chunk. The rates measure the cost per write (scheduling, " +
      "bookkeeping, events), not memory bandwidth. `Duplex.pair()` holds 64 KiB per direction by default; a " +
      "default `PassThrough` holds up to 64 KiB on its writable side and 64 KiB on its readable side.",
    "- **Shared cores.** The machine has two cores; a TCP row's two processes (three for the proxy, plus " +
      "`cat` for the cat rows) and V8's helper threads share them with any other work (the last column). " +
      "Rates swing with that load more than CPU time per GiB does, and a ratio taken per round cancels much " +
      "of it, not all.",
    "- **What a fixed cost weighs.** Connection setup, the first run of the code (nothing is warmed up: " +
      "every process is fresh) and a server's shutdown are inside the measured sections, on both sides, and " +
      "weigh little at 1 GiB; with a small `--bytes` they weigh more."
  ].join("\n")

/** What a reader should know about this run, computed from its records. */
export const noteLines = (comparisons: ReadonlyArray<Comparison>, runs: ReadonlyArray<Run>): ReadonlyArray<string> => {
  const notes: Array<string> = []
  const noise = [...new Set(runs.flatMap((r) => r.noise.map((n) => `\`${r.case}\` ${n}`)))]
  notes.push(
    noise.length === 0
      ? "No process printed anything besides its result lines: no `ExperimentalWarning`, no log line, on either side."
      : `Output besides the results (${noise.length} distinct lines): ${noise.slice(0, 5).join("; ").slice(0, 1500)}`
  )
  const argvs = new Map<string, Set<string>>()
  for (const r of runs) {
    for (const p of Object.values(r.processes)) {
      const key = JSON.stringify(p.execArgv)
      if (!argvs.has(key)) argvs.set(key, new Set())
      argvs.get(key)!.add(r.case)
    }
  }
  const special = [...argvs.entries()].filter(([argv]) => argv !== "[]")
  notes.push(
    "Node options of the processes (`process.execArgv`): " +
      (special.length === 0
        ? "none in any process."
        : special.map(([argv, ids]) => `\`${argv}\` in ${[...ids].map((id) => `\`${id}\``).join(", ")}`).join("; ") +
          (argvs.has("[]") ? "; none in every other process." : "."))
  )
  const failed = runs.filter((r) => r.error !== undefined)
  notes.push(
    failed.length === 0
      ? `All ${runs.length} runs succeeded.`
      : `${failed.length} of ${runs.length} runs failed: ` +
          failed
            .slice(0, 10)
            .map((r) => `\`${r.case}\` round ${r.round + 1}: ${r.error}`)
            .join("; ")
  )
  const wide = comparisons.filter((c) => c.ratio !== undefined && c.ratio.max / c.ratio.min > 1.3)
  if (wide.length > 0) {
    notes.push(
      "Wide spreads (the largest per-round ratio over 1.3 × the smallest): " +
        wide
          .map(
            (c) =>
              `\`${c.row.id}\` vs \`${c.anchor.id}\` ${c.ratio!.min.toFixed(2)}–${c.ratio!.max.toFixed(2)} ` +
              `(other load up to ${(c.worstOtherLoad * 100).toFixed(0)}%)`
          )
          .join("; ") +
        ". Read those ratios with their range."
    )
  }
  const loaded = runs.filter((r) => r.error === undefined).map((r) => r.otherLoad)
  if (loaded.length > 0) {
    const busy = loaded.filter((x) => x > 0.1).length
    notes.push(
      `Other work used more than 10% of the machine during ${busy} of ${loaded.length} successful runs ` +
        `(the most: ${(Math.max(...loaded) * 100).toFixed(0)}%).`
    )
  }
  return notes
}
