/**
 * The client of the accept-burst rows (`benchmarks/accept.ts`), `node:net` only: a burst of connections
 * opened all at once.
 *
 * 1. Warm-up (`--warmup=K`, default 0): K connections in batches of `--batch=B` (default 100) opened at
 *    once, each batch waited for; then a pause (`SETTLE_MS`) in which the server takes its CPU reading.
 * 2. With `--busy`: starts `busy.js` (a fresh `node` spinning on one core) and waits until it spins.
 * 3. The burst (`--connections=N`): reads `/proc/net/netstat`, then calls `net.connect` N times in one
 *    synchronous loop (Node issues the non-blocking connects on the next tick, all together); each
 *    connection, once connected, writes `PAYLOAD`, reads its echo, checks it, ends, and waits for the
 *    server's FIN and the close. Timed from the first `connect` call to the last close; then
 *    `/proc/net/netstat` again (its delta is system-wide), and the spinner is stopped.
 *
 * A connection fails with its socket's error code (`ECONNRESET`, `ETIMEDOUT`, `ECONNREFUSED`, …),
 * `eof-before-echo` when the server closed it before echoing a byte (a server that refused it at once),
 * `short-echo` or `wrong-echo`, or `deadline` when it had not closed `--deadline=SECONDS` (default 30)
 * after the burst started (it is then destroyed). Failures are counted, not fatal: they are the row's
 * figures.
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as net from "node:net"
import * as path from "node:path"
import { createInterface } from "node:readline"
import { netstatDelta, readNetstat } from "../lib/burst.js"
import { HOST, Meter, options, required } from "../lib/common.js"

const meter = new Meter("client")
const opts = options()
const port = Number(required(opts, "port"))
const connections = Number(required(opts, "connections"))
const warmup = Number(opts["warmup"] ?? 0)
const batch = Number(opts["batch"] ?? 100)
const busy = opts["busy"] === "true"
const deadlineMs = Number(opts["deadline"] ?? 30) * 1000

/** What each connection writes and expects back: a few bytes, one segment. */
const PAYLOAD = Buffer.from("fullduplex burst\n")
/** After the warm-up: long enough for the server's 5 ms poll to see it done before the burst starts. */
const SETTLE_MS = 250

interface Outcome {
  /** `"ok"`, or why it failed. */
  readonly result: string
  /** From the `connect` call to the close. */
  readonly ms: number
}

/** One connection: connect, write the payload, read its echo, end, wait for the close. */
const connection = (deadline: Promise<void>): Promise<Outcome> =>
  new Promise((resolve) => {
    const t0 = performance.now()
    const socket = net.connect({ host: HOST, port, noDelay: true })
    let failure: string | undefined
    let echoed = 0
    socket.on("connect", () => socket.write(PAYLOAD))
    socket.on("data", (piece: Buffer) => {
      if (failure === undefined && !piece.equals(PAYLOAD.subarray(echoed, echoed + piece.length)))
        failure = "wrong-echo"
      echoed += piece.length
      if (echoed >= PAYLOAD.length) socket.end()
    })
    socket.on("error", (error: NodeJS.ErrnoException) => {
      failure ??= error.code ?? error.message
    })
    socket.on("close", () => {
      if (failure === undefined && echoed !== PAYLOAD.length) failure = echoed === 0 ? "eof-before-echo" : "short-echo"
      resolve({ result: failure ?? "ok", ms: performance.now() - t0 })
    })
    void deadline.then(() => {
      if (socket.destroyed) return
      failure ??= "deadline"
      socket.destroy()
    })
  })

/** `n` connections opened in one synchronous loop; resolves when every one has closed. */
const burst = (n: number): Promise<ReadonlyArray<Outcome>> => {
  let timer: NodeJS.Timeout | undefined
  const deadline = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, deadlineMs)
  })
  const all = Array.from({ length: n }, () => connection(deadline))
  return Promise.all(all).finally(() => clearTimeout(timer))
}

const tally = (outcomes: ReadonlyArray<Outcome>): Record<string, number> => {
  const out: Record<string, number> = {}
  for (const o of outcomes) out[o.result] = (out[o.result] ?? 0) + 1
  return out
}

/** Starts the spinner; resolves once it spins. */
const startBusy = (): Promise<{ child: ChildProcess; report: Promise<unknown> }> =>
  new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(import.meta.dirname, "busy.js")], {
      stdio: ["ignore", "pipe", "inherit"]
    })
    let onReport: (figures: unknown) => void = () => {}
    const report = new Promise<unknown>((r) => {
      onReport = r
    })
    child.once("error", reject)
    child.once("exit", () => onReport(undefined))
    createInterface({ input: child.stdout! }).on("line", (line) => {
      if (line === "SPINNING") resolve({ child, report })
      else if (line.startsWith("BUSY ")) onReport(JSON.parse(line.slice(5)))
    })
  })

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))
const round1 = (x: number): number => Math.round(x * 10) / 10

const warmupOutcomes: Array<Outcome> = []
for (let done = 0; done < warmup; done += batch) {
  warmupOutcomes.push(...(await burst(Math.min(batch, warmup - done))))
}
await sleep(SETTLE_MS)

const spinner = busy ? await startBusy() : undefined
if (spinner !== undefined) await sleep(100) // let the scheduler settle the spinner on its core

const before = readNetstat()
meter.start()
const outcomes = await burst(connections)
const burstMs = meter.elapsedMs()
const after = readNetstat()

spinner?.child.kill("SIGTERM")
const busyFigures = await spinner?.report

const times = outcomes.map((o) => o.ms).sort((a, b) => a - b)
const at = (q: number) => round1(times[Math.min(times.length - 1, Math.floor(q * times.length))]!)
const results = tally(outcomes)
meter.finish({
  connections,
  ok: results["ok"] ?? 0,
  failed: connections - (results["ok"] ?? 0),
  results,
  burstMs: round1(burstMs),
  connectionMs: { p50: at(0.5), p99: at(0.99), max: round1(times[times.length - 1]!) },
  /** Connections that took a second or more: a SYN or handshake ACK the kernel dropped and retransmitted. */
  slowOver1s: times.filter((t) => t >= 1000).length,
  netstat: netstatDelta(before, after),
  warmup: { connections: warmup, batch, results: tally(warmupOutcomes) },
  busy: busyFigures ?? null
})
