/**
 * The fullduplex Mux server of the idle-mux scale rows (`benchmarks/scale.ts`): `Tcp.serve` (127.0.0.1,
 * port 0, every default but `maxConnections`, raised above the rows' counts) whose handler runs
 * `Mux.server(conn, options)` and echoes every stream it accepts, each in a fiber of its own
 * (`Stream.run(stream.readable, stream.sink)`, the example of `Mux.server`'s docs), until the session ends.
 * It imports `effect/*` and `fullduplex/*` modules, not the `effect` index (which loads every module of
 * Effect, about 15 MiB more).
 *
 * `--mode`:
 * - `sessions`: the unit is a session: N connections, each a session of one stream (it wrote 16 bytes and
 *   got them back, then stays open and quiet). Every session option is its default.
 * - `streams`: the unit is a stream: one connection, one session, N streams as above. Every session
 *   option is its default but `maxConcurrentStreams`, raised above the largest count (256 by default; a
 *   stream beyond it is refused). `maxBufferedBytes` follows it (its default is `maxConcurrentStreams ×
 *   windowBytes`, a bound and not an allocation).
 *
 * `--counts=1000,10000`: the counts walked (`lib/scale.ts`, with its client `scale-mux-client.js`, plain
 * `node` and `@chainsafe/libp2p-yamux`); at each the server's count is its open connections (`sessions`)
 * or the sum of its sessions' `stats.streams` (`streams`).
 */
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import type * as Duplex from "fullduplex/Duplex"
import * as Mux from "fullduplex/Mux"
import * as Tcp from "fullduplex/Tcp"
import { HOST, Meter, options, ready, required } from "../lib/common.js"
import { fullduplexUrl, portOf } from "../lib/fdServer.js"
import { measureIdle } from "../lib/scale.js"

const meter = new Meter("server")
const opts = options()
const mode = required(opts, "mode")
if (mode !== "sessions" && mode !== "streams") throw new Error(`unknown --mode=${mode}`)
const counts = required(opts, "counts").split(",").map(Number)
const largest = Math.max(0, ...counts)

const listen = { host: HOST, port: 0, maxConnections: largest + 16 }
const sessionOptions: Omit<Mux.SessionOptions, "role"> =
  mode === "streams" ? { maxConcurrentStreams: largest + 16 } : {}

/** The sessions open now, for their stream counts. */
const sessions = new Set<Mux.Session>()

/** Echoes every stream the peer opens, each in a fiber of the handler's scope, until the session ends. */
const handler = (conn: Duplex.Duplex) =>
  Effect.scoped(
    Effect.gen(function* () {
      const session = yield* Mux.server(conn, sessionOptions)
      sessions.add(session)
      yield* Effect.addFinalizer(() => Effect.sync(() => sessions.delete(session)))
      yield* session.accept.pipe(
        Effect.flatMap((stream) => Effect.forkScoped(Stream.run(stream.readable, stream.sink))),
        Effect.forever,
        Effect.catchReason("DuplexError", "SessionEnded", () => Effect.void)
      )
    })
  )

const program = Effect.gen(function* () {
  const server = yield* Tcp.serve(listen, handler)
  const port = portOf(server)
  ready(meter, port)
  const connections = () => Effect.runSync(server.stats).active
  const streams = () => {
    let n = 0
    for (const session of sessions) n += Effect.runSync(session.stats).streams
    return n
  }
  /** At each point, the count that is not the unit's (streams for `sessions`, connections for `streams`). */
  const other: Array<number> = []
  const idle = yield* Effect.promise(() =>
    measureIdle({
      port,
      counts,
      send: 16,
      client: "scale-mux-client.js",
      shape: mode,
      open: () => {
        other.push(mode === "sessions" ? streams() : connections())
        return mode === "sessions" ? connections() : streams()
      }
    })
  )
  return { idle, [mode === "sessions" ? "streamsAt" : "connectionsAt"]: other, stats: Effect.runSync(server.stats) }
})

const figures = await Effect.runPromise(Effect.scoped(program))
meter.finish({
  fullduplex: fullduplexUrl,
  mode,
  unit: mode === "sessions" ? "session" : "stream",
  sessionOptions,
  ...figures
})
