/**
 * The accept-burst rows: what a burst of connections costs a server per connection, and whether the
 * kernel turns connections away meanwhile (its accept queue overflows while the server is busy in user
 * space). Three servers, each a fresh `node` of its own: a raw `net` server (the anchor), `Tcp.serve` with
 * an echo handler, and `Echo.serve`; every connection echoes until the client's FIN and then closes. Each
 * is run against the same client (`endpoints/accept-client.ts`, a fresh `node` too), once with the machine
 * otherwise idle and once while a third process spins on one core for the burst's length.
 *
 * `npm run bench -- --accept` runs only these (and rewrites only their section of RESULTS.md, between
 * {@link ACCEPT_START} and {@link ACCEPT_END}; a full `npm run bench` keeps that section as it was).
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

/** Rounds of the accept rows unless `--rounds` says otherwise. */
export const ACCEPT_ROUNDS = 5
export const ACCEPT_START = "<!-- accept:start -->"
export const ACCEPT_END = "<!-- accept:end -->"

/** The burst: connections opened at once (the issue's figure). */
const BURST_CONNECTIONS = 2000
/** Connections each server takes before the burst, in batches of {@link WARMUP_BATCH}: its code is warm. */
const WARMUP_CONNECTIONS = 1000
const WARMUP_BATCH = 100
/**
 * `maxConnections` of the fullduplex servers: above the burst, so that they serve every connection as
 * the raw server does (`Tcp.DEFAULT_MAX_CONNECTIONS`, 1024, would refuse the rest of a burst that a fast
 * server holds open at once).
 */
const MAX_CONNECTIONS = 2 * BURST_CONNECTIONS
/** Issue: CPU per accepted connection at most this × the raw `net` server's. */
const MAX_CPU_RATIO = 2

type Variant = "idle" | "busy"

interface Server {
  /** The id prefix of its cases. */
  readonly id: string
  readonly label: string
  readonly fullduplex: boolean
  readonly spec: ProcessSpec
  readonly what: string
}

const burstArgs = [`--connections=${BURST_CONNECTIONS}`, `--warmup=${WARMUP_CONNECTIONS}`]

const SERVERS: ReadonlyArray<Server> = [
  {
    id: "accept-net",
    label: "raw `net` server (anchor)",
    fullduplex: false,
    spec: { role: "server", script: "net-accept", args: burstArgs, listens: true },
    what:
      "`net.createServer({ allowHalfOpen: true, noDelay: true })` with Node's default backlog (511); each " +
      "connection `socket.pipe(socket)` (echo to the client's FIN, then FIN and close)"
  },
  {
    id: "accept-tcp",
    label: "`Tcp.serve`, echo handler",
    fullduplex: true,
    spec: {
      role: "server",
      script: "fd-accept",
      args: ["--mode=tcp", ...burstArgs, `--max-connections=${MAX_CONNECTIONS}`],
      listens: true
    },
    what:
      "`Tcp.serve({ host, port: 0, maxConnections: " +
      `${MAX_CONNECTIONS}` +
      " }, handler)` (so `Tcp.DEFAULT_BACKLOG`, 4096, and every other default: idle timeout, lingering close, " +
      "`onEvent`), whose handler loops `conn.read` → `conn.write` of the chunk until EOF and returns"
  },
  {
    id: "accept-echo",
    label: "`Echo.serve`",
    fullduplex: true,
    spec: {
      role: "server",
      script: "fd-accept",
      args: ["--mode=echo", ...burstArgs, `--max-connections=${MAX_CONNECTIONS}`],
      listens: true
    },
    what: `\`Echo.serve({ host, port: 0, maxConnections: ${MAX_CONNECTIONS} })\`: the default stream policy (a pump under a watchdog), the rest as \`Tcp.serve\`'s defaults`
  }
]

const clientSpec = (variant: Variant): ProcessSpec => ({
  // An "attacker" is told the server's port like a client, and reports no payload for the runner to check:
  // failed connections are figures here, not a failed run.
  role: "attacker",
  script: "accept-client",
  args: [...burstArgs, `--batch=${WARMUP_BATCH}`, ...(variant === "busy" ? ["--busy"] : [])]
})

interface AcceptCase {
  readonly server: Server
  readonly variant: Variant
  readonly case: Case
}

const makeCase = (server: Server, variant: Variant): AcceptCase => ({
  server,
  variant,
  case: {
    id: variant === "idle" ? server.id : `${server.id}-busy`,
    label: `${server.label}${variant === "busy" ? ", one core busy" : ""}`,
    fullduplex: server.fullduplex,
    metric: "mibps", // unused: no client, so no rate
    units: 0,
    processes: [server.spec, clientSpec(variant)],
    what: server.what
  }
})

