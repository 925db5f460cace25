/**
 * The scale rows (issue #21): what one more connection costs a server. Each server is a fresh `node` of
 * its own; the anchors run in the same rounds, interleaved.
 *
 * - **Idle**: the server forks its own client (`endpoints/scale-client.ts`, plain `node`), which holds 1,000
 *   and then 10,000 connections open, each having echoed 16 bytes once (`lib/scale.ts`); after each count
 *   the server collects its garbage and takes its memory. A raw `net` server (`socket.pipe(socket)`) is the
 *   anchor of `Tcp.serve`, `Echo.serve` (each policy) and `Shutdown.serve`; a raw `net` proxy (two sockets a
 *   connection) of `Proxy.serve`; `@chainsafe/libp2p-yamux` of `Mux` sessions and streams.
 * - **Load**: 1, 100 and 1,000 concurrent clients (`endpoints/scale-load.ts`, another fresh `node`) each
 *   echo 1 MiB through `Echo.serve` or the raw `net` echo server: throughput, the server's CPU time and
 *   peak RSS.
 *
 * `npm run bench -- --scale` runs only these (and rewrites only their section of RESULTS.md, between
 * {@link SCALE_START} and {@link SCALE_END}; a full `npm run bench` keeps that section as it was).
 */
import * as os from "node:os"
import type { Case, ProcessSpec } from "./rows.js"
import { checkBaselineImports, type ProcessResult, type Run } from "./runner/launch.js"
import {
  commandOf,
  fixed,
  median,
  type ModeOptions,
  type ModeOutcome,
  runRounds,
  sectionOf,
  selectCases,
  spread,
  withSection
} from "./runner/modes.js"

/** Rounds of the scale rows unless `--rounds` says otherwise. */
export const SCALE_ROUNDS = 3
export const SCALE_START = "<!-- scale:start -->"
export const SCALE_END = "<!-- scale:end -->"

/** The idle counts (the issue's). */
const COUNTS = [1000, 10_000]
/**
 * The proxy rows' counts: a proxy holds two fds a connection, and this machine's `ulimit -n` is 20,000, so
 * 10,000 proxied connections (20,001 fds with the listener) cannot be held: 9,000 (18,001) can.
 */
const PROXY_COUNTS = [1000, 9000]
/** Issue target: memory per idle connection at most this × its anchor's (at the largest count). */
const MAX_MEMORY_RATIO = 1.5
/** Issue target: the RSS of a process that imports the package and starts `Echo.serve` ≤ raw + this. */
const MAX_BASE_EXTRA_MIB = 25
/** Issue target: 1,000 concurrent clients at least this × the raw echo server's throughput. */
const MIN_LOAD_RATIO = 0.95

const KiB = 1024
const MiB = 1024 * KiB
const GiB = 1024 * MiB

// -----------------------------------------------------------------------------------------------------
// the cases
// -----------------------------------------------------------------------------------------------------

type Unit = "connection" | "session" | "stream"

interface IdleServer {
  readonly kind: "idle"
  readonly id: string
  readonly label: string
  readonly fullduplex: boolean
  readonly unit: Unit
  readonly counts: ReadonlyArray<number>
  /** The anchor's id; none for an anchor. */
  readonly anchor?: string
  /** The issue's memory target applies (the mux rows are compared, with no target). */
  readonly target: boolean
  readonly script: string
  readonly args: ReadonlyArray<string>
  readonly what: string
}

const countsArg = (counts: ReadonlyArray<number>) => `--counts=${counts.join(",")}`

