/**
 * The fullduplex servers of the accept-burst rows (`benchmarks/accept.ts`), with default options as a
 * user starts them (127.0.0.1, port 0, so `Tcp.DEFAULT_BACKLOG`, the default `onEvent`, idle timeout and
 * lingering close), but for `--max-connections=M` when given (the rows raise it above the burst, so that
 * every connection is served as the raw server serves it rather than refused beyond
 * `Tcp.DEFAULT_MAX_CONNECTIONS`):
 *
 * - `--mode=tcp`: `Tcp.serve({ host, port: 0 }, handler)` whose handler echoes (`conn.read`, then
 *   `conn.write` of the same chunk, until the client's EOF) and returns; the default close (lingering:
 *   FIN, then read to the client's EOF, already there) closes the connection.
 * - `--mode=echo`: `Echo.serve({ host, port: 0 })`, the default stream policy (a pump under a watchdog).
 *
 * The server polls `server.stats` (`watchBurst`) and reports once `--warmup=K` then `--connections=N`
 * connections have closed, however they ended (a connection refused beyond `maxConnections` counts as
 * closed): the CPU time of the burst, per connection; then its scope
 * closes (graceful shutdown) and the process exits.
 */
import { Effect, Option } from "effect"
import type { Duplex } from "fullduplex"
import * as Echo from "fullduplex/Echo"
import * as Tcp from "fullduplex/Tcp"
import { watchBurst } from "../lib/burst.js"
import { HOST, Meter, options, ready, required } from "../lib/common.js"
import { fullduplexUrl, portOf } from "../lib/fd.js"

const meter = new Meter("server")
const opts = options()
const mode = required(opts, "mode")
const connections = Number(required(opts, "connections"))
const warmup = Number(opts["warmup"] ?? 0)
const maxConnections = opts["max-connections"] === undefined ? undefined : Number(opts["max-connections"])

/** Echoes until the peer's EOF; the server's close strategy does the rest. */
const echo = (conn: Duplex.Duplex) =>
  Effect.gen(function* () {
    while (true) {
      const chunk = yield* conn.read
      if (Option.isNone(chunk)) return
      yield* conn.write(chunk.value)
    }
  })

const program = Effect.gen(function* () {
  const serveOptions = { host: HOST, port: 0, ...(maxConnections === undefined ? {} : { maxConnections }) }
  const server =
    mode === "tcp"
      ? yield* Tcp.serve(serveOptions, echo)
      : mode === "echo"
        ? yield* Echo.serve(serveOptions)
        : yield* Effect.die(new Error(`unknown --mode=${mode}`))
  ready(meter, portOf(server))
  // A refused connection (beyond `maxConnections`) is closed at once: it arrived and closed. `active` counts
  // from the accept to the `ConnectionClosed` event.
  const counts = () => {
    const s = Effect.runSync(server.stats)
    return { accepted: s.accepted + s.refused, closed: s.accepted - s.active + s.refused }
  }
  const figures = yield* Effect.promise(() => watchBurst(warmup, connections, counts))
  return {
    ...figures,
    backlog: Tcp.DEFAULT_BACKLOG,
    maxConnections: maxConnections ?? Tcp.DEFAULT_MAX_CONNECTIONS,
    stats: yield* server.stats
  }
})

const figures = await Effect.runPromise(Effect.scoped(program))
meter.finish({ fullduplex: fullduplexUrl, tcpModule: import.meta.resolve("fullduplex/Tcp"), ...figures })