export const ACCEPT_CASES: ReadonlyArray<AcceptCase> = SERVERS.flatMap((s) => [
  makeCase(s, "idle"),
  makeCase(s, "busy")
])

// -----------------------------------------------------------------------------------------------------
// one round's figures
// -----------------------------------------------------------------------------------------------------

interface Figures {
  readonly cpuUsPerConnection: number
  readonly warmupCpuUsPerConnection: number
  readonly burstMs: number
  readonly failed: number
  readonly results: Record<string, number>
  readonly listenOverflows: number
  readonly listenDrops: number
  readonly peakRssMiB: number
  readonly p99Ms: number
  readonly slowOver1s: number
  readonly refused: number
  readonly peakActive: number
  /** The spinner's CPU time over its wall time (busy variant). */
  readonly busyShare: number | undefined
}

interface Round {
  readonly run: Run
  readonly figures: Figures | undefined
  readonly problem: string | undefined
}

const num = (x: unknown): number => (typeof x === "number" ? x : Number.NaN)

const figuresOf = (server: ProcessResult, client: ProcessResult): Figures => {
  const netstat = client["netstat"] as Record<string, number>
  const busy = client["busy"] as { cpuMs: number; wallMs: number } | null
  const stats = server["stats"] as Record<string, number> | undefined
  return {
    cpuUsPerConnection: num(server["cpuUsPerConnection"]),
    warmupCpuUsPerConnection: num(server["warmupCpuUsPerConnection"]),
    burstMs: num(client["burstMs"]),
    failed: num(client["failed"]),
    results: client["results"] as Record<string, number>,
    listenOverflows: num(netstat["ListenOverflows"]),
    listenDrops: num(netstat["ListenDrops"]),
    peakRssMiB: server.peakRssMiB,
    p99Ms: num((client["connectionMs"] as Record<string, number>)["p99"]),
    slowOver1s: num(client["slowOver1s"]),
    refused: stats?.["refused"] ?? 0,
    peakActive: num(server["peakActive"]),
    busyShare: busy === null ? undefined : busy.cpuMs / busy.wallMs
  }
}

const evaluate = (run: Run): Round => {
  const server = run.processes.server
  const client = run.processes.attacker
  if (run.error !== undefined || server === undefined || client === undefined) {
    return { run, figures: undefined, problem: run.error ?? "no result" }
  }
  const problem =
    server["complete"] !== true
      ? `the server saw ${String(server["burstConnections"])} of ${BURST_CONNECTIONS} burst connections close`
      : undefined
  return { run, figures: figuresOf(server, client), problem }
}

// -----------------------------------------------------------------------------------------------------
// reporting
// -----------------------------------------------------------------------------------------------------

const figuresIn = (rounds: ReadonlyArray<Round>): ReadonlyArray<Figures> =>
  rounds.flatMap((r) => (r.figures === undefined ? [] : [r.figures]))

/** Per round, `subject / anchor` of the same round; rounds where either failed are left out. */
const ratios = (subject: ReadonlyArray<Round>, anchor: ReadonlyArray<Round>): ReadonlyArray<number> =>
  subject.flatMap((r, i) => {
    const a = anchor[i]?.figures?.cpuUsPerConnection
    const s = r.figures?.cpuUsPerConnection
    return a === undefined || s === undefined || !Number.isFinite(a) || !Number.isFinite(s) ? [] : [s / a]
  })

/** `median (max)` of a count over the rounds. */
const countText = (xs: ReadonlyArray<number>): string => {
  const ok = xs.filter(Number.isFinite)
  return ok.length === 0 ? "—" : `${fixed(median(ok), 0)} (${fixed(Math.max(...ok), 0)})`
}

const sum = (xs: ReadonlyArray<number>): number => xs.reduce((a, b) => a + b, 0)

const tallyText = (rs: ReadonlyArray<Figures>): string => {
  const all: Record<string, number> = {}
  for (const f of rs) for (const [k, v] of Object.entries(f.results)) if (k !== "ok") all[k] = (all[k] ?? 0) + v
  const entries = Object.entries(all)
  return entries.length === 0 ? "" : ` (${entries.map(([k, v]) => `${k} ${v}`).join(", ")})`
}

export type AcceptOutcome = ModeOutcome
export type AcceptOptions = ModeOptions