const IDLE: ReadonlyArray<IdleServer> = [
  {
    kind: "idle",
    id: "scale-net",
    label: "raw `net` server (anchor)",
    fullduplex: false,
    unit: "connection",
    counts: COUNTS,
    target: false,
    script: "scale-net",
    args: ["--mode=echo", countsArg(COUNTS)],
    what: "`net.createServer({ allowHalfOpen: true, noDelay: true })`, each connection `socket.pipe(socket)`"
  },
  ...(
    [
      [
        "tcp",
        "`Tcp.serve`, trivial handler",
        "`Tcp.serve(options, handler)` whose handler reads one chunk, writes it back, then reads to EOF"
      ],
      ["echo-stream", "`Echo.serve`, stream policy", "`Echo.serve({ …, policy: Echo.stream() })` (the default policy)"],
      [
        "echo-store",
        "`Echo.serve`, store-and-forward",
        "`Echo.serve({ …, policy: Echo.storeAndForward({ maxRequestBytes: 1 MiB }) })`; it answers at the client's FIN, so its idle clients write 16 bytes and wait for nothing"
      ],
      ["echo-spill", "`Echo.serve`, spill", "`Echo.serve({ …, policy: Echo.spill({ memoryBytes: 4 MiB }) })`"],
      [
        "shutdown",
        "`Shutdown.serve`",
        "`Shutdown.serve({ …, handle: Effect.succeed })`; its clients write nothing and wait for its preface"
      ]
    ] as const
  ).map(([mode, label, what]): IdleServer => ({
    kind: "idle",
    id: `scale-${mode}`,
    label,
    fullduplex: true,
    unit: "connection",
    counts: COUNTS,
    anchor: "scale-net",
    target: true,
    script: "fd-scale",
    args: [`--mode=${mode}`, countsArg(COUNTS)],
    what: `${what}; \`maxConnections\` above the counts, every other option its default`
  })),
  {
    kind: "idle",
    id: "scale-echo-index",
    label: "`Echo.serve`, stream policy, `effect` index imported",
    fullduplex: true,
    unit: "connection",
    counts: [1000],
    anchor: "scale-net",
    target: false,
    script: "fd-scale",
    args: ["--mode=echo-stream", "--effect-index", countsArg([1000])],
    what: 'as `scale-echo-stream`, in a process that has first done `await import("effect")` (every module of Effect, as an application that imports from `"effect"` does): what the base RSS becomes then'
  },
  {
    kind: "idle",
    id: "scale-net-proxy",
    label: "raw `net` proxy (anchor)",
    fullduplex: false,
    unit: "connection",
    counts: PROXY_COUNTS,
    target: false,
    script: "scale-net",
    args: ["--mode=proxy", countsArg(PROXY_COUNTS)],
    what: "each connection `net.connect`s to a raw echo server (a child of its own) and `client.pipe(upstream); upstream.pipe(client)`: two sockets a connection"
  },
  {
    kind: "idle",
    id: "scale-proxy",
    label: "`Proxy.serve`",
    fullduplex: true,
    unit: "connection",
    counts: PROXY_COUNTS,
    anchor: "scale-net-proxy",
    target: true,
    script: "fd-scale",
    args: ["--mode=proxy", countsArg(PROXY_COUNTS)],
    what: "`Proxy.serve({ listen, target })` to the same raw echo server; `maxConnections` above the counts"
  },
  ...(["sessions", "streams"] as const).flatMap((shape): ReadonlyArray<IdleServer> => {
    const unit: Unit = shape === "sessions" ? "session" : "stream"
    const how =
      shape === "sessions"
        ? "each connection one yamux session (the client's, libp2p-yamux) with one stream that echoed 16 bytes"
        : "one connection, one session, N streams, each of which echoed 16 bytes"
    return [
      {
        kind: "idle",
        id: `scale-yamux-${shape}`,
        label: `libp2p-yamux, idle ${unit}s (anchor)`,
        fullduplex: false,
        unit,
        counts: COUNTS,
        target: false,
        script: "scale-yamux",
        args: [`--mode=${shape}`, countsArg(COUNTS)],
        what: `a \`net\` server whose connections each run a \`@chainsafe/libp2p-yamux\` server muxer (stream limits raised above the counts) echoing every stream; ${how}`
      },
      {
        kind: "idle",
        id: `scale-mux-${shape}`,
        label: `\`Mux.server\`, idle ${unit}s`,
        fullduplex: true,
        unit,
        counts: COUNTS,
        anchor: `scale-yamux-${shape}`,
        target: false,
        script: "fd-scale-mux",
        args: [`--mode=${shape}`, countsArg(COUNTS)],
        what: `\`Tcp.serve\` + \`Mux.server(conn, options)\` echoing every stream it accepts (\`maxConcurrentStreams\` above the counts, every other option its default); ${how}`
      }
    ]
  })
]

