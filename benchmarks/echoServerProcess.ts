/**
 * An echo server in a process of its own, for the memory row of `benchmarks/tcp.ts`: the bench process
 * drives the echo, this process reports how much resident memory it took.
 *
 * Started with `fork` (an IPC channel) and one argument: `fullduplex` serves `Echo.serve({ port: 0 })`
 * with the default (streaming) policy, `node` serves `socket.pipe(socket)` with plain `net`. Both listen on
 * 127.0.0.1 with `TCP_NODELAY` on every connection.
 *
 * Messages, as {@link ToParent} and {@link ToChild}:
 *
 * - `Listening` (once): the port, and the idle {@link Usage}, sampled {@link SETTLE_MILLIS} after
 *   listening, before any connection.
 * - `Measure` → `Memory`: the highest RSS and the most memory in `ArrayBuffer`s (Node's `Buffer`s) seen
 *   since the previous `Measure` (sampled every `SAMPLE_MILLIS` of memory.ts, and once more on the request), the
 *   idle figures, and the kernel's high-water mark of the process's RSS (`ru_maxrss`), which sampling
 *   cannot miss (but which also covers start-up).
 * - `Stop`: close the server and exit.
 */
import { Effect, Exit, Scope } from "effect"
import * as net from "node:net"
import { Echo } from "fullduplex"
import { peakSampler, type Usage, usageNow } from "./memory.js"

/** How often RSS is sampled while the server runs. */
/** How long after listening the idle RSS is taken. */
export const SETTLE_MILLIS = 250

export type ServerKind = "fullduplex" | "node"

export type ToParent =
  | { readonly _tag: "Listening"; readonly port: number; readonly idle: Usage }
  | {
      readonly _tag: "Memory"
      readonly idle: Usage
      /** The highest of each figure sampled since the previous `Measure` (not necessarily at one instant). */
      readonly peak: Usage
      /** The kernel's peak RSS of this process since it started (`ru_maxrss`). */
      readonly maxRssBytes: number
    }

export type ToChild = { readonly _tag: "Measure" } | { readonly _tag: "Stop" }

/** Long enough never to cut a benchmark connection (the harness has its own timeout). */
const IDLE_TIMEOUT = "10 minutes"

const send = (message: ToParent): void => {
  process.send?.(message)
}

/** Starts the server; resolves with its port and a function that closes it (and every connection). */
const listen = (kind: ServerKind): Promise<{ port: number; close: () => Promise<void> }> => {
  if (kind === "node") {
    const server = net.createServer({ noDelay: true }, (socket) => {
      socket.on("error", () => {})
      socket.pipe(socket)
    })
    return new Promise((resolve, reject) => {
      server.once("error", reject)
      server.listen({ host: "127.0.0.1", port: 0 }, () => {
        const { port } = server.address() as net.AddressInfo
        resolve({ port, close: () => new Promise<void>((done) => server.close(() => done())) })
      })
    })
  }
  // The server lives in a scope of its own; closing it is the server's graceful shutdown.
  const scope = Scope.makeUnsafe()
  return Effect.runPromise(
    Echo.serve({ port: 0, idleTimeout: IDLE_TIMEOUT }).pipe(
      Scope.provide(scope),
      Effect.flatMap((server) =>
        "port" in server.address ? Effect.succeed(server.address.port) : Effect.die("a TCP server has a port")
      ),
      Effect.map((port) => ({ port, close: () => Effect.runPromise(Scope.close(scope, Exit.void)) }))
    )
  )
}

const main = async (kind: ServerKind): Promise<void> => {
  const server = await listen(kind)
  await new Promise((resolve) => setTimeout(resolve, SETTLE_MILLIS))
  const idle = usageNow()
  const sampler = peakSampler()
  process.on("message", (message: ToChild) => {
    switch (message._tag) {
      case "Measure": {
        send({ _tag: "Memory", idle, peak: sampler.take(), maxRssBytes: process.resourceUsage().maxRSS * 1024 })
        return
      }
      case "Stop": {
        sampler.stop()
        void server.close().then(() => process.disconnect())
        return
      }
    }
  })
  send({ _tag: "Listening", port: server.port, idle })
}

const kind = process.argv[2]
if (kind !== "fullduplex" && kind !== "node") {
  throw new Error(`usage: echoServerProcess.ts fullduplex|node (got ${kind})`)
}
if (process.send === undefined) throw new Error("echoServerProcess.ts must be started with fork (an IPC channel)")
await main(kind)
