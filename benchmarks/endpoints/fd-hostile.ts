/**
 * fullduplex facing a hostile peer, for the bounds rows (`benchmarks/bounds.ts`): the library with its
 * default options, as a user runs it under plain `node`, measuring what the peer costs it. One connection
 * (or one pair), then the process reports and exits.
 *
 * - `--mode=framing-tcp --bytes=N`: `Tcp.serve` (defaults, 127.0.0.1, port 0) whose handler runs
 *   `Framing.make(conn)`, reads one frame, checks that it is a data frame of N bytes of the pattern
 *   (byte i is `i & 0xff`), replies with one frame carrying the length as text and ends. Reports the peak
 *   RSS growth from the connection's arrival to its `ConnectionClosed` event.
 * - `--mode=framing-pair [--bytes=N]`: `Duplex.pair()` (defaults), `Framing.make` on one end; a fiber
 *   writes one data frame of N bytes (default `Framing.DEFAULT_MAX_FRAME_BYTES`) into the other end, one
 *   byte per `write`, while another reads it and checks it. Reports the peak RSS growth over the RSS
 *   before the first write.
 * - `--mode=mux-churn [--churn=N]`: `Tcp.serve` + `Mux.server(conn)` (defaults, or `maxStreamChurn: N`);
 *   the handler accepts streams in a loop (each read to its end or failure in a fiber of its own) and
 *   awaits `session.closed`. Reports the peak RSS growth over the session, how the session ended, and
 *   `stats.framesIn`.
 * - `--mode=mux-error-close`: a raw `net.createServer({ allowHalfOpen: true })`, its first socket as
 *   `Duplex.fromNodeDuplex(socket)` inside `Effect.scoped`, then `Mux.server(duplex)` (defaults). Reports
 *   the milliseconds from the session's failure (a tap on `session.closed`) to the socket's `'close'`
 *   event, with the session's scope still open: the session's own error close, not the scope's, destroys
 *   the socket.
 */
import { Cause, Deferred, Duration, Effect, Exit, Fiber, Option, Scope } from "effect"
import * as net from "node:net"
import { Duplex, Framing, Mux, Tcp } from "fullduplex"
import { formatBytes, HOST, Meter, options, parseSize, ready, required } from "../lib/common.js"
import { fullduplexUrl, portOf } from "../lib/fd.js"
import { PeakRss } from "../lib/peak.js"
import { framingHeader } from "../lib/wire.js"

const meter = new Meter("server")
const opts = options()
const mode = required(opts, "mode")

type Closed = Extract<Tcp.ServerEvent, { readonly _tag: "ConnectionClosed" }>

/** An `onEvent` that completes `closed` with the first connection's end and logs nothing (the run reports it). */
const watchClosed = (closed: Deferred.Deferred<Closed>) => (event: Tcp.ServerEvent) =>
  event._tag === "ConnectionClosed" ? Deferred.succeed(closed, event) : Effect.void

const describeCause = (cause: Cause.Cause<unknown>): string => {
  const error = Cause.squash(cause)
  return error instanceof Error ? error.message : String(error)
}

/** How a session ended: `"clean"`, or its error's reason tag and message. */
const describeEnd = (exit: Exit.Exit<void, unknown>): { readonly ended: string; readonly reason?: string } => {
  if (Exit.isSuccess(exit)) return { ended: "clean" }
  const error = Cause.squash(exit.cause)
  const reason =
    typeof error === "object" && error !== null && "reason" in error
      ? String((error.reason as { readonly _tag?: unknown })._tag)
      : undefined
  return { ended: describeCause(exit.cause), ...(reason === undefined ? {} : { reason }) }
}

/** Throws unless `payload` is `bytes` bytes of the pattern. */
const checkPattern = (what: string, payload: Uint8Array, bytes: number): void => {
  if (payload.length !== bytes) throw new Error(`${what}: a frame of ${payload.length} bytes, expected ${bytes}`)
  for (let i = 0; i < payload.length; i++) {
    if (payload[i] !== (i & 0xff)) throw new Error(`${what}: byte ${i} of the frame is not the byte sent`)
  }
}

