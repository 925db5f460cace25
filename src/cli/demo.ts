/**
 * `fullduplex demo` (`npm run demo` runs it from the sources): the duplex deadlock, caught, and its cure —
 * in memory, over TCP on 127.0.0.1 and through a child process — and the safe echo server's answers to the same naive client.
 *
 * A client that writes its whole request before reading, against a peer that echoes as it reads, fills
 * both directions' buffers: each side waits in `write`, neither reads, nothing moves. The testkit's
 * `assertDeadlockFree` turns that hang into a diagnostic. `Duplex.exchange` writes and reads at once, and
 * the same request goes through.
 *
 * Then two ways a conversation's end goes wrong over TCP, and their cures: a server shutting down while
 * requests flow (symmetric close: answers lost, with no way to tell; `Shutdown`: each request answered or
 * safely refused), and a proxy between a client that half-closes and a server that answers after it (a
 * proxy that closes at the first FIN loses the answer; `Proxy` passes the FIN on).
 *
 * The report goes to stdout. It takes about ten seconds.
 *
 * @internal
 */
import { Cause, Clock, Console, Deferred, Effect, Exit, Fiber, Option, type Scope, Sink, Stream } from "effect"
import { Command } from "effect/cli"
import { Duplex, Echo, Framing, Proxy, Shutdown, Subprocess, Tcp } from "fullduplex"
import * as net from "node:net"
// The testkit's parts the demo uses, not its entry: that one loads fast-check, which the tool does not need.
import { assertDeadlockFree } from "../testkit/assertDeadlockFree.js"
import { firstDifference, randomBytes } from "../testkit/random.js"

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
    yield* Console.log(`\n${title}: a ${request.length / MiB} MiB request to an echo peer`)

    const start = yield* Clock.currentTimeMillis
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
      yield* Console.log("  naive client: finished (the buffers were large enough this time)")
    } else {
      const caughtAfter = (yield* Clock.currentTimeMillis) - start
      yield* Console.log(`  naive client (write all, then read): stuck, caught after ${caughtAfter} ms`)
      yield* Console.log(
        `    ${String(Exit.isFailure(naive) ? naive.cause.reasons[0] : "")
          .split("\n")
          .join("\n    ")}`
      )
    }

    const t0 = yield* Clock.currentTimeMillis
    const reply = yield* Effect.scoped(Effect.flatMap(connect, (d) => exchangeClient(d, request)))
    const ms = Math.max(1, (yield* Clock.currentTimeMillis) - t0)
    const exact = firstDifference(reply, request) === -1
    yield* Console.log(
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

/**
 * The naive client against `Echo.serve` on 127.0.0.1: the streaming policy cuts it with a diagnosis,
 * the spill policy serves it in full with bounded memory.
 */
const echoServers = (request: Uint8Array) =>
  Effect.gen(function* () {
    yield* Console.log(
      `\nEcho.serve on 127.0.0.1: the same naive client, ${request.length / MiB} MiB, against two policies`
    )
    const cut: Array<string> = []
    const streaming = yield* Echo.serve({
      port: 0,
      policy: Echo.stream({ stallTimeout: "1 second" }),
      onEvent: (event) =>
        Effect.sync(() => {
          if (event._tag === "ConnectionClosed" && event.cause !== undefined) {
            cut.push(String(Cause.squash(event.cause)))
          }
        })
    })
    const start = yield* Clock.currentTimeMillis
    const naive = yield* Effect.exit(
      Effect.scoped(Effect.flatMap(Tcp.connect(streaming.address), (d) => naiveClient(d, request)))
    )
    const cutAfter = (yield* Clock.currentTimeMillis) - start
    yield* Console.log(
      `  stream policy: the naive client was cut after ${cutAfter} ms (${Exit.isFailure(naive) ? "its writes failed: reset by the server" : "it finished"}); the server reported:`
    )
    yield* Console.log(`    ${cut.join("\n").split("\n").join("\n    ")}`)

    const spilling = yield* Echo.serve({ port: 0, policy: Echo.spill({ memoryBytes: 4 * MiB }) })
    const t0 = yield* Clock.currentTimeMillis
    const reply = yield* Effect.scoped(
      Effect.flatMap(Tcp.connect(spilling.address), (d) => naiveClient(d, request))
    ).pipe(Effect.map((chunks) => Buffer.concat(chunks)))
    const exact = firstDifference(reply, request) === -1
    const stats = yield* spilling.echo
    const spillMillis = (yield* Clock.currentTimeMillis) - t0
    yield* Console.log(
      `  spill policy (4 MiB in memory): ${reply.length / MiB} MiB echoed ${exact ? "byte-exact" : "WITH ERRORS"} in ${spillMillis} ms; ` +
        `${(stats.spilledBytes / MiB).toFixed(1)} MiB went through a temporary file, at most ${(stats.peakBufferedBytes / MiB).toFixed(1)} MiB in memory`
    )
    if (!exact) return yield* Effect.die(new Error("echo mismatch"))
  })

/** Requests from four callers over one connection until the server goes away; what became of each. */
const requestsUntilRefused = (client: Shutdown.Client) =>
  Effect.gen(function* () {
    const tally = { answered: 0, notProcessed: 0, ambiguous: 0 }
    const caller = Effect.gen(function* () {
      while (true) {
        const result = yield* Effect.exit(client.request(new Uint8Array(16)))
        if (Exit.isSuccess(result)) tally.answered++
        else {
          const error = Cause.squash(result.cause)
          if (error instanceof Error && "reason" in error && (error.reason as { _tag: string })._tag === "NotProcessed")
            tally.notProcessed++
          else tally.ambiguous++
          return
        }
      }
    })
    const callers = yield* Effect.forkChild(Effect.all([caller, caller, caller, caller], { concurrency: 4 }), {
      startImmediately: true
    })
    return { tally, done: Fiber.join(callers) }
  })

/** A server shutting down while requests flow: the symmetric close, then `Shutdown.serve`. */
const shutdowns = Effect.gen(function* () {
  yield* Console.log("\nA server shutting down while four callers send requests over one TCP connection")
  // The symmetric close, as TCP alone offers it: at shutdown, stop reading and send FIN.
  const stop = yield* Deferred.make<void>()
  const naive = yield* Tcp.serve({ port: 0 }, (conn) =>
    Effect.gen(function* () {
      const framed = yield* Framing.make(conn)
      yield* framed.send(Framing.control(Shutdown.PREFACE)) // the preface every Shutdown server sends first
      while (true) {
        if (yield* Deferred.isDone(stop)) break // checked first: a read that is ready at once wins any race
        const frame = yield* Effect.raceFirst(framed.read, Effect.as(Deferred.await(stop), Option.none()))
        if (Option.isNone(frame)) break
        yield* framed.send(Framing.data(frame.value.payload))
      }
      yield* framed.end
    })
  )
  const before = yield* Effect.scoped(
    Effect.gen(function* () {
      const client = yield* Shutdown.client(yield* Tcp.connect(naive.address))
      const { tally, done } = yield* requestsUntilRefused(client)
      yield* Effect.sleep("200 millis")
      yield* Deferred.succeed(stop, undefined)
      yield* done
      return tally
    })
  )
  yield* Console.log(
    `  symmetric close (the server just sends FIN): ${before.answered} answered, ${before.ambiguous} ended with no answer and no way to know whether the server acted on them`
  )

  const server = yield* Shutdown.serve({ port: 0, grace: "5 seconds", handle: (request) => Effect.succeed(request) })
  const after = yield* Effect.scoped(
    Effect.gen(function* () {
      const client = yield* Shutdown.client(yield* Tcp.connect(server.address))
      const { tally, done } = yield* requestsUntilRefused(client)
      yield* Effect.sleep("200 millis")
      yield* server.shutdown
      yield* done
      return tally
    })
  )
  yield* Console.log(
    `  Shutdown.serve (notice, drain, then close): ${after.answered} answered, ${after.notProcessed} refused as NotProcessed (never sent, safe to retry), ${after.ambiguous} ambiguous`
  )
})

/** A client sends 1 MiB and half-closes; the upstream reads it all, then answers 4 MiB. */
const proxies = Effect.gen(function* () {
  yield* Console.log("\nA proxy between a client that half-closes after its request and a server that answers after it")
  const upstream = yield* Effect.acquireRelease(
    Effect.callback<net.Server>((resume) => {
      const server = net.createServer({ allowHalfOpen: true }, (socket) => {
        socket.on("error", () => {})
        socket.resume()
        socket.on("end", () => setTimeout(() => socket.end(new Uint8Array(4 * MiB).fill(1)), 50))
      })
      server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
    }),
    (server) => Effect.sync(() => server.close())
  )
  const target = { host: "127.0.0.1", port: (upstream.address() as net.AddressInfo).port }
  const receivedThrough = (port: number) =>
    Effect.callback<number>((resume) => {
      const socket = net.connect({ host: "127.0.0.1", port, allowHalfOpen: true })
      let received = 0
      socket.on("data", (chunk) => (received += chunk.length))
      socket.on("close", () => resume(Effect.succeed(received)))
      socket.on("error", () => {})
      socket.end(new Uint8Array(MiB))
    })
  // The usual mistake: the first FIN (either side's) closes the whole pair.
  const naive = yield* Effect.acquireRelease(
    Effect.callback<net.Server>((resume) => {
      const server = net.createServer({ allowHalfOpen: true }, (client) => {
        const up = net.connect({ ...target, allowHalfOpen: true })
        const closeBoth = () => {
          client.destroy()
          up.destroy()
        }
        client.on("error", closeBoth).on("end", closeBoth).pipe(up)
        up.on("error", closeBoth).on("end", closeBoth).pipe(client)
      })
      server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
    }),
    (server) => Effect.sync(() => server.close())
  )
  const lost = yield* receivedThrough((naive.address() as net.AddressInfo).port)
  yield* Console.log(`  a proxy that closes at the first FIN: the client received ${lost} of ${4 * MiB} bytes`)
  const proxy = yield* Proxy.serve({ listen: { port: 0 }, target })
  const kept = yield* receivedThrough((proxy.address as Tcp.TcpAddress).port)
  yield* Console.log(`  Proxy.serve (the FIN passed on, the other direction kept open): ${kept} of ${4 * MiB} bytes`)
})

/** The whole demo, its report on stdout. */
export const run = Effect.scoped(
  Effect.gen(function* () {
    yield* Console.log("fullduplex demo: the duplex deadlock and its cure")
    yield* show("In memory, 64 KiB buffers each way", memoryPeer.pipe(Effect.orDie), randomBytes(MiB, 1))
    // A server that echoes as it reads, with no watchdog: the naive client is caught on its own side.
    const server = yield* Tcp.serve({ port: 0 }, echo).pipe(Effect.orDie)
    // The kernel's socket buffers on loopback hold several MiB each way; 64 MiB is more than all of them.
    yield* show("TCP on 127.0.0.1", Tcp.connect(server.address).pipe(Effect.orDie), randomBytes(64 * MiB, 2))
    yield* echoServers(randomBytes(64 * MiB, 3)).pipe(Effect.orDie)
    // A child process: `cat` echoes as it reads, through pipes of 64 KiB each way.
    yield* show("A child process, cat", Subprocess.spawn("cat").pipe(Effect.orDie), randomBytes(64 * MiB, 4))
    yield* Effect.scoped(shutdowns).pipe(Effect.orDie)
    yield* Effect.scoped(proxies).pipe(Effect.orDie)
    yield* Console.log("\ndone")
  })
)

/** The `demo` command. */
export const command = Command.make("demo", {}, () => run).pipe(
  Command.withShortDescription("The deadlock caught and cured, and the servers that cannot hang"),
  Command.withDescription(
    "The duplex deadlock caught and cured (in memory, over TCP on 127.0.0.1, through a child process), the " +
      "safe echo server's policies, a shutdown that loses no request, and a proxy that keeps half-closes. " +
      "About ten seconds; the report goes to stdout."
  )
)
