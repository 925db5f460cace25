/**
 * The bounds rows of issue #20: what a hostile peer costs fullduplex, against the bound it must stay under.
 * Not throughput: each case is a fullduplex process (`endpoints/fd-hostile.ts`, defaults as a user runs
 * them) and, for the TCP cases, an attacker (`endpoints/attacker.ts`, raw `node:net`), each a fresh `node`
 * started by the runner's `runCase`; rounds interleave the cases; every bound is checked on every round.
 *
 * `npm run bench -- --bounds` runs only these (and rewrites only their section of RESULTS.md, between
 * {@link BOUNDS_START} and {@link BOUNDS_END}); a full `npm run bench` runs them after the throughput rows.
 */
import * as os from "node:os"
import { formatBytes, MiB } from "./lib/common.js"
import type { Case, ProcessSpec } from "./rows.js"
import { checkBaselineImports, type ProcessResult, type Run } from "./runner/launch.js"
import {
  commandOf,
  median,
  type ModeOptions,
  type ModeOutcome,
  runRounds,
  selectCases,
  withSection
} from "./runner/modes.js"

/** Rounds of the bounds rows unless `--rounds` says otherwise in a `--bounds` run. */
export const BOUNDS_ROUNDS = 3
export const BOUNDS_START = "<!-- bounds:start -->"
export const BOUNDS_END = "<!-- bounds:end -->"

/** The frame of `framing-1byte-tcp`; `framing-1byte-pair`'s is `Framing.DEFAULT_MAX_FRAME_BYTES`, as its server reports. */
const TCP_FRAME_BYTES = MiB
/** `Framing.DEFAULT_MAX_FRAME_BYTES`, for the raw anchor, which cannot import it (the fullduplex process reports its own). */
const PAIR_FRAME_BYTES = 4 * MiB
const CHURN_PAIRS = 200_000
const UNBUDGETED_CHURN = 1_000_000_000
/** Issue #20: the session's growth under churn. */
const CHURN_GROWTH_BYTES = 32 * MiB
/** Issue #20: the margin over the documented error-close deadline. */
const DESTROY_MARGIN_MS = 100

interface Bound {
  readonly value: number
  readonly text: string
}

interface BoundCase {
  readonly case: Case
  /** What is measured, for the table. */
  readonly what: string
  readonly unit: "bytes" | "ms"
  /** The figure, from the fullduplex process's result. */
  readonly measure: (server: ProcessResult) => number
  /** The bound, from the same result where it comes from the package (a default it reports). */
  readonly bound: (server: ProcessResult) => Bound
  /** What else must hold for the round to count (the attack did what it is meant to); the problem if not. */
  readonly expect?: (server: ProcessResult, attacker: ProcessResult | undefined) => string | undefined
  /** Facts of one round worth a line (how the session ended, frames in). */
  readonly facts: (server: ProcessResult, attacker: ProcessResult | undefined) => string
  /** A reference process measured like the fullduplex one, whose figure is shown beside it, unbounded. */
  readonly anchorOf?: string
}

const fdProcess = (args: ReadonlyArray<string>, listens = true): ProcessSpec => ({
  role: "server",
  script: "fd-hostile",
  args,
  listens
})
const attacker = (args: ReadonlyArray<string>): ProcessSpec => ({ role: "attacker", script: "attacker", args })
const boundsCase = (id: string, label: string, processes: ReadonlyArray<ProcessSpec>, what: string): Case => ({
  id,
  label,
  fullduplex: processes.some((p) => p.script.startsWith("fd-")),
  metric: "mibps", // unused: no client, so no rate
  units: 0,
  processes,
  what
})

const growth = (server: ProcessResult): number => Number(server["growthBytes"])
const mib = (bytes: number): string => `${(bytes / MiB).toFixed(1)} MiB`
const heapFacts = (server: ProcessResult): string =>
  `V8 heap +${String(server["heapTotalGrowthMiB"])} MiB, ArrayBuffers +${String(server["arrayBuffersGrowthMiB"])} MiB`

