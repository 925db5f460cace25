/**
 * `npm run demo`: the duplex deadlock, caught, and its cure — in memory and over TCP on 127.0.0.1.
 *
 * A client that writes its whole request before reading, against a peer that echoes as it reads, fills
 * both directions' buffers: each side waits in `write`, neither reads, nothing moves. The testkit's
 * `assertDeadlockFree` turns that hang into a diagnostic. `Duplex.exchange` writes and reads at once, and
 * the same request goes through.
 */
import { Effect, Exit, Fiber, type Scope, Sink, Stream } from "effect"
import { Duplex } from "fullduplex"
import { assertDeadlockFree, firstDifference, randomBytes } from "fullduplex/testkit"
import * as net from "node:net"

const MiB = 1024 * 1024

/** The peer: echoes what it reads, then half-closes when the client has. */
const echo = (d: Duplex.Duplex) => Stream.run(d.readable, d.sink).pipe(Effect.andThen(d.end))

/** The bug: write everything, then read. */
const naiveClient = (d: Duplex.Duplex, request: Uint8Array) =>
  Effect.gen(function* () {
    yield* d.write(request)
    yield* d.end
    return yield* Stream.runCollect(d.readable)
  })

const collect = Sink.collect<Uint8Array>()

/** The cure: write and read concurrently. */
const exchangeClient = (d: Duplex.Duplex, request: Uint8Array) =>
  Effect.gen(function* () {
    const chunks = yield* Duplex.exchange(d, Stream.make(request), collect)
    return Buffer.concat(chunks)
  })

const show = (title: string, connect: Effect.Effect<Duplex.Duplex, never, Scope.Scope>, request: Uint8Array) =>
  Effect.gen(function* () {
    console.log(`\n${title}: a ${request.length / MiB} MiB request to an echo peer`)

    const start = Date.now()
    const naive = yield* Effect.exit(
      assertDeadlockFree(
        (watch) =>
          Effect.scoped(
            Effect.flatMap(connect, (d) => {
              watch(d)
              return naiveClient(d, request)
            })
          ),
        { stallTimeout: "1 second", label: "naive client" }
      )
    )
    if (Exit.isSuccess(naive)) {
      console.log("  naive client: finished (the buffers were large enough this time)")
    } else {
      console.log(`  naive client (write all, then read): stuck, caught after ${Date.now() - start} ms`)
      console.log(
        `    ${String(Exit.isFailure(naive) ? naive.cause.reasons[0] : "")
          .split("\n")
          .join("\n    ")}`
      )
    }

    const t0 = Date.now()
    const reply = yield* Effect.scoped(Effect.flatMap(connect, (d) => exchangeClient(d, request)))
    const ms = Math.max(1, Date.now() - t0)
    const exact = firstDifference(reply, request) === -1
    console.log(
      `  Duplex.exchange: ${reply.length / MiB} MiB echoed ${exact ? "byte-exact" : "WITH ERRORS"} in ${ms} ms`
    )
    if (!exact) return yield* Effect.die(new Error("echo mismatch"))
  })

/** An in-memory peer: a pair with 64 KiB each way, the far end echoing in a fiber of the caller's scope. */
const memoryPeer = Effect.gen(function* () {
  const [client, server] = yield* Duplex.pair({ capacity: 64 * 1024, label: "memory" })
  yield* Effect.forkScoped(Effect.ignore(echo(server)))
  return client
})

/** A TCP echo server on 127.0.0.1 (ephemeral port), each connection a duplex echoed in its own fiber. */
const tcpEchoServer = Effect.gen(function* () {
  const runFork = Effect.runForkWith(yield* Effect.context<never>())
  const connections = new Set<Fiber.Fiber<unknown, unknown>>()
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    const fiber = runFork(
      Effect.scoped(Effect.flatMap(Duplex.fromNodeDuplex(socket, { label: "server" }), (d) => Effect.ignore(echo(d))))
    )
    connections.add(fiber)
    fiber.addObserver(() => connections.delete(fiber))
  })
  yield* Effect.addFinalizer(() =>
    Effect.andThen(
      Fiber.interruptAll(connections),
      Effect.callback<void>((resume) => void server.close(() => resume(Effect.void)))
    )
  )
  const port = yield* Effect.callback<number>((resume) => {
    server.listen(0, "127.0.0.1", () => resume(Effect.succeed((server.address() as net.AddressInfo).port)))
  })
  const connect = Effect.gen(function* () {
    const socket = yield* Effect.callback<net.Socket>((resume) => {
      const s = net.connect({ host: "127.0.0.1", port, allowHalfOpen: true })
      s.on("error", () => {}).once("connect", () => resume(Effect.succeed(s)))
    })
    return yield* Duplex.fromNodeDuplex(socket, { label: `client → 127.0.0.1:${port}` })
  })
  return connect
})

const main = Effect.scoped(
  Effect.gen(function* () {
    console.log("fullduplex demo: the duplex deadlock and its cure")
    yield* show("In memory, 64 KiB buffers each way", memoryPeer.pipe(Effect.orDie), randomBytes(MiB, 1))
    const connect = yield* tcpEchoServer
    // The kernel's socket buffers on loopback hold several MiB each way; 64 MiB is more than all of them.
    yield* show("TCP on 127.0.0.1", connect.pipe(Effect.orDie), randomBytes(64 * MiB, 2))
  })
)

Effect.runPromise(main).then(
  () => console.log("\ndone"),
  (error) => {
    console.error(error)
    process.exitCode = 1
  }
)
