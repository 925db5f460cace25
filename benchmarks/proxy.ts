/**
 * fullduplex's `Proxy.serve` against a plain Node proxy (`a.pipe(b); b.pipe(a)`): 1 GiB in 64 KiB writes,
 * client → proxy → echo → proxy → client.
 *
 * Three parties, and only the proxy differs between the two sides:
 *
 * - the client is the bench process, the `net` echo client of the `tcp` rows (`nodeEchoClient`): it writes
 *   the payload in 64 KiB writes (waiting for `'drain'`), then `end()`s, while it checks every piece that
 *   comes back (the byte count, and each piece's first and last byte against the pattern sent);
 * - the echo server is one `socket.pipe(socket)` process (`proxyProcess.ts echo`), the same for both sides;
 * - the proxies are one process per side (`proxyProcess.ts fullduplex|node`), both relaying to that echo.
 *
 * Why every party has a process of its own: in one process, one thread would run the client and the proxy
 * (and the echo) in turns, so the figure would be the sum of their CPU costs per byte, and the proxy's share
 * of it, the only thing that differs, would be diluted by the client's (and the echo's), which are the same
 * on both sides. In processes of their own the proxy runs on its own event loop, as a real proxy does, and
 * it is the busiest party (it moves every byte through four socket calls, where the client and the echo
 * each use two), so it sets the pace. The machine has two cores for three busy processes, so the kernel
 * still shares them: a side whose proxy costs more CPU also leaves less to the others, on both sides alike.
 * That is why each run also records the CPU time every party used (`process.cpuUsage`, which counts all of
 * a process's threads, V8's garbage-collection helpers included): the proxies' CPU time per run compares
 * the proxies whatever else the machine ran. Much of a proxy's CPU time is collecting the fresh 64 KiB
 * `Buffer` Node reads every socket read into, and it depends on which collections free them (young, by
 * scavenges, or by mark-compacts, which run largely on V8's helper threads), which can differ from process
 * to process: the proxies count their collections by kind, per run. Each proxy process samples its RSS as
 * the memory rows' servers do; the figures are reported, not judged (the issue sets no memory target for
 * the proxy).
 *
 * `TCP_NODELAY` is on for every socket of every party: fullduplex sets it by default on both legs
 * (`noDelay: true` in `Tcp.serve` and `Tcp.connect`), and every `net` socket is made with `noDelay: true`.
 * Both proxies use their defaults otherwise: 64 KiB buffers (fullduplex's `highWaterMark`, Node's
 * `readableHighWaterMark` and `writableHighWaterMark`) per leg and direction. The processes live over all
 * runs of the case; every run opens its own connection, and ends only once the client's socket is closed.
 */
import { type ChildProcess, fork } from "node:child_process"
import { fileURLToPath } from "node:url"
import { type BenchCase, formatBytes } from "./harness.js"
import {
  describeMemory,
  emptyMemoryObservation,
  formatMiB,
  type MemoryObservation,
  recordMemory,
  replyOf,
  signedMiB,
  stopProcess,
  worst
} from "./memory.js"
import { patternChunk, repeat } from "./pattern.js"
import type { GcCounts, PartyKind, ToChild, ToParent } from "./proxyProcess.js"
import { type NodeEchoObservation, nodeEchoClient } from "./tcp.js"

const KiB = 1024
const MiB = 1024 * KiB
const GiB = 1024 * MiB

const WRITE_SIZE = 64 * KiB
const PAYLOAD_BYTES = GiB
/** The target: at least this ratio to the `net` proxy's throughput, measured in the same run. */
const MIN_RATIO = 0.9

type Measured = Extract<ToParent, { _tag: "Measured" }>

/** A forked `proxyProcess.ts`: its port, and requests over IPC. */
class Party {
  private constructor(
    private readonly child: ChildProcess,
    readonly kind: PartyKind,
    readonly port: number
  ) {}