const frameSentence =
  `one connection; the attacker sends one ${formatBytes(TCP_FRAME_BYTES)} data frame (Framing's 5-byte ` +
  "header, then bytes `i & 0xff`) one byte per `write` with `setNoDelay(true)`, yielding to the event loop " +
  "(`setImmediate`) every 16 writes so that the server reads pieces of a few bytes"

export const BOUND_CASES: ReadonlyArray<BoundCase> = [
  {
    case: boundsCase(
      "framing-1byte-tcp",
      "Framing, 1 MiB frame in 1-byte writes, TCP",
      [
        fdProcess(["--mode=framing-tcp", `--bytes=${TCP_FRAME_BYTES}`]),
        attacker(["--mode=frame-1byte", `--bytes=${TCP_FRAME_BYTES}`])
      ],
      "`Tcp.serve` (defaults, 127.0.0.1, port 0) whose handler runs `Framing.make(conn)`, reads the frame, " +
        `checks its size and bytes, replies with one frame (the length as text) and ends; ${frameSentence}, ` +
        "then reads the reply to the server's FIN. The server's RSS is sampled every 5 ms from the handler's " +
        "start (the connection accepted, nothing read) to the `ConnectionClosed` event"
    ),
    what:
      "peak RSS growth of the server over the connection, minus the raw Node receiver's " +
      "(`framing-1byte-tcp-node`) in the same round",
    unit: "bytes",
    measure: growth,
    bound: (server) => {
      const frame = Number(server["frameBytes"])
      return { value: 2 * frame, text: `≤ ${mib(2 * frame)} (2 × the ${formatBytes(frame)} frame)` }
    },
    facts: (server, att) =>
      `${heapFacts(server)}; the attacker made ${String(att?.["writes"])} writes in ${String(att?.["sentMs"])} ms`,
    anchorOf: "framing-1byte-tcp-node"
  },
  {
    case: boundsCase(
      "framing-1byte-tcp-node",
      "raw Node receiver of the same frame (anchor)",
      [
        {
          role: "server",
          script: "net-hostile",
          args: ["--mode=frame-sink", `--bytes=${TCP_FRAME_BYTES}`],
          listens: true
        },
        attacker(["--mode=frame-1byte", `--bytes=${TCP_FRAME_BYTES}`])
      ],
      "the anchor of `framing-1byte-tcp`, no Effect and no fullduplex: a `net.createServer` whose `'data'` " +
        "handler copies every chunk into one buffer of the frame's size allocated before the connection, " +
        `checks the frame and replies as the fullduplex server does; the same attacker (${frameSentence}). Its ` +
        "growth is what the 1-byte pieces cost Node itself, whoever reads them"
    ),
    what: "peak RSS growth of a raw `net` receiver (anchor: no bound)",
    unit: "bytes",
    measure: growth,
    bound: () => ({ value: Number.POSITIVE_INFINITY, text: "none (reference)" }),
    facts: (server) => `${String(server["reads"])} reads; ${heapFacts(server)}`
  },
  {
    case: boundsCase(
      "framing-1byte-pair",
      "Framing, 4 MiB frame in 1-byte writes, in memory",
      [fdProcess(["--mode=framing-pair"], false)],
      "one process: `Duplex.pair()` (defaults: 64 KiB each way), `Framing.make` on one end; one fiber writes a " +
        "frame of `Framing.DEFAULT_MAX_FRAME_BYTES` into the other end one byte per `write` (a fresh " +
        "`Uint8Array.of(byte)` each, header included), another reads it with `framed.read` and checks it. The " +
        "RSS is sampled every 5 ms from just before the first write until the frame is checked; the writer's " +
        "own pieces (up to 64 Ki one-byte arrays waiting in the pair) are part of it"
    ),
    what:
      "peak RSS growth of the process over the transfer, minus the raw Node `PassThrough`'s " +
      "(`framing-1byte-pair-node`) in the same round",
    unit: "bytes",
    measure: growth,
    bound: (server) => {
      const frame = Number(server["frameBytes"])
      return {
        value: 2 * frame,
        text: `≤ ${mib(2 * frame)} (2 × the ${formatBytes(frame)} frame, \`Framing.DEFAULT_MAX_FRAME_BYTES\`)`
      }
    },
    facts: (server) => `${heapFacts(server)}; ${String(server["ms"])} ms`,
    anchorOf: "framing-1byte-pair-node"
  },
  {
    case: boundsCase(
      "framing-1byte-pair-node",
      "raw Node PassThrough, the same frame in 1-byte writes (anchor)",
      [
        {
          role: "server",
          script: "net-hostile",
          args: ["--mode=pair-sink", `--bytes=${PAIR_FRAME_BYTES}`],
          listens: false
        }
      ],
      "the anchor of `framing-1byte-pair`, no Effect and no fullduplex: one process writes the same 4 MiB " +
        "frame into a `PassThrough` (64 KiB) one byte per `write` (a fresh `Uint8Array.of(byte)` each, " +
        "waiting for `'drain'` when told to) and copies its `'data'` into one buffer allocated before. Its " +
        "growth is what 4 Mi one-byte writes cost Node's streams and V8 (the pieces are garbage at once)"
    ),
    what: "peak RSS growth of a raw `PassThrough` receiver (anchor: no bound)",
    unit: "bytes",
    measure: growth,
    bound: () => ({ value: Number.POSITIVE_INFINITY, text: "none (reference)" }),
    facts: (server) => `${heapFacts(server)}; ${String(server["ms"])} ms`
  },
  {
    case: boundsCase(
      "mux-churn",
      "Mux, 200,000 stream open+reset pairs, default churn budget",
      [fdProcess(["--mode=mux-churn"]), attacker(["--mode=churn", `--pairs=${CHURN_PAIRS}`])],
      "`Tcp.serve` + `Mux.server(conn)` with default options, whose handler accepts streams in a loop (each " +
        "read to its end or failure in a fiber of its own) and awaits `session.closed`; the attacker writes " +
        `${CHURN_PAIRS.toLocaleString("en-US")} pairs of yamux WindowUpdate frames, SYN then RST, on odd ids ` +
        "1, 3, 5, …, 1024 pairs per write as fast as the socket drains, reading and discarding what the server " +
        "sends, then half-closes and waits for the server to close. The session must end with the churn " +
        "budget's `ProtocolError` (`Mux.DEFAULT_MAX_STREAM_CHURN`, refilled at " +
        "`Mux.DEFAULT_STREAM_CHURN_PER_SECOND`). RSS from the handler's start to `ConnectionClosed`"
    ),
    what: "peak RSS growth of the server over the session",
    unit: "bytes",
    measure: growth,
    bound: () => ({ value: CHURN_GROWTH_BYTES, text: `≤ ${mib(CHURN_GROWTH_BYTES)}` }),
    expect: (server) =>
      String(server["ended"]).includes("stream churn")
        ? undefined
        : `the session ended "${String(server["ended"])}", not on the churn budget`,
    facts: (server, att) =>
      `ended: ${String(server["reason"] ?? "clean")} (stream churn) after ${String(server["sessionMs"])} ms, ` +
      `framesIn ${String(server["framesIn"])} (budget ${String(server["maxStreamChurn"])}), ` +
      `${String(server["accepted"])} streams accepted; the attacker got ${String(att?.["pairsWritten"])} pairs ` +
      `into its socket and ended with ${String(att?.["ended"])}; ${heapFacts(server)}`
  },
  {
    case: boundsCase(
      "mux-churn-unbudgeted",
      "Mux, 200,000 open+reset pairs, churn budget off",
      [
        fdProcess(["--mode=mux-churn", `--churn=${UNBUDGETED_CHURN}`]),
        attacker(["--mode=churn", `--pairs=${CHURN_PAIRS}`])
      ],
      "as `mux-churn`, with `maxStreamChurn: 1_000_000_000` (no other option changed) so that the session " +
        `processes all ${CHURN_PAIRS.toLocaleString("en-US")} pairs and ends cleanly at the attacker's FIN: ` +
        "whether the session's state grows with churn at all"
    ),
    what: "peak RSS growth of the server over the session",
    unit: "bytes",
    measure: growth,
    bound: () => ({
      value: Number.POSITIVE_INFINITY,
      text: "none (reference: the budget is what bounds churn; this shows the garbage 200,000 streams make)"
    }),
    expect: (server) =>
      Number(server["framesIn"]) >= 2 * CHURN_PAIRS
        ? undefined
        : `framesIn ${String(server["framesIn"])}: not all ${2 * CHURN_PAIRS} frames were processed (${String(server["ended"])})`,
    facts: (server) =>
      `ended: ${String(server["reason"] ?? server["ended"])} after ${String(server["sessionMs"])} ms, framesIn ` +
      `${String(server["framesIn"])}, ${String(server["accepted"])} streams accepted, ` +
      `${String(server["streamsLeft"])} left open at the end; ${heapFacts(server)}`
  },
  {
    case: boundsCase(
      "mux-error-close",
      "Mux, protocol error against a non-reading peer",
      [fdProcess(["--mode=mux-error-close"]), attacker(["--mode=ping-flood"])],
      "a raw `net.createServer({ allowHalfOpen: true })`, its socket as `Duplex.fromNodeDuplex(socket)` in " +
        "`Effect.scoped`, then `Mux.server(duplex)` with default options; the attacker never reads " +
        "(`socket.pause()`) and writes pings (SYN, stream 0, opaque counter), 1024 per write, as fast as the " +
        "socket drains, until the server's control queue overflows (`ProtocolError` \"control frames wait to " +
        'be written: the peer does not read") and on until its socket errors or closes. The server times from ' +
        "the failure (a tap on `session.closed`) to the socket's `'close'`, its scope held open meanwhile"
    ),
    what: "ms from the protocol error to the socket destroyed",
    unit: "ms",
    measure: (server) => Number(server["destroyMs"]),
    bound: (server) => {
      const deadline = Number(server["deadlineMs"])
      return {
        value: deadline + DESTROY_MARGIN_MS,
        text: `≤ ${deadline + DESTROY_MARGIN_MS} ms (\`Mux.DEFAULT_ERROR_CLOSE_TIMEOUT\` ${deadline} ms + ${DESTROY_MARGIN_MS} ms)`
      }
    },
    expect: (server) =>
      String(server["ended"]).includes("control frames wait to be written")
        ? undefined
        : `the session ended "${String(server["ended"])}", not on the control queue`,
    facts: (server, att) =>
      `failed ${String(server["failedAfterMs"])} ms into the session after ${String(server["framesIn"])} frames in ` +
      `(${String(server["bytesOut"])} written to the peer); the attacker wrote ${String(att?.["pings"])} pings ` +
      `and ended with ${String(att?.["ended"])}`
  }
]