/** Runs the accept cases for `rounds` rounds, interleaved, and reports them against the raw server. */
export const runAccept = async (
  rounds: number,
  log: (line: string) => void,
  options: AcceptOptions
): Promise<AcceptOutcome> => {
  const selected = selectCases(ACCEPT_CASES, options.filter, "accept")
  checkBaselineImports(selected.map((ac) => ac.case)) // the raw server and the client load neither effect nor fullduplex
  const started = new Date()
  const loadStart = os.loadavg()
  const { byCase, runs } = await runRounds(
    "accept",
    selected,
    rounds,
    options,
    (_, run) => evaluate(run),
    (_, r) => {
      const f = r.figures
      return f === undefined
        ? `FAILED ${r.problem}`
        : `${fixed(f.cpuUsPerConnection, 1)} µs/conn, burst ${fixed(f.burstMs, 0)} ms, ${f.failed} failed, ` +
            `ListenOverflows +${f.listenOverflows}` +
            (f.refused > 0 ? `, ${f.refused} refused` : "") +
            (r.problem === undefined ? "" : ` [${r.problem}]`)
    },
    log
  )

  const roundsOf = (id: string): ReadonlyArray<Round> => byCase.get(id) ?? []
  const tableRows: Array<string> = []
  const notes: Array<string> = []
  for (const server of SERVERS) {
    const idle = roundsOf(server.id)
    const busy = roundsOf(`${server.id}-busy`)
    if (idle.length === 0 && busy.length === 0) continue
    const fi = figuresIn(idle)
    const fb = figuresIn(busy)
    const cpu = (fs: ReadonlyArray<Figures>) => fs.map((f) => f.cpuUsPerConnection)
    const burstMs = (fs: ReadonlyArray<Figures>) => fs.map((f) => f.burstMs)
    const isAnchor = server.id === "accept-net"
    const ri = isAnchor ? [] : ratios(idle, roundsOf("accept-net"))
    const rb = isAnchor ? [] : ratios(busy, roundsOf("accept-net-busy"))
    const overflowsBusy = fb.map((f) => f.listenOverflows)
    const verdict = isAnchor
      ? "—"
      : ri.length === 0 || fb.length === 0
        ? "—"
        : median(ri) <= MAX_CPU_RATIO && overflowsBusy.every((x) => x === 0) && sum(fb.map((f) => f.failed)) === 0
          ? "meets"
          : `**misses** (${[
              ...(median(ri) > MAX_CPU_RATIO ? [`${fixed(median(ri), 1)}× > ${MAX_CPU_RATIO}×`] : []),
              ...(overflowsBusy.some((x) => x !== 0) ? ["overflows with a busy core"] : []),
              ...(sum(fb.map((f) => f.failed)) > 0 ? ["failed connects with a busy core"] : [])
            ].join("; ")})`
    tableRows.push(
      [
        `\`${server.id}\` ${server.label}`,
        `${spread(cpu(fi), 1)} / ${spread(cpu(fb), 1)}`,
        isAnchor ? "1 (anchor)" : `${spread(ri, 2)} / ${spread(rb, 2)}`,
        `${spread(burstMs(fi), 0)} / ${spread(burstMs(fb), 0)}`,
        `${sum(fi.map((f) => f.failed))}${tallyText(fi)} / ${sum(fb.map((f) => f.failed))}${tallyText(fb)}`,
        `${countText(fi.map((f) => f.listenOverflows))} / ${countText(overflowsBusy)}`,
        `${fixed(Math.max(...fi.map((f) => f.peakRssMiB)), 1)} / ${fixed(Math.max(...fb.map((f) => f.peakRssMiB)), 1)}`,
        verdict
      ].join(" | ")
    )
    for (const [id, rs] of [
      [server.id, idle],
      [`${server.id}-busy`, busy]
    ] as const) {
      if (rs.length === 0) continue
      const facts = rs.map((r, i) => {
        const f = r.figures
        if (f === undefined) return `round ${i + 1}: **failed: ${r.problem}**`
        return (
          `round ${i + 1}: ${fixed(f.cpuUsPerConnection, 1)} µs/conn (warm-up ${fixed(f.warmupCpuUsPerConnection, 0)}), ` +
          `burst ${fixed(f.burstMs, 0)} ms, p99 ${fixed(f.p99Ms, 0)} ms, ${f.slowOver1s} connections ≥ 1 s, ` +
          `ListenOverflows +${f.listenOverflows} / ListenDrops +${f.listenDrops}, ` +
          `${f.peakActive} open at once` +
          (f.refused > 0 ? `, ${f.refused} refused` : "") +
          (f.failed > 0 ? `, failed: ${JSON.stringify(f.results)}` : "") +
          (f.busyShare === undefined ? "" : `, spinner got ${(f.busyShare * 100).toFixed(0)}% of a core`) +
          (r.problem === undefined ? "" : ` **[${r.problem}]**`) +
          `, other load ${(r.run.otherLoad * 100).toFixed(0)}%`
        )
      })
      notes.push(`- \`${id}\`: ${facts.join("; ")}.`)
    }
  }
  const maxLoad = Math.max(0, ...runs.map((r) => r.otherLoad))
  const table = [
    "| server | CPU µs / connection, idle / busy core | ratio vs `net`, idle / busy | burst wall ms, idle / busy " +
      "| failed connects (all rounds), idle / busy | ListenOverflows Δ, median (max), idle / busy | peak RSS MiB, idle / busy | issue target |",
    "|---|---|---|---|---|---|---|---|",
    ...tableRows.map((r) => `| ${r} |`)
  ].join("\n")
  const commands = selected.map((ac) => {
    const argv = runs.find((r) => r.case === ac.case.id)?.argv ?? {}
    const parts = ac.case.processes.map((p) => argv[p.role]).filter((a) => a !== undefined)
    return `- \`${ac.case.id}\`: ${parts.map((a) => `\`${commandOf(a)}\``).join(", then ")}`
  })
  const failed = runs.some((r) => r.error !== undefined)
  const section = [
    ACCEPT_START,
    "## Accept bursts",
    "",
    `Written by \`npm run bench -- --accept\` on ${started.toISOString().replace(/\.\d+Z$/, "Z")}: ${rounds} ` +
      `rounds, the cases interleaved (rotated each round, reversed every other round); Node ${process.version}, ` +
      `${os.cpus()[0]?.model ?? "unknown CPU"} × ${os.availableParallelism()}; load average ` +
      `${loadStart.map((x) => x.toFixed(2)).join(" / ")} at the start; other work used at most ` +
      `${(maxLoad * 100).toFixed(0)}% of the machine during a run.`,
    "",
    `A client opens ${BURST_CONNECTIONS.toLocaleString("en-US")} connections at once to a server that has ` +
      `already served ${WARMUP_CONNECTIONS.toLocaleString("en-US")} (in batches of ${WARMUP_BATCH}, so its code ` +
      "is warm); each connection writes 17 bytes, reads their echo, ends, and waits for the server's FIN. " +
      "**CPU µs / connection**: the server's CPU time (`process.cpuUsage()`, user + system, all threads) from " +
      "the warm-up's last close to the burst's last close, over the burst's connections: accepting, echoing " +
      "and closing each, whatever the server does per connection. The ratio is taken per round against the raw " +
      "`net` server of the same round and variant, then its median (min–max). **Burst wall ms**: the client's, " +
      "from its first `connect` call to its last close; a connection the kernel turned away and the client " +
      "retried takes a second or more (the SYN retransmission timeout), so a burst near 1,000 ms or beyond " +
      "means drops. **ListenOverflows**: the delta of `TcpExt: ListenOverflows` in `/proc/net/netstat` over " +
      "the burst, a **system-wide** counter (every listener in the network namespace; on a shared machine " +
      "another listener's overflows would count too). **Busy core**: the client starts a third fresh `node` " +
      "spinning on one core before its burst and stops it after (the notes give the share of a core it got). " +
      `The fullduplex servers run with \`maxConnections: ${MAX_CONNECTIONS}\`, above the burst, so that they ` +
      "serve every connection as the raw server does; everything else is their default (backlog " +
      "`Tcp.DEFAULT_BACKLOG` = 4096, the raw server Node's 511, both under `net.core.somaxconn`). " +
      `Issue target: CPU per connection ≤ ${MAX_CPU_RATIO}× the raw server's (median ratio, idle), and no ` +
      "ListenOverflows and no failed connect with a busy core in any round.",
    "",
    table,
    "",
    "Per round, what else the processes reported:",
    "",
    ...notes,
    "",
    "### Commands",
    "",
    `- All of them: \`npm run bench -- --accept\` (builds, compiles, runs ${ACCEPT_ROUNDS} rounds and rewrites ` +
      "this section only; `--rounds N` for more or fewer, `--filter TEXT` for some cases, which writes nothing).",
    "- By hand, after `npm run build && npm run bench:compile`, start the server, then the client with the " +
      'port the server prints (`READY {"port":N}`); each prints its `RESULT` line and exits:',
    ...commands,
    "",
    "### What the servers do",
    "",
    ...SERVERS.map((s) => `- \`${s.id}\`: ${s.what}.`),
    ACCEPT_END
  ].join("\n")
  return { markdown: section, text: [table, "", ...notes].join("\n"), failed, runs }
}

/** `file`'s text with its accept section replaced by `section` (appended if it has none). */
export const withAcceptSection = (file: string, section: string): string =>
  withSection(file, ACCEPT_START, ACCEPT_END, section)

/** The accept section of `file`, markers included, or `undefined` (a full run carries it over as it is). */
export const acceptSectionOf = (file: string): string | undefined => sectionOf(file, ACCEPT_START, ACCEPT_END)
