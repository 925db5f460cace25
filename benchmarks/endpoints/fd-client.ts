/**
 * fullduplex TCP clients, written with the library's public API as a user writes them, matched to
 * `net-client.ts` (same payload, same 64 KiB writes of one reused chunk, same timing points).
 *
 * - `--mode=oneway-write --bytes=N`: `Tcp.connect`, `for (…) yield* conn.write(chunk)`, `conn.end`, then
 *   the discard server's byte-count reply read to EOF.
 * - `--mode=oneway-sink --bytes=N`: the same with `Stream.run(Stream.fromIterable(chunks), conn.sink)`.
 * - `--mode=echo --bytes=N`: `Tcp.connect` + `Duplex.exchange(conn, Stream.fromIterable(chunks), sink)`,
 *   the sink counting and checking the echo.
 * - `--mode=pingpong --roundtrips=R --warmup=W`: `yield* conn.write(ping); yield* conn.read` per round trip.
 * - `--mode=mux --bytes=N --streams=K [--window=BYTES]`: `Tcp.connect` + `Mux.client(conn, options)`; K
 *   streams opened at once, each written with `stream.write` (N / K bytes), ended, and its byte-count
 *   reply read to EOF; then `session.close`. Default options, or `windowBytes` with `--window`.
 */
import { Effect, Option, type Scope, Stream } from "effect"
import { Duplex, Mux, Tcp } from "fullduplex"
import {
  HOST,
  latencies,
  Meter,
  mibPerSecond,
  options,
  parseSize,
  patternChunk,
  payloadBytes,
  required,
  verifyCount,
  WRITE_BYTES
} from "../lib/common.js"
import { checkSink, chunksOf, fullduplexUrl, readText } from "../lib/fd.js"

const meter = new Meter("client")
const opts = options()
const mode = required(opts, "mode")
const port = Number(required(opts, "port"))
const chunk = patternChunk()

const run = <A>(program: Effect.Effect<A, unknown, Scope.Scope>): Promise<A> =>
  Effect.runPromise(Effect.scoped(program))

if (mode === "oneway-write" || mode === "oneway-sink" || mode === "echo") {
  const bytes = payloadBytes(opts)
  const chunks = chunksOf(chunk, bytes)
  meter.start()
  // Timed until the echo's EOF or the reply's, as the raw client; closing the connection (the scope) is not.
  const ms = await run(
    Effect.gen(function* () {
      const conn = yield* Tcp.connect({ host: HOST, port })
      if (mode === "echo") {
        const check = yield* Duplex.exchange(conn, Stream.fromIterable(chunks), checkSink)
        const ms = meter.elapsedMs()
        check.verify("echo", bytes)
        return ms
      }
      if (mode === "oneway-write") for (const c of chunks) yield* conn.write(c)
      else yield* Stream.run(Stream.fromIterable(chunks), conn.sink)
      yield* conn.end
      const reply = yield* readText(conn)
      const ms = meter.elapsedMs()
      verifyCount("bytes the discard server counted", bytes, Number(reply.trim()))
      return ms
    })
  )
  meter.finish({ fullduplex: fullduplexUrl, bytes, ms, mibps: mibPerSecond(bytes, ms) })
} else if (mode === "pingpong") {
  const roundTrips = Number(required(opts, "roundtrips"))
  const warmup = Number(opts["warmup"] ?? 1000)
  const ping = Buffer.from([0x2a])
  const times = new Float64Array(roundTrips)
  const timedMs = await run(
    Effect.gen(function* () {
      const conn = yield* Tcp.connect({ host: HOST, port })
      for (let i = -warmup; i < roundTrips; i++) {
        if (i === 0) meter.start()
        const sent = performance.now()
        yield* conn.write(ping)
        const pong = yield* conn.read
        const now = performance.now()
        if (Option.isNone(pong) || pong.value.length !== 1 || pong.value[0] !== 0x2a) {
          throw new Error(`round trip ${i}: bad pong`)
        }
        if (i >= 0) times[i] = now - sent
      }
      const ms = meter.elapsedMs()
      yield* conn.end
      if (Option.isSome(yield* conn.read)) throw new Error("bytes after the last pong")
      return ms
    })
  )
  times.sort()
  meter.finish({
    fullduplex: fullduplexUrl,
    roundTrips,
    ms: timedMs,
    rtps: Math.round(roundTrips / (timedMs / 1000)),
    ...latencies(times)
  })
} else if (mode === "mux") {
  const bytes = payloadBytes(opts)
  const streams = Number(required(opts, "streams"))
  const perStream = bytes / streams
  if (!Number.isInteger(perStream) || perStream % WRITE_BYTES !== 0) {
    throw new Error(`--bytes / --streams must be a multiple of 64 KiB, got ${perStream}`)
  }
  const sessionOptions = opts["window"] === undefined ? {} : { windowBytes: parseSize(opts["window"]) }
  const writes = perStream / WRITE_BYTES
  const send = (session: Mux.Session) =>
    Effect.scoped(
      Effect.gen(function* () {
        const stream = yield* session.open
        for (let i = 0; i < writes; i++) yield* stream.write(chunk)
        yield* stream.end
        return Number((yield* readText(stream)).trim())
      })
    )
  meter.start()
  // Timed until every stream's reply has ended, as the libp2p-yamux and http2 clients; `session.close` is not.
  const { counts, ms } = await run(
    Effect.gen(function* () {
      const conn = yield* Tcp.connect({ host: HOST, port })
      const session = yield* Mux.client(conn, sessionOptions)
      const counts = yield* Effect.all(
        Array.from({ length: streams }, () => send(session)),
        { concurrency: "unbounded" }
      )
      const ms = meter.elapsedMs()
      yield* session.close
      return { counts, ms }
    })
  )
  counts.forEach((n, i) => verifyCount(`bytes the server counted on stream ${i}`, perStream, n))
  meter.finish({ fullduplex: fullduplexUrl, bytes, streams, ms, mibps: mibPerSecond(bytes, ms) })
} else {
  throw new Error(`unknown --mode=${mode}`)
}
