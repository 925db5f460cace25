/**
 * One party of the proxy benchmark (`benchmarks/proxy.ts`) in a process of its own: a proxy, or the echo
 * server behind the proxies. The bench process is the client.
 *
 * Started with `fork` (an IPC channel) and one or two arguments: the {@link PartyKind}, and for a proxy the
 * port of the echo server it relays to. Every kind listens on 127.0.0.1 with `TCP_NODELAY` on every socket
 * (fullduplex's default on both legs; the `net` sockets with the `noDelay: true` option), and every kind
 * loads the same modules (fullduplex and effect), so their idle figures compare.
 *
 * - `fullduplex`: `Proxy.serve({ listen, target })`, defaults otherwise (64 KiB `highWaterMark` per leg,
 *   lingering close on both legs).
 * - `node`: the plain Node proxy: `net.createServer({ allowHalfOpen: true }, (a) => { const b =
 *   net.connect(target); a.pipe(b); b.pipe(a) })` (`b` half-open too), default stream buffers.
 * - `echo`: `socket.pipe(socket)`, as in the `tcp` rows.
 *
 * Messages, as {@link ToParent} and {@link ToChild}:
 *
 * - `Listening` (once): the port, and the idle {@link Usage}, sampled {@link SETTLE_MILLIS} after
 *   listening, before any connection.
 * - `Measure` → `Measured`: the highest RSS and `ArrayBuffer` memory seen since the previous `Measure`
 *   (sampled every `SAMPLE_MILLIS` of memory.ts, and once more on the request), the idle figures, the kernel's
 *   high-water mark of the process's RSS (`ru_maxrss`), and the CPU time (user + system, all threads, so
 *   V8's garbage-collection helpers too) the process used since the previous `Measure`, and the garbage
 *   collections it ran since then, by kind ({@link GcCounts}).
 * - `Stop`: close the server and exit.
 */
import { Effect, Exit, Scope } from "effect"
import * as net from "node:net"
import {
  constants as perfConstants,
  type NodeGCPerformanceDetail,
  type PerformanceEntry,
  PerformanceObserver
} from "node:perf_hooks"
import { Proxy } from "fullduplex"
import { peakSampler, type Usage, usageNow } from "./memory.js"

/** How often RSS is sampled while the server runs. */
/** How long after listening the idle RSS is taken. */
const SETTLE_MILLIS = 250
const HOST = "127.0.0.1"
/** Long enough never to cut a benchmark connection (the harness has its own timeout). */
const IDLE_TIMEOUT = "10 minutes"

export type PartyKind = "fullduplex" | "node" | "echo"

/**
 * Garbage collections, by kind. Most of a proxy's garbage is the fresh 64 KiB `Buffer` Node reads every
 * socket read into; whether scavenges (`minor`) free them while they are young or mark-compacts (`major`,
 * whose marking runs mostly on V8's helper threads) do, changes the process's CPU time markedly.
 */
export interface GcCounts {
  minor: number
  major: number
}

export type ToParent =
  | { readonly _tag: "Listening"; readonly port: number; readonly idle: Usage }
  | {
      readonly _tag: "Measured"
      readonly idle: Usage
      /** The highest of each figure sampled since the previous `Measure` (not necessarily at one instant). */
      readonly peak: Usage
      /** The kernel's peak RSS of this process since it started (`ru_maxrss`). */
      readonly maxRssBytes: number
      /** CPU time (user + system) of this process since the previous `Measure` (or since it went idle). */
      readonly cpuMillis: number
      /** Garbage collections since the previous `Measure` (or since it went idle). */
      readonly gcs: GcCounts
    }

export type ToChild = { readonly _tag: "Measure" } | { readonly _tag: "Stop" }

interface Listening {
  readonly port: number
  readonly close: () => Promise<void>
}

/** Listens with a plain `net` server; `close` resolves once every connection it accepted is closed. */
const listenNet = (server: net.Server): Promise<Listening> =>
  new Promise((resolve, reject) => {
    server.once("error", reject)
    server.listen({ host: HOST, port: 0 }, () => {
      const { port } = server.address() as net.AddressInfo
      resolve({ port, close: () => new Promise<void>((done) => server.close(() => done())) })
    })
  })