/** The attacker writes Framing's header by hand (benchmarks/lib/wire.ts): it must be the library's. */
const checkWireFormat = (): void => {
  const expected = Framing.encode(Framing.data(Uint8Array.of(7)))
  const ours = [...framingHeader(1), 7]
  if (expected.length !== ours.length || ours.some((b, i) => expected[i] !== b)) {
    throw new Error(`Framing's wire format changed: encode gives ${[...expected]}, the attacker writes ${ours}`)
  }
}

const framingTcp = Effect.gen(function* () {
  checkWireFormat()
  const bytes = parseSize(required(opts, "bytes"))
  const closed = yield* Deferred.make<Closed>()
  let peak: PeakRss | undefined
  let received: number | undefined
  const server = yield* Tcp.serve({ host: HOST, port: 0, onEvent: watchClosed(closed) }, (conn) =>
    Effect.gen(function* () {
      peak = new PeakRss() // the connection is here; nothing of it has been read
      const framed = yield* Framing.make(conn)
      const frame = yield* framed.read
      if (Option.isNone(frame) || frame.value._tag !== "Data") {
        return yield* Effect.fail(new Error(`expected a data frame, got ${Option.isNone(frame) ? "EOF" : "control"}`))
      }
      checkPattern("framing-tcp", frame.value.payload, bytes)
      received = frame.value.payload.length
      yield* framed.send(Framing.data(Buffer.from(String(received))))
      yield* framed.end
    })
  )
  ready(meter, portOf(server))
  const event = yield* Deferred.await(closed)
  const memory = peak!.stop()
  if (event.ending !== "completed") {
    throw new Error(`the connection ended ${event.ending}${event.cause ? `: ${describeCause(event.cause)}` : ""}`)
  }
  return { frameBytes: bytes, received, ...memory, bytesIn: event.stats.inbound.bytes }
})

const framingPair = Effect.scoped(
  Effect.gen(function* () {
    const bytes = opts["bytes"] === undefined ? Framing.DEFAULT_MAX_FRAME_BYTES : parseSize(opts["bytes"])
    const [a, b] = yield* Duplex.pair()
    const framed = yield* Framing.make(b)
    const header = framingHeader(bytes)
    checkWireFormat()
    meter.start()
    const peak = new PeakRss()
    const writer = Effect.gen(function* () {
      for (let i = 0; i < header.length; i++) yield* a.write(Uint8Array.of(header[i]!))
      for (let i = 0; i < bytes; i++) yield* a.write(Uint8Array.of(i & 0xff))
      yield* a.end
    })
    const reader = Effect.gen(function* () {
      const frame = yield* framed.read
      if (Option.isNone(frame) || frame.value._tag !== "Data") return yield* Effect.fail(new Error("no data frame"))
      peak.sample() // the whole frame is held here
      checkPattern("framing-pair", frame.value.payload, bytes)
      return frame.value.payload.length
    })
    const [, received] = yield* Effect.all([writer, reader], { concurrency: 2 })
    const memory = peak.stop()
    return { frameBytes: bytes, received, ...memory, ms: meter.elapsedMs() }
  })
)

/** Reads a stream to its end or failure. */
const drain = (stream: Duplex.Duplex): Effect.Effect<void> =>
  Effect.ignore(
    Effect.gen(function* () {
      while (Option.isSome(yield* stream.read)) {
        /* discard */
      }
    })
  )

