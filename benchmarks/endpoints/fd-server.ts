/**
 * fullduplex servers, with default options as a user starts them; one connection, then the server's
 * scope is closed (its graceful shutdown) and the process reports and exits.
 *
 * - `--mode=echo`: `Echo.serve({ host, port: 0, onEvent })`: the default stream policy.
 * - `--mode=proxy --target=PORT`: `Proxy.serve({ listen: { host, port: 0 }, target: { host, port }, onEvent })`.
 * - `--mode=mux --streams=K [--window=BYTES] [--max-window=BYTES]`: `Tcp.serve` + `Mux.server(conn, options)`; accepts K
 *   streams at once, reads each to EOF with `stream.read` (counting and checking the pattern), replies
 *   with the byte count, ends it; then `session.close`. Reports the session's `stats.peakBufferedBytes`
 *   and the bound it must stay under: streams × the largest window (`maxWindowBytes`, which defaults to the
 *   larger of `windowBytes` and `Mux.DEFAULT_MAX_WINDOW_BYTES`).
 *
 * `onEvent` is the one thing added to the defaults: it learns when the connection is closed (the
 * `ConnectionClosed` event, after the handler and the close strategy) and passes every event to
 * `Tcp.logEvent`, the default. A connection that does not end `completed` fails the run. CPU time is
 * counted from listening until the exit.
 */
import { Deferred, Effect, Option } from "effect"
import { type Duplex, Echo, Mux, Proxy, Tcp } from "fullduplex"
import { HOST, Meter, options, parseSize, PatternCheck, ready, required } from "../lib/common.js"
import { fullduplexUrl, portOf } from "../lib/fd.js"

const meter = new Meter("server")
const opts = options()
const mode = required(opts, "mode")

type Closed = Extract<Tcp.ServerEvent, { readonly _tag: "ConnectionClosed" }>

/** An `onEvent` that completes `closed` with the first connection's end, and logs as by default. */
const watch = (closed: Deferred.Deferred<Closed, Error>) => (event: Proxy.ProxyEvent) =>
  event._tag === "ConnectionClosed"
    ? Effect.andThen(Tcp.logEvent(event), Deferred.succeed(closed, event))
    : event._tag === "UpstreamConnectFailed"
      ? Deferred.fail(closed, new Error(`upstream connect failed: ${event.error.message}`))
      : Tcp.logEvent(event)

/** The first connection's end, which must be `completed`. */
const awaitClosed = (closed: Deferred.Deferred<Closed, Error>) =>
  Effect.map(Deferred.await(closed), (event) => {
    if (event.ending !== "completed") throw new Error(`the connection ended ${event.ending}`)
    return { bytesIn: event.stats.inbound.bytes, bytesOut: event.stats.outbound.bytes }
  })

/** Reads a stream to EOF, checking it, then replies with the byte count and ends it. */
const receive = (stream: Duplex.Duplex) =>
  Effect.gen(function* () {
    const check = new PatternCheck()
    while (true) {
      const chunk = yield* stream.read
      if (Option.isNone(chunk)) break
      check.accept(chunk.value)
    }
    check.verify("mux stream", check.bytes) // the content; the client checks the count it is sent
    yield* stream.write(Buffer.from(String(check.bytes)))
    yield* stream.end
    return check.bytes
  })

const program = Effect.gen(function* () {
  const closed = yield* Deferred.make<Closed, Error>()
  const onEvent = watch(closed)
  if (mode === "echo") {
    const server = yield* Echo.serve({ host: HOST, port: 0, onEvent })
    ready(meter, portOf(server))
    return { ...(yield* awaitClosed(closed)), echo: yield* server.echo }
  }
  if (mode === "proxy") {
    const target = Number(required(opts, "target"))
    const server = yield* Proxy.serve({
      listen: { host: HOST, port: 0 },
      target: { host: HOST, port: target },
      onEvent
    })
    ready(meter, portOf(server))
    return yield* awaitClosed(closed)
  }
  if (mode === "mux") {
    const streams = Number(required(opts, "streams"))
    const windowBytes = opts["window"] === undefined ? undefined : parseSize(opts["window"])
    const maxWindowBytes = opts["max-window"] === undefined ? undefined : parseSize(opts["max-window"])
    const sessionOptions = {
      ...(windowBytes === undefined ? {} : { windowBytes }),
      ...(maxWindowBytes === undefined ? {} : { maxWindowBytes })
    }
    const largestWindow = maxWindowBytes ?? Math.max(windowBytes ?? 0, Mux.DEFAULT_MAX_WINDOW_BYTES)
    const received = yield* Deferred.make<{ readonly perStream: ReadonlyArray<number>; readonly stats: Mux.Stats }>()
    const server = yield* Tcp.serve({ host: HOST, port: 0, onEvent }, (conn) =>
      Effect.scoped(
        Effect.gen(function* () {
          const session = yield* Mux.server(conn, sessionOptions)
          const perStream = yield* Effect.all(
            Array.from({ length: streams }, () => Effect.scoped(Effect.flatMap(session.accept, receive))),
            { concurrency: "unbounded" }
          )
          yield* Deferred.succeed(received, { perStream, stats: yield* session.stats })
          yield* session.close
        })
      )
    )
    ready(meter, portOf(server))
    const connection = yield* awaitClosed(closed)
    const { perStream, stats } = yield* Deferred.await(received)
    const bound = streams * largestWindow
    return {
      ...connection,
      streams: perStream.length,
      peakBufferedBytes: stats.peakBufferedBytes,
      peakBufferedBound: bound,
      peakBufferedWithinBound: stats.peakBufferedBytes <= bound
    }
  }
  throw new Error(`unknown --mode=${mode}`)
})

const figures = await Effect.runPromise(Effect.scoped(program))
meter.finish({ fullduplex: fullduplexUrl, ...figures })
