/**
 * Where one short connection's server CPU goes: a server in a process of its own, in one of these modes,
 * serving `N` connections from `client.mjs` (batches of 100, each writes 16 bytes, reads the echo, ends),
 * then printing its CPU time per connection (user + system, all threads) and exiting. Run by `run.sh`.
 *
 * - `net`: raw `net`, echo on 'data', `end` at the client's.
 * - `fiber`: raw `net` as above, with an Effect fiber per connection that waits for its close.
 * - `adapter`: `Duplex.fromNodeDuplex` in a scope: one read, its write, the read of EOF, `end`.
 * - `floor`: the adapter, an Effect read → write loop to EOF, then `Close.lingering`: what `Tcp.serve` runs
 *   per connection, without `Tcp.serve`.
 * - `tcp`: `Tcp.serve` with that loop as its handler (defaults: lingering close, time limits, events).
 * - `echo`: `Echo.serve` (the stream policy).
 *
 * A probe, not a benchmark row: it prints one figure of one process; `npm run bench -- --accept` is the
 * comparison. It loads the built package (`npm run build` first).
 */
import { Effect, Option } from "effect"
import * as net from "node:net"
import { Close, Duplex, Echo, Tcp } from "../../../dist/index.js"

const mode = process.argv[2]
const total = Number(process.argv[3] ?? 5000)
let closed = 0
let start = process.cpuUsage()
const done = () => {
  if (++closed < total) return
  const u = process.cpuUsage(start)
  const per = (us) => (us / total).toFixed(1)
  console.log(`${mode} ${per(u.user + u.system)} µs/conn (user ${per(u.user)}, system ${per(u.system)})`)
  process.exit(0)
}
const listening = (port) => {
  console.log("PORT", port)
  start = process.cpuUsage()
}

const echoLoop = (conn) =>
  Effect.gen(function* () {
    while (true) {
      const chunk = yield* conn.read
      if (Option.isNone(chunk)) return
      yield* conn.write(chunk.value)
    }
  })

const rawEcho = (socket) => {
  socket.on("data", (d) => socket.write(d))
  socket.on("end", () => socket.end())
  socket.on("error", () => {})
}

const perSocket = {
  net: (socket) => {
    rawEcho(socket)
    socket.on("close", done)
  },
  fiber: (socket) => {
    const fiber = Effect.runFork(
      Effect.callback((resume) => {
        rawEcho(socket)
        socket.on("close", () => resume(Effect.void))
      })
    )
    fiber.addObserver(done)
  },
  adapter: (socket) => {
    const fiber = Effect.runFork(
      Effect.scoped(
        Effect.gen(function* () {
          const conn = yield* Duplex.fromNodeDuplex(socket, {})
          const chunk = yield* conn.read
          if (Option.isSome(chunk)) yield* conn.write(chunk.value)
          yield* conn.read
          yield* conn.end
        })
      )
    )
    fiber.addObserver(done)
  },
  floor: (socket) => {
    const fiber = Effect.runFork(
      Effect.scoped(
        Effect.gen(function* () {
          const conn = yield* Duplex.fromNodeDuplex(socket, {})
          yield* echoLoop(conn)
          yield* Close.lingering(conn)
        })
      )
    )
    fiber.addObserver(done)
  }
}

if (mode in perSocket) {
  const server = net.createServer({ allowHalfOpen: true, noDelay: true }, perSocket[mode])
  server.listen({ port: 0, host: "127.0.0.1", backlog: 4096 }, () => listening(server.address().port))
} else if (mode === "tcp" || mode === "echo") {
  const onEvent = (event) => (event._tag === "ConnectionClosed" && done(), Effect.void)
  Effect.runFork(
    Effect.scoped(
      Effect.gen(function* () {
        const server =
          mode === "tcp" ? yield* Tcp.serve({ port: 0, onEvent }, echoLoop) : yield* Echo.serve({ port: 0, onEvent })
        listening(server.address.port)
        yield* Effect.never
      })
    )
  )
} else {
  console.error(`unknown mode ${mode}: net, fiber, adapter, floor, tcp, echo`)
  process.exit(2)
}