const muxChurn = Effect.gen(function* () {
  const churn = opts["churn"] === undefined ? undefined : Number(opts["churn"])
  const sessionOptions = churn === undefined ? {} : { maxStreamChurn: churn }
  const closed = yield* Deferred.make<Closed>()
  let peak: PeakRss | undefined
  let outcome: Record<string, unknown> | undefined
  const server = yield* Tcp.serve({ host: HOST, port: 0, onEvent: watchClosed(closed) }, (conn) =>
    Effect.scoped(
      Effect.gen(function* () {
        peak = new PeakRss()
        const t0 = performance.now()
        const session = yield* Mux.server(conn, sessionOptions)
        let accepted = 0
        // Each accepted stream in a scope of its own, closed once the stream is read to its end.
        const acceptLoop = Effect.gen(function* () {
          while (true) {
            const scope = yield* Scope.make()
            const stream = yield* Effect.exit(Scope.provide(scope)(session.accept))
            if (Exit.isFailure(stream)) return yield* Scope.close(scope, Exit.void)
            accepted++
            yield* Effect.forkChild(Effect.ensuring(drain(stream.value), Scope.close(scope, Exit.void)), {
              startImmediately: true
            })
          }
        })
        const acceptor = yield* Effect.forkChild(acceptLoop, { startImmediately: true })
        const ended = yield* Effect.exit(session.closed)
        const sessionMs = performance.now() - t0
        const stats = yield* session.stats
        yield* Fiber.interrupt(acceptor)
        outcome = {
          ...describeEnd(ended),
          sessionMs: Math.round(sessionMs),
          framesIn: stats.framesIn,
          framesOut: stats.framesOut,
          accepted,
          streamsLeft: stats.streams
        }
      })
    )
  )
  ready(meter, portOf(server))
  const event = yield* Deferred.await(closed)
  const memory = peak!.stop()
  if (outcome === undefined) {
    throw new Error(
      `the handler did not finish: ${event.ending}${event.cause ? `, ${describeCause(event.cause)}` : ""}`
    )
  }
  return {
    maxStreamChurn: churn ?? Mux.DEFAULT_MAX_STREAM_CHURN,
    ...outcome,
    ending: event.ending,
    bytesIn: event.stats.inbound.bytes,
    ...memory
  }
})

/** The socket's `'close'`, or `None` after `ms`. */
const socketClose = (closedAt: Promise<number>, ms: number): Effect.Effect<Option.Option<number>> =>
  Effect.timeoutOption(
    Effect.promise(() => closedAt),
    ms
  )

const muxErrorClose = Effect.gen(function* () {
  const listener = net.createServer({ allowHalfOpen: true })
  const firstSocket = new Promise<net.Socket>((resolve) => listener.once("connection", resolve))
  yield* Effect.callback<void>((resume) => {
    listener.listen(0, HOST, () => resume(Effect.void))
  })
  const address = listener.address()
  if (address === null || typeof address === "string") throw new Error("not a TCP address")
  ready(meter, address.port)
  const socket = yield* Effect.promise(() => firstSocket)
  listener.close() // one connection
  const closedAt = new Promise<number>((resolve) => socket.once("close", () => resolve(performance.now())))
  const deadlineMs = Math.round(Duration.toMillis(Mux.DEFAULT_ERROR_CLOSE_TIMEOUT))
  return yield* Effect.scoped(
    Effect.gen(function* () {
      const duplex = yield* Duplex.fromNodeDuplex(socket)
      const session = yield* Mux.server(duplex)
      let failedAt = 0
      const t0 = performance.now()
      const ended = yield* Effect.exit(
        Effect.tapError(session.closed, () => Effect.sync(() => (failedAt = performance.now())))
      )
      if (Exit.isSuccess(ended)) throw new Error("the session ended cleanly: the peer was expected to break it")
      const stats = yield* session.stats
      // The scope stays open until the socket closes (or long after the deadline): the session's error
      // close must destroy it, not the scope's finalizer.
      const closedTime = yield* socketClose(closedAt, 10 * deadlineMs + 5000)
      if (Option.isNone(closedTime))
        throw new Error(`the socket was still open ${10 * deadlineMs + 5000} ms after the failure`)
      return {
        ...describeEnd(ended),
        failedAfterMs: Math.round(failedAt - t0),
        destroyMs: Math.round((closedTime.value - failedAt) * 10) / 10,
        deadlineMs,
        framesIn: stats.framesIn,
        framesOut: stats.framesOut,
        controlQueued: stats.controlQueued,
        bytesIn: formatBytes(socket.bytesRead),
        bytesOut: formatBytes(socket.bytesWritten)
      }
    })
  )
})

const programs: Record<string, Effect.Effect<Record<string, unknown>, unknown>> = {
  "framing-tcp": Effect.scoped(framingTcp),
  "framing-pair": framingPair,
  "mux-churn": Effect.scoped(muxChurn),
  "mux-error-close": muxErrorClose
}
const program = programs[mode]
if (program === undefined) throw new Error(`unknown --mode=${mode}`)
const figures = await Effect.runPromise(program)
meter.finish({ fullduplex: fullduplexUrl, mode, ...figures })