  static async start(kind: PartyKind, targetPort?: number): Promise<Party> {
    const args = targetPort === undefined ? [kind] : [kind, String(targetPort)]
    const child = fork(fileURLToPath(new URL("./proxyProcess.ts", import.meta.url)), args, {
      execArgv: ["--import", import.meta.resolve("tsx")],
      stdio: ["ignore", "inherit", "inherit", "ipc"]
    })
    const listening = await Party.reply(child, kind, "Listening")
    return new Party(child, kind, listening.port)
  }

  private static reply<Tag extends ToParent["_tag"]>(child: ChildProcess, kind: PartyKind, tag: Tag) {
    return replyOf<ToParent, Tag>(child, tag, `proxy bench process ${kind}`)
  }

  /** Its highest RSS and its CPU time since the previous `measure` (or since it went idle). */
  measure(): Promise<Measured> {
    const measured = Party.reply(this.child, this.kind, "Measured")
    this.child.send({ _tag: "Measure" } satisfies ToChild)
    return measured
  }

  /** Asks it to close its server and exit; kills it if it has not exited within 5 s. */
  stop(): Promise<void> {
    return stopProcess(this.child, { _tag: "Stop" } satisfies ToChild)
  }
}

/** CPU time per run (warm-up first) of each party, in milliseconds, and the proxy's garbage collections. */
interface CpuObservation {
  readonly proxy: Array<number>
  readonly echo: Array<number>
  readonly client: Array<number>
  readonly proxyGcs: Array<GcCounts>
}

/** Median of every run but the first (the warm-up). */
const timedMedian = (values: ReadonlyArray<number>): number => {
  const sorted = values.slice(1).sort((a, b) => a - b)
  const n = sorted.length
  if (n === 0) return Number.NaN
  return n % 2 === 1 ? sorted[(n - 1) / 2]! : (sorted[n / 2 - 1]! + sorted[n / 2]!) / 2
}

const ms = (millis: number): string => `${millis.toFixed(0)} ms`