// -----------------------------------------------------------------------------------------------------
// running and reporting
// -----------------------------------------------------------------------------------------------------

interface Round {
  readonly run: Run
  /** The figure, or `undefined` when the round failed. */
  readonly value: number | undefined
  readonly bound: Bound | undefined
  readonly problem: string | undefined
  readonly facts: string | undefined
}

const evaluate = (bc: BoundCase, run: Run): Round => {
  const server = run.processes.server
  const att = run.processes.attacker
  if (run.error !== undefined || server === undefined) {
    return { run, value: undefined, bound: undefined, problem: run.error ?? "no result", facts: undefined }
  }
  const problem = bc.expect?.(server, att)
  const value = bc.measure(server)
  if (!Number.isFinite(value)) {
    return { run, value: undefined, bound: undefined, problem: "no figure in the result", facts: undefined }
  }
  return { run, value, bound: bc.bound(server), problem, facts: bc.facts(server, att) }
}

const show = (unit: "bytes" | "ms", x: number): string =>
  unit === "bytes" ? `${(x / MiB).toFixed(1)}` : x.toFixed(unit === "ms" && x < 100 ? 1 : 0)

const measuredText = (bc: BoundCase, rounds: ReadonlyArray<Round>): string => {
  const values = rounds.flatMap((r) => (r.value === undefined ? [] : [r.value]))
  if (values.length === 0) return "—"
  const unit = bc.unit === "bytes" ? "MiB" : "ms"
  const spread =
    values.length > 1 ? ` (${show(bc.unit, Math.min(...values))}–${show(bc.unit, Math.max(...values))})` : ""
  return `${show(bc.unit, median(values))} ${unit}${spread}`
}