interface LoadServer {
  readonly kind: "load"
  readonly id: string
  readonly label: string
  readonly fullduplex: boolean
  readonly clients: number
  readonly connections: number
  readonly anchor?: string
  readonly server: ProcessSpec
  readonly what: string
}

/** Concurrent clients, and connections in all (each 1 MiB): enough for a run of a second or more. */
const LOADS: ReadonlyArray<readonly [clients: number, connections: number]> = [
  [1, 256],
  [100, 300],
  [1000, 1000]
]

const LOAD: ReadonlyArray<LoadServer> = LOADS.flatMap(([clients, connections]): ReadonlyArray<LoadServer> => {
  const limit = `--connections=${connections}`
  return [
    {
      kind: "load",
      id: `scale-load-net-${clients}`,
      label: `raw \`net\` echo server, ${clients} client${clients === 1 ? "" : "s"} (anchor)`,
      fullduplex: false,
      clients,
      connections,
      server: { role: "server", script: "scale-net", args: ["--mode=echo", limit], listens: true },
      what: "the raw `net` echo server (`socket.pipe(socket)`), until the last connection closed"
    },
    {
      kind: "load",
      id: `scale-load-echo-${clients}`,
      label: `\`Echo.serve\`, ${clients} client${clients === 1 ? "" : "s"}`,
      fullduplex: true,
      clients,
      connections,
      anchor: `scale-load-net-${clients}`,
      server: { role: "server", script: "fd-scale", args: ["--mode=echo-stream", limit], listens: true },
      what: "`Echo.serve({ …, policy: Echo.stream() })`, `maxConnections` above the clients, until the last connection closed"
    }
  ]
})

type Server = IdleServer | LoadServer

interface ScaleCase {
  readonly server: Server
  readonly case: Case
}

const caseOf = (server: Server): ScaleCase => {
  if (server.kind === "idle") {
    return {
      server,
      case: {
        id: server.id,
        label: server.label,
        fullduplex: server.fullduplex,
        metric: "mibps", // unused: no client process, so no rate
        units: 0,
        // The server forks its own client; it prints READY, which nobody waits for.
        processes: [{ role: "server", script: server.script, args: server.args }],
        what: server.what
      }
    }
  }
  return {
    server,
    case: {
      id: server.id,
      label: server.label,
      fullduplex: server.fullduplex,
      metric: "mibps",
      units: server.connections * MiB,
      processes: [
        server.server,
        {
          role: "client",
          script: "scale-load",
          args: [`--clients=${server.clients}`, `--connections=${server.connections}`, "--per-connection=1m"]
        }
      ],
      what: server.what
    }
  }
}

export const SCALE_CASES: ReadonlyArray<ScaleCase> = [...IDLE, ...LOAD].map(caseOf)

// -----------------------------------------------------------------------------------------------------
// one round's figures
// -----------------------------------------------------------------------------------------------------

interface Memory {
  readonly rss: number
  readonly heapUsed: number
}

interface IdlePoint {
  readonly n: number
  /** Growth over the base, per unit, in KiB. */
  readonly rssKiB: number
  readonly heapKiB: number
}

interface IdleFigures {
  readonly kind: "idle"
  readonly baseRssMiB: number
  readonly points: ReadonlyArray<IdlePoint>
}

interface LoadFigures {
  readonly kind: "load"
  readonly mibps: number
  /** The server's CPU seconds per GiB echoed. */
  readonly cpuSPerGiB: number
  readonly peakRssMiB: number
}

interface Round {
  readonly run: Run
  readonly figures: IdleFigures | LoadFigures | undefined
  readonly problem: string | undefined
}

const num = (x: unknown): number => (typeof x === "number" ? x : Number.NaN)