const listen = (kind: PartyKind, targetPort: number): Promise<Listening> => {
  switch (kind) {
    case "echo":
      return listenNet(
        net.createServer({ noDelay: true }, (socket) => {
          socket.on("error", () => {})
          socket.pipe(socket)
        })
      )
    case "node":
      return listenNet(
        net.createServer({ allowHalfOpen: true, noDelay: true }, (a) => {
          const b = net.connect({ host: HOST, port: targetPort, allowHalfOpen: true, noDelay: true })
          // A failure on either leg tears down both (and keeps an 'error' from crashing the process).
          const destroyBoth = () => {
            a.destroy()
            b.destroy()
          }
          a.on("error", destroyBoth)
          b.on("error", destroyBoth)
          a.pipe(b)
          b.pipe(a)
        })
      )
    case "fullduplex": {
      // The server lives in a scope of its own; closing it is the server's graceful shutdown.
      const scope = Scope.makeUnsafe()
      return Effect.runPromise(
        Proxy.serve({
          listen: { host: HOST, port: 0, idleTimeout: IDLE_TIMEOUT },
          target: { host: HOST, port: targetPort }
        }).pipe(
          Scope.provide(scope),
          Effect.flatMap((server) =>
            "port" in server.address ? Effect.succeed(server.address.port) : Effect.die("a TCP server has a port")
          ),
          Effect.map((port) => ({ port, close: () => Effect.runPromise(Scope.close(scope, Exit.void)) }))
        )
      )
    }
  }
}

const main = async (kind: PartyKind, targetPort: number): Promise<void> => {
  const server = await listen(kind, targetPort)
  await new Promise((resolve) => setTimeout(resolve, SETTLE_MILLIS))
  const idle = usageNow()
  let gcs: GcCounts = { minor: 0, major: 0 }
  const countGcs = (entries: ReadonlyArray<PerformanceEntry>) => {
    for (const entry of entries) {
      // A 'gc' entry's `detail` is a `NodeGCPerformanceDetail`; the typings give the base class only.
      const kind = (entry as PerformanceEntry & { readonly detail?: NodeGCPerformanceDetail }).detail?.kind
      if (kind === perfConstants.NODE_PERFORMANCE_GC_MINOR) gcs.minor++
      else if (kind === perfConstants.NODE_PERFORMANCE_GC_MAJOR) gcs.major++
    }
  }
  const gcObserver = new PerformanceObserver((list) => countGcs(list.getEntries()))
  gcObserver.observe({ entryTypes: ["gc"] })
  let cpuSince = process.cpuUsage()
  const sampler = peakSampler()
  process.on("message", (message: ToChild) => {
    switch (message._tag) {
      case "Measure": {
        countGcs(gcObserver.takeRecords()) // those not delivered yet
        const { user, system } = process.cpuUsage(cpuSince)
        const maxRssBytes = process.resourceUsage().maxRSS * 1024
        send({ _tag: "Measured", idle, peak: sampler.take(), maxRssBytes, cpuMillis: (user + system) / 1000, gcs })
        gcs = { minor: 0, major: 0 }
        cpuSince = process.cpuUsage()
        return
      }
      case "Stop": {
        sampler.stop()
        gcObserver.disconnect()
        void server.close().then(() => process.disconnect())
        return
      }
    }
  })
  send({ _tag: "Listening", port: server.port, idle })
}

const send = (message: ToParent): void => {
  process.send?.(message)
}

const kind = process.argv[2]
const targetPort = Number(process.argv[3] ?? 0)
if (kind !== "fullduplex" && kind !== "node" && kind !== "echo") {
  throw new Error(`usage: proxyProcess.ts fullduplex|node|echo [target port] (got ${kind})`)
}
if (kind !== "echo" && !(Number.isInteger(targetPort) && targetPort > 0)) {
  throw new Error(`proxyProcess.ts ${kind} needs the echo server's port (got ${process.argv[3]})`)
}
if (process.send === undefined) throw new Error("proxyProcess.ts must be started with fork (an IPC channel)")
await main(kind, targetPort)