/** PASS: every round ran, did what the attack is meant to, and stayed within the bound. */
const verdict = (rounds: ReadonlyArray<Round>): { text: string; failed: boolean } => {
  const broken = rounds.filter((r) => r.value === undefined || r.problem !== undefined)
  const over = rounds.filter((r) => r.value !== undefined && r.bound !== undefined && r.value > r.bound.value)
  if (broken.length === 0 && over.length === 0)
    return { text: `PASS (${rounds.length}/${rounds.length})`, failed: false }
  const parts = [
    ...(over.length > 0 ? [`${over.length}/${rounds.length} rounds over`] : []),
    ...(broken.length > 0 ? [`${broken.length}/${rounds.length} rounds failed`] : [])
  ]
  return { text: `**FAIL** (${parts.join(", ")})`, failed: true }
}

export type BoundsOutcome = ModeOutcome
export type BoundsOptions = ModeOptions

/** Runs the bounds cases for `rounds` rounds, interleaved, and reports them against their bounds. */
export const runBounds = async (
  rounds: number,
  log: (line: string) => void,
  options: BoundsOptions
): Promise<BoundsOutcome> => {
  const selected = selectCases(BOUND_CASES, options.filter, "bounds")
  checkBaselineImports(selected.map((bc) => bc.case)) // the attacker and the anchor load neither effect nor fullduplex
  const started = new Date()
  const loadStart = os.loadavg()
  const { byCase, runs } = await runRounds(
    "bounds",
    selected,
    rounds,
    options,
    evaluate,
    (bc, r) =>
      (r.value === undefined
        ? `FAILED ${r.problem}`
        : `${show(bc.unit, r.value)} ${bc.unit === "bytes" ? "MiB" : "ms"}`) +
      (r.value !== undefined && r.problem !== undefined ? ` [${r.problem}]` : "") +
      (r.bound !== undefined && r.value !== undefined && r.value > r.bound.value ? " OVER THE BOUND" : ""),
    log
  )
  // A case judged against its anchor: each round's figure is the subject's minus the anchor's in the same
  // round (what fullduplex adds to what the bytes cost Node itself), as ratios are taken per round.
  for (const bc of selected) {
    const anchor = bc.anchorOf === undefined ? undefined : byCase.get(bc.anchorOf)
    if (anchor === undefined) continue
    const own = byCase.get(bc.case.id)!
    own.forEach((r, i) => {
      const a = anchor[i]?.value
      own[i] =
        r.value === undefined || a === undefined
          ? { ...r, value: undefined, problem: r.problem ?? "no anchor figure in this round" }
          : { ...r, value: r.value - a }
    })
  }
  let failed = false
  const tableRows: Array<string> = []
  const notes: Array<string> = []
  for (const bc of selected) {
    const rs = byCase.get(bc.case.id)!
    const v = verdict(rs)
    const reference = bc.bound(
      rs.find((r) => r.run.processes.server !== undefined)?.run.processes.server ?? ({} as never)
    )
    const isAnchor = !Number.isFinite(reference.value)
    if (!isAnchor) failed ||= v.failed
    tableRows.push(
      `| \`${bc.case.id}\` | ${bc.what} | ${measuredText(bc, rs)} | ${reference.text} | ${isAnchor ? "—" : v.text} |`
    )
    const facts = rs.flatMap((r, i) => (r.facts === undefined ? [] : [`round ${i + 1}: ${r.facts}`]))
    const problems = rs.flatMap((r, i) => (r.problem === undefined ? [] : [`round ${i + 1}: ${r.problem}`]))
    notes.push(`- \`${bc.case.id}\`: ${[...facts, ...problems.map((p) => `**${p}**`)].join("; ") || "no round ran"}.`)
  }
  const maxLoad = Math.max(0, ...runs.map((r) => r.otherLoad))
  const table = [
    "| case | what | measured, median (min–max) | bound | verdict |",
    "|---|---|---|---|---|",
    ...tableRows
  ].join("\n")
  const commands = selected.map((bc) => {
    const argv = runs.find((r) => r.case === bc.case.id)?.argv ?? {}
    const parts = bc.case.processes.map((p) => argv[p.role]).filter((a) => a !== undefined)
    return `- \`${bc.case.id}\`: ${parts.map((a) => `\`${commandOf(a)}\``).join(", then ")}`
  })
  const section = [
    BOUNDS_START,
    "## Bounds under hostile peers (issue #20)",
    "",
    `Written by \`npm run bench -- --bounds\` (or a full \`npm run bench\`) on ` +
      `${started.toISOString().replace(/\.\d+Z$/, "Z")}: ${rounds} rounds, the cases interleaved (rotated each ` +
      `round, reversed every other round); Node ${process.version}, ${os.cpus()[0]?.model ?? "unknown CPU"} × ` +
      `${os.availableParallelism()}; load average ${loadStart.map((x) => x.toFixed(2)).join(" / ")} at the start; ` +
      `other work used at most ${(maxLoad * 100).toFixed(0)}% of the machine during a run.`,
    "",
    "Every process is a fresh plain `node` (no flags: no `--expose-gc`, so no collection is forced before the " +
      "base is taken) on the compiled endpoints and the built `dist/`. RSS growth is the peak minus the RSS " +
      "when the measured section starts: the peak is the largest of `process.memoryUsage()` sampled every " +
      "5 ms and, when the process's lifetime peak (`process.resourceUsage().maxRSS`) rose during the " +
      "section, that peak. A verdict is PASS when every round ran, the attack did what it is meant to (the " +
      "session ended the way the case expects), and every round's figure is within the bound; the bound " +
      "comes from the package where it is a default (the server reports it).",
    "",
    table,
    "",
    "Per round, what else the processes reported:",
    "",
    ...notes,
    "",
    "### Commands",
    "",
    `- All of them: \`npm run bench -- --bounds\` (builds, compiles, runs ${BOUNDS_ROUNDS} rounds and rewrites ` +
      "this section only; `--rounds N` for more, `--filter TEXT` for some cases, which writes nothing).",
    "- By hand, after `npm run build && npm run bench:compile`, start the first process, then the second with " +
      'the port the first prints (`READY {"port":N}`); each prints its `RESULT` line and exits:',
    ...commands,
    "",
    "### What the processes do",
    "",
    ...selected.map((bc) => `- \`${bc.case.id}\`: ${bc.case.what}.`),
    BOUNDS_END
  ].join("\n")
  return {
    markdown: section,
    text: [table, "", ...notes].join("\n"),
    failed,
    runs
  }
}

/** `file`'s text with its bounds section replaced by `section` (appended if it has none). */
export const withBoundsSection = (file: string, section: string): string =>
  withSection(file, BOUNDS_START, BOUNDS_END, section)