const proxyCase = (): BenchCase => {
  const chunks = repeat(patternChunk(WRITE_SIZE), PAYLOAD_BYTES)
  const parties: { echo?: Party; fullduplex?: Party; node?: Party } = {}
  const started = (which: keyof typeof parties): Party => {
    const party = parties[which]
    if (party === undefined) throw new Error(`the ${which} process of the proxy benchmark is not running`)
    return party
  }
  type Side = "fullduplex" | "node"
  const label: Record<Side, string> = { fullduplex: "Proxy.serve process", node: "net pipe proxy process" }
  const memory: Record<Side, MemoryObservation> = {
    fullduplex: emptyMemoryObservation(),
    node: emptyMemoryObservation()
  }
  const cpu: Record<Side, CpuObservation> = {
    fullduplex: { proxy: [], echo: [], client: [], proxyGcs: [] },
    node: { proxy: [], echo: [], client: [], proxyGcs: [] }
  }
  const client: Record<Side, NodeEchoObservation> = {
    fullduplex: { client: { writes: 0, drainWaits: 0 }, reads: 0 },
    node: { client: { writes: 0, drainWaits: 0 }, reads: 0 }
  }
  const runThrough = (side: Side) => async () => {
    const proxy = started(side)
    const echo = started("echo")
    const before = process.cpuUsage()
    await nodeEchoClient(proxy.port, chunks, PAYLOAD_BYTES, client[side])
    const { user, system } = process.cpuUsage(before)
    // Both were measured after the previous run that used them: each figure covers one run (and idle time).
    const [proxyMeasured, echoMeasured] = await Promise.all([proxy.measure(), echo.measure()])
    recordMemory(proxyMeasured, memory[side])
    cpu[side].proxy.push(proxyMeasured.cpuMillis)
    cpu[side].proxyGcs.push(proxyMeasured.gcs)
    cpu[side].echo.push(echoMeasured.cpuMillis)
    cpu[side].client.push((user + system) / 1000)
  }
  const cpuNotes = (side: Side): string => {
    const c = cpu[side]
    const gcs = (kind: keyof GcCounts) =>
      c.proxyGcs
        .slice(1)
        .map((g) => g[kind])
        .join("/")
    return (
      `${label[side]} ${ms(timedMedian(c.proxy))} (garbage collections per timed run, scavenges ` +
      `${gcs("minor")}, mark-compacts ${gcs("major")}), echo ${ms(timedMedian(c.echo))}, client (bench ` +
      `process) ${ms(timedMedian(c.client))}`
    )
  }
  const readNotes = (side: Side): string => {
    const { reads, client: progress } = client[side]
    return (
      `through the ${label[side]} the client got ${reads} 'data' events ` +
      `(${formatBytes(Math.round(PAYLOAD_BYTES / Math.max(1, reads)))} on average) and \`write()\` returned ` +
      `false for ${progress.drainWaits} of ${progress.writes} writes`
    )
  }
  return {
    name: `proxy ${formatBytes(WRITE_SIZE)} writes`,
    writeSize: WRITE_SIZE,
    payloadBytes: PAYLOAD_BYTES,
    description:
      `a \`net\` client in the bench process sends ${chunks.length} writes of one ${formatBytes(WRITE_SIZE)} ` +
      `chunk (${formatBytes(PAYLOAD_BYTES)}, with 'drain' handling, then \`end()\`) through a proxy to a ` +
      `\`socket.pipe(socket)\` echo server and reads the echo back as it writes, checking the byte count and ` +
      `each piece's first and last byte against the pattern sent. Echo and proxies each run in a process of ` +
      `their own (\`benchmarks/proxyProcess.ts\`, started once for all runs; one echo for both sides); subject: ` +
      `\`Proxy.serve({ listen, target })\` with its defaults; baseline: \`net.createServer({ allowHalfOpen: ` +
      `true }, (a) => { const b = net.connect(target); a.pipe(b); b.pipe(a) })\`. Every socket sets ` +
      `\`TCP_NODELAY\`. Each run opens its own connection; the proxy and echo processes report their CPU time ` +
      `and the proxy its peak RSS over IPC after each run (inside the timed run: about a millisecond)`,
    subject: { label: label.fullduplex, run: runThrough("fullduplex") },
    baseline: { label: label.node, run: runThrough("node") },
    setUp: async () => {
      const echo = await Party.start("echo")
      parties.echo = echo
      const [fullduplex, node] = await Promise.all([
        Party.start("fullduplex", echo.port),
        Party.start("node", echo.port)
      ])
      parties.fullduplex = fullduplex
      parties.node = node
    },
    tearDown: async () => {
      await Promise.all([parties.fullduplex?.stop(), parties.node?.stop(), parties.echo?.stop()])
    },
    targets: { minRatio: MIN_RATIO },
    observed: () =>
      `${readNotes("fullduplex")}; ${readNotes("node")}; median CPU time per timed run (user + system, all ` +
      `threads of each process): with the fullduplex proxy ${cpuNotes("fullduplex")}; with the \`net\` proxy ` +
      `${cpuNotes("node")}; peak RSS above idle, warm-up first: ${describeMemory(label.fullduplex, memory.fullduplex)}; ` +
      `${describeMemory(label.node, memory.node)}`,
    reports: () => {
      const subject = timedMedian(cpu.fullduplex.proxy)
      const baseline = timedMedian(cpu.node.proxy)
      return [
        `CPU time of the proxy process per timed run (median, all its threads): ${label.fullduplex} ` +
          `${ms(subject)}, ${label.node} ${ms(baseline)}: the fullduplex proxy uses ` +
          `${(subject / baseline).toFixed(2)}× the CPU per byte.`,
        `peak RSS of the proxy process above idle, worst run (warm-up included): ${label.fullduplex} ` +
          `${signedMiB(worst(memory.fullduplex.aboveIdle))} (idle ${formatMiB(memory.fullduplex.idleRssBytes)}), ` +
          `${label.node} ${signedMiB(worst(memory.node.aboveIdle))} (idle ${formatMiB(memory.node.idleRssBytes)}).`
      ]
    }
  }
}

export const cases: ReadonlyArray<BenchCase> = [proxyCase()]