const idleFiguresOf = (server: IdleServer, result: ProcessResult): { figures: IdleFigures; problem?: string } => {
  const idle = result["idle"] as {
    base: Memory
    points: ReadonlyArray<{ n: number; open: number; memory: Memory }>
    failed: number
  }
  const problems: Array<string> = []
  if (idle.failed > 0) problems.push(`${idle.failed} connections failed`)
  const points = idle.points.map((p) => {
    if (p.open !== p.n) problems.push(`the server had ${p.open} ${server.unit}s open at ${p.n}`)
    return {
      n: p.n,
      rssKiB: (p.memory.rss - idle.base.rss) / p.n / KiB,
      heapKiB: (p.memory.heapUsed - idle.base.heapUsed) / p.n / KiB
    }
  })
  const figures: IdleFigures = { kind: "idle", baseRssMiB: idle.base.rss / MiB, points }
  return problems.length === 0 ? { figures } : { figures, problem: problems.join("; ") }
}

const evaluate = (sc: ScaleCase, run: Run): Round => {
  const server = run.processes.server
  if (run.error !== undefined || server === undefined) {
    return { run, figures: undefined, problem: run.error ?? "no result" }
  }
  if (sc.server.kind === "idle") {
    const { figures, problem } = idleFiguresOf(sc.server, server)
    return { run, figures, problem }
  }
  const client = run.processes.client
  if (client === undefined) return { run, figures: undefined, problem: "no client result" }
  const bytes = num(client["bytes"])
  return {
    run,
    figures: {
      kind: "load",
      mibps: num(client["mibps"]),
      cpuSPerGiB: num(server["cpuMs"]) / 1000 / (bytes / GiB),
      peakRssMiB: server.peakRssMiB
    },
    problem: undefined
  }
}

// -----------------------------------------------------------------------------------------------------
// reporting
// -----------------------------------------------------------------------------------------------------

/** Per round, `f(subject) / f(anchor)` of the same round; rounds where either has no figure are left out. */
const perRound = <F>(
  subject: ReadonlyArray<Round>,
  anchor: ReadonlyArray<Round>,
  f: (figures: F) => number,
  combine: (s: number, a: number) => number = (s, a) => s / a
): ReadonlyArray<number> =>
  subject.flatMap((r, i) => {
    const a = anchor[i]?.figures
    const s = r.figures
    if (a === undefined || s === undefined || r.problem !== undefined) return []
    const x = combine(f(s as F), f(a as F))
    return Number.isFinite(x) ? [x] : []
  })

const idleOf = (r: Round): IdleFigures | undefined => (r.figures?.kind === "idle" ? r.figures : undefined)
const loadOf = (r: Round): LoadFigures | undefined => (r.figures?.kind === "load" ? r.figures : undefined)

const pointAt = (f: IdleFigures, n: number): IdlePoint | undefined => f.points.find((p) => p.n === n)

/** A difference as text, with its sign: `+24.4 (…)`, `-3.1 (…)`. */
const signed = (text: string): string => text.replace(/^(?=\d)/, "+")

const nText = (n: number): string => (n >= 1000 && n % 1000 === 0 ? `${n / 1000}k` : String(n))

export type ScaleOutcome = ModeOutcome
export type ScaleOptions = ModeOptions

