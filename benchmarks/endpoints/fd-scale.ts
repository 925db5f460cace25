/**
 * The fullduplex servers of the scale rows (`benchmarks/scale.ts`), started as a user starts them
 * (127.0.0.1, port 0, every default but `maxConnections`, raised above the rows' counts). It imports
 * `effect/Effect` and the package's own modules, not the `effect` index (which loads every module of
 * Effect, about 15 MiB more, whoever imports it), unless `--effect-index` says to import it first.
 *
 * `--mode`:
 * - `tcp`: `Tcp.serve(options, handler)`, a trivial handler: it reads one chunk, writes it back, then reads
 *   to the client's EOF.
 * - `echo-stream`, `echo-store`, `echo-spill`: `Echo.serve({ …, policy })` with `Echo.stream()`,
 *   `Echo.storeAndForward({ maxRequestBytes: 1 MiB })`,
 *   `Echo.spill({ memoryBytes: 4 MiB })` (the examples of their docs). (A store-and-forward server answers at the client's FIN, so
 *   its idle clients get no answer and do not wait for one.)
 * - `shutdown`: `Shutdown.serve({ …, handle: Effect.succeed })`, whose clients send nothing and wait for its
 *   preface.
 * - `proxy`: `Proxy.serve({ listen, target })` to a raw `net` echo server in a child of its own.
 *
 * With `--counts=1000,10000` it measures idle connections (`lib/scale.ts`: it forks their client and
 * reports its memory at each count); with `--connections=K` it serves until K connections have closed (the
 * load rows' client is another process, started by the runner) and reports its CPU time and peak RSS.
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type * as Duplex from "fullduplex/Duplex"
import type * as Tcp from "fullduplex/Tcp"
import { HOST, Meter, options, ready, required } from "../lib/common.js"
import { fullduplexUrl, portOf } from "../lib/fdServer.js"
import { measureIdle, type ScaleChild, startUpstream } from "../lib/scale.js"

const meter = new Meter("server")
const opts = options()
const mode = required(opts, "mode")
const counts = opts["counts"] === undefined ? [] : opts["counts"].split(",").map(Number)
const connections = opts["connections"] === undefined ? undefined : Number(opts["connections"])
if (opts["effect-index"] === "true") await import("effect")

const maxConnections = Math.max(0, ...counts, connections ?? 0) + 16
const listen = { host: HOST, port: 0, maxConnections }

/** Reads one chunk and writes it back, then reads to EOF: the least a handler does. */
const trivial = (conn: Duplex.Duplex) =>
  Effect.gen(function* () {
    const chunk = yield* conn.read
    if (chunk._tag === "Some") yield* conn.write(chunk.value)
    while ((yield* conn.read)._tag === "Some") {}
  })

// Only the mode's own module is loaded, as an application that uses only it loads it: the base RSS is
// that application's (`Shutdown` loads `Framing`, which loads effect's Stream stack; `Echo` does not).
const start = async (upstreamPort: number | undefined): Promise<Effect.Effect<Tcp.Server, unknown, Scope.Scope>> => {
  switch (mode) {
    case "tcp":
      return (await import("fullduplex/Tcp")).serve(listen, trivial)
    case "echo-stream":
    case "echo-store":
    case "echo-spill": {
      const Echo = await import("fullduplex/Echo")
      const policy =
        mode === "echo-stream"
          ? Echo.stream()
          : mode === "echo-store"
            ? Echo.storeAndForward({ maxRequestBytes: 1024 * 1024 })
            : Echo.spill({ memoryBytes: 4 * 1024 * 1024 })
      return Echo.serve({ ...listen, policy })
    }
    case "shutdown":
      return (await import("fullduplex/Shutdown")).serve({ ...listen, handle: Effect.succeed })
    case "proxy":
      return (await import("fullduplex/Proxy")).serve({ listen, target: { host: HOST, port: upstreamPort! } })
    default:
      throw new Error(`unknown --mode=${mode}`)
  }
}

/** The send of each idle client: a Shutdown server speaks first; a store-and-forward one answers at FIN. */
const send = mode === "shutdown" ? 0 : 16
const awaitAnswer = mode !== "echo-store"

const program = Effect.gen(function* () {
  let upstream: ScaleChild | undefined
  let upstreamPort: number | undefined
  if (mode === "proxy") {
    const started = yield* Effect.promise(() => startUpstream())
    upstream = started.child
    upstreamPort = started.port
  }
  const server = yield* yield* Effect.promise(() => start(upstreamPort))
  ready(meter, portOf(server))
  const stats = () => Effect.runSync(server.stats)
  if (connections !== undefined) {
    // The load rows: serve until `connections` have closed.
    while (true) {
      const s = stats()
      if (s.accepted - s.active >= connections) break
      yield* Effect.sleep(20)
    }
    return { connections, stats: stats() }
  }
  const idle = yield* Effect.promise(() =>
    measureIdle({ port: portOf(server), counts, send, awaitAnswer, open: () => stats().active })
  )
  if (upstream !== undefined) yield* Effect.promise(() => upstream.exit())
  return { idle, stats: stats() }
})

const figures = await Effect.runPromise(Effect.scoped(program))
meter.finish({ fullduplex: fullduplexUrl, mode, ...figures })