/** Runs the scale cases for `rounds` rounds, interleaved, and reports them against their anchors. */
export const runScale = async (
  rounds: number,
  log: (line: string) => void,
  options: ScaleOptions
): Promise<ScaleOutcome> => {
  const selected = selectCases(SCALE_CASES, options.filter, "scale")
  checkBaselineImports(selected.map((sc) => sc.case)) // anchors and clients load neither effect nor fullduplex
  const started = new Date()
  const loadStart = os.loadavg()
  const { byCase, runs } = await runRounds(
    "scale",
    selected,
    rounds,
    options,
    evaluate,
    (_, r) => {
      const f = r.figures
      if (f === undefined) return `FAILED ${r.problem}`
      const text =
        f.kind === "idle"
          ? `base ${fixed(f.baseRssMiB, 1)} MiB, ` +
            f.points
              .map((p) => `${nText(p.n)}: ${fixed(p.rssKiB, 1)} KiB rss / ${fixed(p.heapKiB, 1)} KiB heap`)
              .join(", ")
          : `${fixed(f.mibps, 0)} MiB/s, ${fixed(f.cpuSPerGiB, 2)} CPU s/GiB, peak ${fixed(f.peakRssMiB, 0)} MiB`
      return text + (r.problem === undefined ? "" : ` [${r.problem}]`)
    },
    log
  )
  const roundsOf = (id: string): ReadonlyArray<Round> => byCase.get(id) ?? []
  const missed: Array<string> = []

  // --- idle rows
  const idleRows: Array<string> = []
  for (const server of IDLE) {
    const rs = roundsOf(server.id)
    if (rs.length === 0) continue
    const fs = rs.flatMap((r) => idleOf(r) ?? [])
    const anchorRounds = server.anchor === undefined ? [] : roundsOf(server.anchor)
    const at = (n: number, pick: (p: IdlePoint) => number) => (f: IdleFigures) => {
      const p = pointAt(f, n)
      return p === undefined ? Number.NaN : pick(p)
    }
    const cells = (pick: (p: IdlePoint) => number, digits: number) =>
      server.counts.map((n) => spread(fs.map(at(n, pick)), digits)).join(" / ")
    const ratios = server.counts.map((n) =>
      perRound<IdleFigures>(
        rs,
        anchorRounds,
        at(n, (p) => p.rssKiB)
      )
    )
    const largest = server.counts[server.counts.length - 1]!
    const smallest = server.counts[0]!
    const growth =
      server.counts.length > 1
        ? spread(
            fs.map((f) => at(largest, (p) => p.rssKiB)(f) / at(smallest, (p) => p.rssKiB)(f)),
            2
          )
        : "—"
    const baseDelta = perRound<IdleFigures>(
      rs,
      anchorRounds,
      (f) => f.baseRssMiB,
      (s, a) => s - a
    )
    let verdict = "—"
    // Judged at the largest N, over the rounds where both it and its anchor have figures.
    const atLargest = ratios[ratios.length - 1]!
    if (server.target && server.anchor !== undefined && atLargest.length > 0) {
      const r = median(atLargest)
      if (r <= MAX_MEMORY_RATIO) verdict = "meets"
      else {
        verdict = `**misses** (${fixed(r, 2)}× > ${MAX_MEMORY_RATIO}×)`
        missed.push(`${server.id}: ${fixed(r, 2)}× its anchor's memory per connection at ${nText(largest)}`)
      }
    }
    if (server.id === "scale-echo-stream" && baseDelta.length > 0) {
      const d = median(baseDelta)
      const baseVerdict =
        d <= MAX_BASE_EXTRA_MIB ? "base meets" : `base **misses** (+${fixed(d, 1)} > +${MAX_BASE_EXTRA_MIB} MiB)`
      if (d > MAX_BASE_EXTRA_MIB) missed.push(`scale-echo-stream: base RSS raw +${fixed(d, 1)} MiB`)
      verdict = `${verdict}; ${baseVerdict}`
    }
    idleRows.push(
      [
        `\`${server.id}\` ${server.label}`,
        server.unit,
        server.counts.map(nText).join(" / "),
        cells((p) => p.rssKiB, 1),
        server.anchor === undefined ? "1 (anchor)" : ratios.map((r) => spread(r, 2)).join(" / "),
        cells((p) => p.heapKiB, 2),
        growth,
        `${spread(
          fs.map((f) => f.baseRssMiB),
          1
        )}` + (server.anchor === undefined ? "" : ` (${signed(spread(baseDelta, 1))})`),
        verdict
      ].join(" | ")
    )
  }

  // --- load rows
  const loadRows: Array<string> = []
  for (const server of LOAD) {
    const rs = roundsOf(server.id)
    if (rs.length === 0) continue
    const fs = rs.flatMap((r) => loadOf(r) ?? [])
    const anchorRounds = server.anchor === undefined ? [] : roundsOf(server.anchor)
    const rate = perRound<LoadFigures>(rs, anchorRounds, (f) => f.mibps)
    const cpu = perRound<LoadFigures>(rs, anchorRounds, (f) => f.cpuSPerGiB)
    const rssDelta = perRound<LoadFigures>(
      rs,
      anchorRounds,
      (f) => f.peakRssMiB,
      (s, a) => s - a
    )
    let verdict = "—"
    if (server.anchor !== undefined && server.clients === 1000 && rate.length > 0) {
      if (median(rate) >= MIN_LOAD_RATIO) verdict = "meets"
      else {
        verdict = `**misses** (${fixed(median(rate), 2)}× < ${MIN_LOAD_RATIO}×)`
        missed.push(`${server.id}: ${fixed(median(rate), 2)}× the raw echo server's throughput`)
      }
    }
    loadRows.push(
      [
        `\`${server.id}\` ${server.label}`,
        `${server.clients} × 1 MiB (${server.connections} connections)`,
        spread(
          fs.map((f) => f.mibps),
          0
        ),
        server.anchor === undefined ? "1 (anchor)" : spread(rate, 2),
        spread(
          fs.map((f) => f.cpuSPerGiB),
          2
        ),
        server.anchor === undefined ? "1 (anchor)" : spread(cpu, 2),
        `${fixed(Math.max(...fs.map((f) => f.peakRssMiB)), 1)}` +
          (server.anchor === undefined ? "" : ` (${signed(spread(rssDelta, 1))})`),
        verdict
      ].join(" | ")
    )
  }

  const notes = selected.flatMap((sc) => {
    const rs = roundsOf(sc.case.id)
    const bad = rs.filter((r) => r.problem !== undefined)
    const other = rs.map((r) => `${(r.run.otherLoad * 100).toFixed(0)}%`).join(", ")
    return [
      `- \`${sc.case.id}\`: other load ${other}` +
        (bad.length === 0 ? "." : `; **${bad.map((r) => `round ${r.run.round + 1}: ${r.problem}`).join("; ")}**.`)
    ]
  })

  const maxLoad = Math.max(0, ...runs.map((r) => r.otherLoad))
  const idleTable = [
    "| server | unit | N | RSS KiB / unit | ratio vs anchor (per round) | heap KiB / unit | growth (largest N / smallest) | base RSS MiB (vs anchor) | issue target |",
    "|---|---|---|---|---|---|---|---|---|",
    ...idleRows.map((r) => `| ${r} |`)
  ].join("\n")
  const loadTable = [
    "| server | clients × payload | MiB/s | ratio vs raw (per round) | server CPU s / GiB | CPU ratio | server peak RSS MiB (vs raw) | issue target |",
    "|---|---|---|---|---|---|---|---|",
    ...loadRows.map((r) => `| ${r} |`)
  ].join("\n")
  const commands = selected.map((sc) => {
    const argv = runs.find((r) => r.case === sc.case.id)?.argv ?? {}
    const parts = sc.case.processes.map((p) => argv[p.role]).filter((a) => a !== undefined)
    return `- \`${sc.case.id}\`: ${parts.map((a) => `\`${commandOf(a)}\``).join(", then ")}`
  })
  // A run that failed, or lost connections, fails the mode; a missed target is reported, as --accept does.
  const failed =
    runs.some((r) => r.error !== undefined) ||
    selected.some((sc) => roundsOf(sc.case.id).some((r) => r.problem !== undefined))
  const section = [
    SCALE_START,
    "## Ten thousand connections",
    "",
    `Written by \`npm run bench -- --scale\` on ${started.toISOString().replace(/\.\d+Z$/, "Z")}: ${rounds} ` +
      `rounds, the cases interleaved (rotated each round, reversed every other round); Node ${process.version}, ` +
      `${os.cpus()[0]?.model ?? "unknown CPU"} × ${os.availableParallelism()}; load average ` +
      `${loadStart.map((x) => x.toFixed(2)).join(" / ")} at the start; other work used at most ` +
      `${(maxLoad * 100).toFixed(0)}% of the machine during a run.`,
    "",
    "### Idle connections",
    "",
    "Each server is a fresh `node` running the built `dist/` (or, for an anchor, `node:net` and " +
      "libp2p-yamux only); it listens, forks its client (a plain `node`), and after 200 ms collects its " +
      "garbage (two full collections) and takes its memory: the **base**. The client then opens connections " +
      "in batches of 200 until N are open, each having written 16 bytes and read their echo (a `Shutdown.serve` " +
      "client writes nothing and reads the server's preface; a store-and-forward client waits for nothing), and " +
      "holds them open and quiet; 1 s later the server collects and takes its memory again. **RSS KiB / unit** is " +
      "the growth of the server's RSS over its base, divided by N (the heap column: of `heapUsed`), median " +
      "(min–max) over the rounds; the ratio is taken per round against the anchor of the same round. " +
      "**Growth** is the per-unit RSS at the largest N over that at the smallest, per round: above 1 what one " +
      "connection costs rises with N (a leak, or a structure that is not O(1) per connection); below 1 the " +
      "first thousand paid for something shared. At 1,000 connections a few MiB of the runtime's own growth " +
      "(heap pages, code) are a few KiB a connection: the 10k figure is the one the target is judged by. The " +
      "proxy rows stop at 9,000: a proxy holds two fds a connection and this machine's `ulimit -n` is 20,000. " +
      `Issue targets: memory per idle connection ≤ ${MAX_MEMORY_RATIO}× the anchor's at the largest N (` +
      "`Tcp.serve`, `Echo.serve`, `Shutdown.serve` against the raw server; `Proxy.serve` against the raw proxy); " +
      `the base RSS of \`Echo.serve\` ≤ the raw server's + ${MAX_BASE_EXTRA_MIB} MiB. The mux rows have no ` +
      "target: they are the comparison with libp2p-yamux the issue asks for.",
    "",
    idleTable,
    "",
    "### Under load",
    "",
    "A client process (`node:net` only) runs C connections at a time, each writing 1 MiB of the pattern in " +
      "64 KiB writes while it reads the echo, checking it, ending and waiting for the close, until the given " +
      "number of connections have been made. **MiB/s** is the echoed payload over the client's wall time; " +
      "**server CPU** the server's user + system time from listening to the last close, per GiB echoed; " +
      "**peak RSS** the server's `maxRSS`, the largest over the rounds (in parentheses the per-round " +
      "difference from the raw server's, median). Ratios are per round against the raw echo server of the same " +
      `round. Issue target: at 1,000 clients, ≥ ${MIN_LOAD_RATIO}× the raw server's throughput.`,
    "",
    loadTable,
    "",
    ...(missed.length === 0 ? ["Every target is met."] : [`Targets missed: ${missed.join("; ")}.`]),
    "",
    "Per case, the other load of each round and any problem:",
    "",
    ...notes,
    "",
    "### Commands",
    "",
    `- All of them: \`npm run bench -- --scale\` (builds, compiles, runs ${SCALE_ROUNDS} rounds and rewrites ` +
      "this section only; `--rounds N` for more or fewer, `--filter TEXT` for some cases, which writes nothing).",
    "- By hand, after `npm run build && npm run bench:compile`: an idle server runs alone (it forks its own " +
      'client) and prints its `RESULT`; a load server prints `READY {"port":N}`, then the client is started ' +
      "with that port:",
    ...commands,
    "",
    "### What the servers do",
    "",
    ...[...IDLE, ...LOAD].map((s) => `- \`${s.id}\`: ${s.what}.`),
    SCALE_END
  ].join("\n")
  return {
    markdown: section,
    text: [idleTable, "", loadTable, "", ...notes].join("\n"),
    failed,
    runs
  }
}

/** `file`'s text with its scale section replaced by `section` (appended if it has none). */
export const withScaleSection = (file: string, section: string): string =>
  withSection(file, SCALE_START, SCALE_END, section)

/** The scale section of `file`, markers included, or `undefined` (a full run carries it over as it is). */
export const scaleSectionOf = (file: string): string | undefined => sectionOf(file, SCALE_START, SCALE_END)
