import { assert, describe, it } from "@effect/vitest"
import { Cause, Deferred, type Duration, Effect, Exit, Metric, Queue, Scope } from "effect"
import { Duplex, DuplexError, Proxy, Tcp } from "fullduplex"
import { concatBytes, conformance, firstDifference, randomBytes } from "fullduplex/testkit"
import * as fs from "node:fs"
import * as net from "node:net"
import {
  activeHandles,
  closeWithin,
  assertNoLeakedHandles,
  eventually,
  EventLog,
  freePort,
  rawClient,
  socketStates,
  unacceptingPort,
  within
} from "./helpers.js"

const KiB = 1024
const MiB = 1024 * KiB

// ---- raw sockets: what the peers of a proxy see, with no fullduplex in between --------------------------

/**
 * One end of a raw `net` connection (half-open allowed), as a test sees it: it reads everything that
 * arrives, and records its EOF, its first error and its close.
 */
class RawPeer {
  private readonly chunks: Array<Uint8Array> = []
  /** Bytes received so far. */
  receivedBytes = 0
  /** The first error code the socket reported (`ECONNRESET`, `EPIPE`), if any. */
  error: string | undefined
  /** Whether the read side reached a clean EOF. */
  sawEof = false
  private readonly eof = Deferred.makeUnsafe<void, Error>()
  private readonly closed = Deferred.makeUnsafe<void>()

  constructor(
    readonly socket: net.Socket,
    readonly name: string
  ) {
    socket.on("error", (err: NodeJS.ErrnoException) => {
      this.error ??= err.code ?? err.message
    })
    socket.on("data", (chunk: Buffer) => {
      this.chunks.push(chunk)
      this.receivedBytes += chunk.length
    })
    socket.on("end", () => {
      this.sawEof = true
      Deferred.doneUnsafe(this.eof, Exit.void)
    })
    socket.on("close", () => {
      Deferred.doneUnsafe(this.eof, Exit.fail(new Error(`${this.describe()}: closed without EOF`)))
      Deferred.doneUnsafe(this.closed, Exit.void)
    })
  }

  /** Everything received so far, in one array. */
  get received(): Uint8Array {
    return concatBytes(this.chunks)
  }

  describe(): string {
    return `${this.name} (${this.receivedBytes} bytes received, eof ${this.sawEof}, error ${this.error ?? "none"})`
  }

  /** Writes `bytes` in 64 KiB pieces, waiting for `'drain'`; fails if the socket closes first. Bounded. */
  write(bytes: Uint8Array, timeout: Duration.Input = "10 seconds"): Effect.Effect<void, Error> {
    const socket = this.socket
    return Effect.callback<void, Error>((resume) => {
      let offset = 0
      const cleanup = () => {
        socket.off("close", onClose)
        socket.off("drain", pump)
      }
      const onClose = () => {
        cleanup()
        resume(Effect.fail(new Error(`${this.describe()}: closed after writing ${offset} of ${bytes.length} bytes`)))
      }
      const pump = () => {
        while (offset < bytes.length) {
          if (socket.destroyed) return onClose()
          const piece = bytes.subarray(offset, offset + 64 * KiB)
          offset += piece.length
          if (!socket.write(piece)) return void socket.once("drain", pump)
        }
        cleanup()
        resume(Effect.void)
      }
      socket.once("close", onClose)
      pump()
      return Effect.sync(cleanup)
    }).pipe(within(timeout, `${this.name} writing ${bytes.length} bytes`))
  }

  /** Half-closes: FIN after everything written. */
  get end(): Effect.Effect<void> {
    return Effect.sync(() => void this.socket.end())
  }

  /** Waits for the EOF; fails at once if the socket closes without one (a reset). */
  awaitEof(timeout: Duration.Input = "10 seconds"): Effect.Effect<void, Error> {
    return Deferred.await(this.eof).pipe(within(timeout, `${this.describe()}: the EOF`))
  }

  /** Waits until the socket is closed. */
  awaitClose(timeout: Duration.Input = "10 seconds"): Effect.Effect<void, Error> {
    return Deferred.await(this.closed).pipe(within(timeout, `${this.describe()}: the close`))
  }

  /** Waits until at least `n` bytes have arrived. */
  awaitBytes(n: number, timeout = 5000): Effect.Effect<void, Error> {
    return Effect.asVoid(
      eventually(
        `${this.name}: ${n} bytes received`,
        Effect.sync(() => this.receivedBytes),
        (got) => got >= n,
        timeout
      )
    )
  }
}

/** A raw `net` client of `port` on 127.0.0.1, connected; destroyed when the scope closes. */
const rawConnect = (port: number, name = "client"): Effect.Effect<RawPeer, Error, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.callback<RawPeer, Error>((resume) => {
      const socket = net.connect({ host: "127.0.0.1", port, allowHalfOpen: true })
      const peer = new RawPeer(socket, name)
      socket.once("connect", () => resume(Effect.succeed(peer)))
      socket.once("close", () => resume(Effect.fail(new Error(`${peer.describe()}: closed before connecting`))))
      return Effect.sync(() => socket.destroy())
    }).pipe(within("5 seconds", `${name} connecting to port ${port}`)),
    (peer) => Effect.sync(() => peer.socket.destroy())
  )

/**
 * A raw `net` server on 127.0.0.1 (half-open allowed), standing for the proxy's upstream: `onPeer` gets
 * each accepted connection. Closed, with every connection it accepted destroyed, when the scope closes.
 */
const rawUpstream = (onPeer: (peer: RawPeer) => void): Effect.Effect<number, Error, Scope.Scope> =>
  Effect.gen(function* () {
    const sockets = new Set<net.Socket>()
    let accepted = 0
    const server = net.createServer({ allowHalfOpen: true }, (socket) => {
      sockets.add(socket)
      socket.once("close", () => sockets.delete(socket))
      onPeer(new RawPeer(socket, `upstream #${++accepted}`))
    })
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        server.close()
        for (const socket of sockets) socket.destroy()
      })
    )
    return yield* Effect.callback<number>((resume) => {
      server.listen(0, "127.0.0.1", () => resume(Effect.succeed((server.address() as net.AddressInfo).port)))
    }).pipe(within("5 seconds", "the upstream's listen"))
  })

/** A raw upstream whose connections are handed to the test one by one, in accept order. */
const queuedUpstream = Effect.gen(function* () {
  const peers = yield* Queue.unbounded<RawPeer>()
  const port = yield* rawUpstream((peer) => void Queue.offerUnsafe(peers, peer))
  const next = Queue.take(peers).pipe(within("5 seconds", "the proxy's connection to the upstream"))
  return { port, next }
})

// ---- the proxy under test -----------------------------------------------------------------------------

/** Records a proxy's events: the server's own in an `EventLog`, and the failed upstream connects. */
class ProxyEvents {
  readonly server = new EventLog()
  readonly upstreamFailures: Array<Extract<Proxy.ProxyEvent, { _tag: "UpstreamConnectFailed" }>> = []
  /** Every event's tag, in arrival order. */
  readonly order: Array<Proxy.ProxyEvent["_tag"]> = []

  readonly onEvent = (event: Proxy.ProxyEvent): Effect.Effect<void> =>
    Effect.suspend(() => {
      this.order.push(event._tag)
      if (event._tag !== "UpstreamConnectFailed") return this.server.onEvent(event)
      this.upstreamFailures.push(event)
      return Effect.void
    })

  /** Waits for the first `UpstreamConnectFailed` event. */
  readonly upstreamFailure = Effect.map(
    eventually(
      "an UpstreamConnectFailed event",
      Effect.sync(() => this.upstreamFailures),
      (failures) => failures.length > 0,
      5000
    ),
    (failures) => failures[0]!
  )
}

/** A proxy on an ephemeral port of 127.0.0.1 to `target`, reporting to `events`: the server and its port. */
const proxy = (target: Tcp.ConnectOptions, events: ProxyEvents) =>
  Effect.map(Proxy.serve({ listen: { host: "127.0.0.1", port: 0 }, target, onEvent: events.onEvent }), (server) => ({
    server,
    port: portOf(server.address)
  }))

const portOf = (address: Tcp.Address): number => ("port" in address ? address.port : -1)

/** The `DuplexError` a failed connection was reported with, or an assertion failure saying what it was. */
const failureOf = (closed: Extract<Tcp.ServerEvent, { _tag: "ConnectionClosed" }>): DuplexError.DuplexError => {
  assert.strictEqual(closed.ending, "failed", `the connection ended ${closed.ending}`)
  const error = closed.cause === undefined ? undefined : Cause.squash(closed.cause)
  assert.isTrue(
    DuplexError.isDuplexError(error),
    `expected a DuplexError, got ${closed.cause ? Cause.pretty(closed.cause) : "no cause"}`
  )
  return error as DuplexError.DuplexError
}

// ---- leak accounting ----------------------------------------------------------------------------------

/** How many file descriptors this process holds now. */
const openFds = (): number => fs.readdirSync("/proc/self/fd").length

/** Waits until every socket on `ports` is in one of `allowed` states (TIME_WAIT is a clean close's end). */
const socketsSettle = (ports: ReadonlyArray<number>, allowed: ReadonlyArray<string>) =>
  eventually(
    `every socket on ports ${ports.join(", ")} closed (only ${allowed.join(", ")} left)`,
    Effect.sync(() => socketStates(ports)),
    (states) => Object.keys(states).every((s) => allowed.includes(s)),
    3000
  )

/** Counts fibers started and ended in the context it is provided to (and every fiber forked from it). */
const fiberCounter = () => {
  const counts = { started: 0, ended: 0 }
  const service: Metric.FiberRuntimeMetricsService = {
    recordFiberStart: () => void counts.started++,
    recordFiberEnd: () => void counts.ended++
  }
  return { counts, service, running: () => counts.started - counts.ended }
}

// ---- the tests ----------------------------------------------------------------------------------------

describe("Proxy.serve", () => {
  it.live(
    "a client that half-closes after a 1 MiB request still gets the 4 MiB reply its upstream sends afterwards, then EOF",
    () =>
      Effect.gen(function* () {
        const events = new ProxyEvents()
        const upstream = yield* queuedUpstream
        const { port } = yield* proxy({ port: upstream.port }, events)
        const request = randomBytes(1 * MiB, 11)
        const reply = randomBytes(4 * MiB, 12)

        const client = yield* rawConnect(port)
        yield* client.write(request)
        yield* client.end
        const up = yield* upstream.next
        yield* up.awaitEof() // the client's FIN, passed on
        const at = firstDifference(up.received, request)
        assert.strictEqual(
          at,
          -1,
          `upstream got ${up.receivedBytes} of ${request.length} bytes, first difference at ${at}`
        )
        // A proxy that tore the pair down at the first FIN has done so by now.
        yield* Effect.sleep(100)
        yield* up.write(reply)
        yield* up.end

        yield* client.awaitEof()
        const got = client.received
        assert.strictEqual(firstDifference(got, reply), -1, `client got ${got.length} of ${reply.length} reply bytes`)
        yield* client.awaitClose()
        yield* up.awaitClose()
        assert.isUndefined(client.error, "the client's connection closed without an error")
        assert.isUndefined(up.error, "the upstream's connection closed without an error")

        const [closed] = yield* events.server.waitFor("ConnectionClosed")
        assert.strictEqual(closed!.ending, "completed", events.server.describe())
        assert.strictEqual(closed!.close?.ending, "eof")
        assert.strictEqual(closed!.stats.inbound.bytes, request.length)
        assert.strictEqual(closed!.stats.outbound.bytes, reply.length)
        assert.deepStrictEqual(events.upstreamFailures, [])
      })
  )

  it.live(
    "after the upstream half-closes first, the client's 4 MiB sent after that EOF still reach the upstream, then all closes",
    () =>
      Effect.gen(function* () {
        const events = new ProxyEvents()
        const upstream = yield* queuedUpstream
        const { port } = yield* proxy({ port: upstream.port }, events)
        const greeting = randomBytes(64 * KiB, 21)
        const upload = randomBytes(4 * MiB, 22)

        const client = yield* rawConnect(port)
        const up = yield* upstream.next
        yield* up.write(greeting)
        yield* up.end // the upstream is done talking, and still listens
        yield* client.awaitEof()
        assert.strictEqual(firstDifference(client.received, greeting), -1, `client got ${client.receivedBytes} bytes`)

        // Only now, after the upstream's EOF reached it, does the client send.
        yield* client.write(upload)
        yield* client.end
        yield* up.awaitEof()
        const at = firstDifference(up.received, upload)
        assert.strictEqual(
          at,
          -1,
          `upstream got ${up.receivedBytes} of ${upload.length} bytes, first difference at ${at}`
        )

        yield* up.awaitClose()
        yield* client.awaitClose()
        assert.isUndefined(client.error, "the client's connection closed without an error")
        assert.isUndefined(up.error, "the upstream's connection closed without an error")
        const [closed] = yield* events.server.waitFor("ConnectionClosed")
        assert.strictEqual(closed!.ending, "completed", events.server.describe())
        assert.strictEqual(closed!.close?.ending, "eof")
        assert.strictEqual(closed!.stats.inbound.bytes, upload.length)
        assert.strictEqual(closed!.stats.outbound.bytes, greeting.length)
      })
  )

  it.live(
    "an upstream that answers 1 MiB after reading 1 KiB of a 16 MiB upload, then closes, loses no byte of it on the way: 10 runs",
    () =>
      Effect.gen(function* () {
        // The seed scenario of Tcp.test.ts, behind the proxy: the upstream's FIN comes while the client is still
        // uploading, so the reply must reach the client, and the rest of the upload the upstream, then both close.
        const upload = randomBytes(16 * MiB, 61)
        const response = randomBytes(1 * MiB, 62)
        const upstreamEvents = new EventLog()
        const upstream = yield* Tcp.serve(
          { host: "127.0.0.1", port: 0, onEvent: upstreamEvents.onEvent },
          (conn: Duplex.Duplex) =>
            Effect.gen(function* () {
              for (let read = 0; read < KiB;) {
                const chunk = yield* conn.read
                if (chunk._tag === "None") break
                read += chunk.value.length
              }
              yield* conn.write(response)
            })
        )
        const events = new ProxyEvents()
        const { port } = yield* proxy(upstream.address, events)
        const runs = 10
        for (let run = 1; run <= runs; run++) {
          const outcome = yield* rawClient({ port }, upload).pipe(within("10 seconds", `run ${run}`))
          const at = firstDifference(outcome.received, response)
          assert.isTrue(
            outcome.error === undefined && outcome.eof && at === -1,
            `run ${run}: ${outcome.error ?? "no error"}, eof ${outcome.eof}, ${outcome.received.length} of ${response.length} bytes, first difference at ${at}`
          )
          assert.strictEqual(outcome.uploaded, upload.length, `run ${run}: the whole upload was sent`)
        }
        for (const e of yield* upstreamEvents.waitFor("ConnectionClosed", { count: runs })) {
          assert.strictEqual(e.ending, "completed", upstreamEvents.describe())
          assert.strictEqual(e.close?.ending, "eof", "the upstream's lingering close saw the proxy's FIN")
          assert.strictEqual(e.stats.inbound.bytes, upload.length, "the whole upload reached the upstream")
        }
        for (const e of yield* events.server.waitFor("ConnectionClosed", { count: runs })) {
          assert.strictEqual(e.ending, "completed", events.server.describe())
          assert.strictEqual(e.close?.ending, "eof")
        }
      }),
    60_000
  )

  it.live(
    "when nothing listens at the target, reports UpstreamConnectFailed (ECONNREFUSED) and closes the client cleanly: EOF, no reset",
    () =>
      Effect.gen(function* () {
        const events = new ProxyEvents()
        const target = yield* freePort
        const { server, port } = yield* proxy({ port: target }, events)
        // The client sends bytes the proxy never relays, more than the socket buffers hold: closing with some
        // of them unread would reset the connection.
        const upload = randomBytes(16 * MiB, 31)
        const outcome = yield* rawClient({ port }, upload).pipe(within("10 seconds", "the client's connection"))
        assert.isUndefined(outcome.error, `the client saw ${outcome.error}, not a clean close`)
        assert.isTrue(outcome.eof, "the client read EOF")
        assert.strictEqual(outcome.received.length, 0)
        assert.strictEqual(outcome.uploaded, upload.length)

        const failure = yield* events.upstreamFailure
        assert.strictEqual(failure.error.reason._tag, "ConnectFailed")
        if (failure.error.reason._tag === "ConnectFailed") {
          assert.strictEqual(failure.error.reason.code, "ECONNREFUSED")
          assert.strictEqual(failure.error.reason.address, `127.0.0.1:${target}`)
        }
        assert.strictEqual(failure.connection.id, 1)
        const [closed] = yield* events.server.waitFor("ConnectionClosed")
        assert.strictEqual(closed!.ending, "completed", events.server.describe())
        assert.strictEqual(closed!.close?.ending, "eof", "the proxy lingered until the client's EOF")
        assert.strictEqual(closed!.close?.discardedBytes, upload.length, "and read (discarded) the whole upload")
        assert.isBelow(
          events.order.indexOf("UpstreamConnectFailed"),
          events.order.indexOf("ConnectionClosed"),
          `UpstreamConnectFailed comes before ConnectionClosed: ${events.order.join(", ")}`
        )
        assert.strictEqual((yield* server.stats).completed, 1)
      })
  )

  it.live(
    "when the upstream connect times out, reports UpstreamConnectFailed (ETIMEDOUT) and closes the client cleanly",
    () =>
      Effect.gen(function* () {
        const events = new ProxyEvents()
        const target = yield* unacceptingPort
        const { port } = yield* proxy({ port: target, connectTimeout: "300 millis" }, events)
        const outcome = yield* rawClient({ port }, randomBytes(256 * KiB, 32)).pipe(
          within("10 seconds", "the client's connection")
        )
        assert.isUndefined(outcome.error, `the client saw ${outcome.error}, not a clean close`)
        assert.isTrue(outcome.eof, "the client read EOF")
        const failure = yield* events.upstreamFailure
        assert.strictEqual(failure.error.reason._tag, "ConnectFailed")
        if (failure.error.reason._tag === "ConnectFailed") {
          assert.strictEqual(failure.error.reason.code, "ETIMEDOUT")
          assert.strictEqual(failure.error.reason.timeoutMillis, 300)
        }
        const [closed] = yield* events.server.waitFor("ConnectionClosed")
        assert.strictEqual(closed!.ending, "completed", events.server.describe())
      })
  )

  it.live("a target with a bad option fails InvalidOptions before the proxy listens", () =>
    Effect.gen(function* () {
      const before = activeHandles()
      const exit = yield* Effect.exit(
        Effect.scoped(Proxy.serve({ listen: { port: 0 }, target: { host: "127.0.0.1", port: 70_000 } }))
      )
      assert.isTrue(Exit.isFailure(exit), "the proxy refused the target")
      const error = Exit.isFailure(exit) ? Cause.squash(exit.cause) : undefined
      assert.isTrue(DuplexError.isDuplexError(error) && error.reason._tag === "InvalidOptions", String(error))
      yield* assertNoLeakedHandles(before)
    })
  )

  it.live("shutdown leaves no fiber behind when the consumer of UpstreamConnectFailed never returns", () =>
    Effect.gen(function* () {
      // The same guarantee Tcp.serve gives for its own events: a consumer that hangs is interrupted at shutdown.
      let hung = 0
      const release = yield* Deferred.make<void>()
      yield* Effect.addFinalizer(() => Deferred.succeed(release, undefined)) // never leave the consumer behind
      const onEvent = (e: Proxy.ProxyEvent) =>
        e._tag === "UpstreamConnectFailed"
          ? Effect.andThen(
              Effect.sync(() => hung++),
              Effect.onInterrupt(Deferred.await(release), () => Effect.sync(() => hung--))
            )
          : Effect.void
      const scope = yield* Scope.make()
      const { port } = yield* Proxy.serve({
        listen: { host: "127.0.0.1", port: 0, shutdownGrace: "100 millis" },
        target: { port: yield* freePort },
        onEvent
      }).pipe(
        Effect.map((server) => ({ port: portOf(server.address) })),
        Scope.provide(scope)
      )
      const outcome = yield* rawClient({ port }, randomBytes(KiB, 33)).pipe(within("5 seconds", "the client"))
      assert.isTrue(outcome.eof && outcome.error === undefined, `the client: ${outcome.error ?? "no error"}`)
      yield* eventually(
        "the consumer to get UpstreamConnectFailed",
        Effect.sync(() => hung),
        (n) => n === 1
      )
      yield* closeWithin(scope)
      assert.strictEqual(hung, 0, "the hung UpstreamConnectFailed consumer still runs after the proxy shut down")
    })
  )

  it.live(
    "an upstream reset in mid-transfer aborts both legs: the client sees a reset, and the connection is reported failed",
    () =>
      Effect.gen(function* () {
        const events = new ProxyEvents()
        const upstream = yield* queuedUpstream
        const { server, port } = yield* proxy({ port: upstream.port }, events)
        const client = yield* rawConnect(port)
        const up = yield* upstream.next
        // Traffic both ways: the upstream has answered part of it, the client is still uploading.
        yield* up.write(randomBytes(64 * KiB, 41))
        yield* Effect.forkChild(Effect.ignore(client.write(randomBytes(16 * MiB, 42))), { startImmediately: true })
        yield* up.awaitBytes(256 * KiB)
        yield* client.awaitBytes(64 * KiB)
        up.socket.resetAndDestroy()

        yield* client.awaitClose("5 seconds")
        assert.isFalse(client.sawEof, `the client read a clean EOF: ${client.describe()}`)
        assert.oneOf(client.error, ["ECONNRESET", "EPIPE"], client.describe())
        const [closed] = yield* events.server.waitFor("ConnectionClosed")
        const error = failureOf(closed!)
        assert.strictEqual(error.reason._tag, "Broken", error.message)
        assert.strictEqual((yield* server.stats).failed, 1)
      })
  )

  it.live("a client reset aborts both legs: the upstream sees a reset, and the connection is reported failed", () =>
    Effect.gen(function* () {
      const events = new ProxyEvents()
      const upstream = yield* queuedUpstream
      const { port } = yield* proxy({ port: upstream.port }, events)
      const client = yield* rawConnect(port)
      const up = yield* upstream.next
      yield* client.write(randomBytes(16 * KiB, 43))
      yield* up.awaitBytes(16 * KiB) // both legs are up and carrying bytes
      client.socket.resetAndDestroy()

      yield* up.awaitClose("5 seconds")
      assert.isFalse(up.sawEof, `the upstream read a clean EOF: ${up.describe()}`)
      assert.strictEqual(up.error, "ECONNRESET", up.describe())
      const [closed] = yield* events.server.waitFor("ConnectionClosed")
      const error = failureOf(closed!)
      assert.strictEqual(error.reason._tag, "Broken", error.message)
      if (error.reason._tag === "Broken") assert.strictEqual(error.reason.code, "ECONNRESET")
    })
  )

  it.live(
    "1000 sequential request/reply connections leave no half-closed socket, descriptor, handle, connection or fiber",
    () =>
      Effect.gen(function* () {
        const n = 1000
        const request = randomBytes(200, 51)
        const reply = randomBytes(2 * KiB, 52)
        const handlesBefore = activeHandles()
        const fdsBefore = openFds()
        const fibers = fiberCounter()
        const events = new ProxyEvents()

        const scope = yield* Scope.make()
        // Each upstream connection reads the request to its EOF, checks it, then replies and half-closes.
        let badRequests = 0
        const upstreamPort = yield* rawUpstream((peer) => {
          peer.socket.once("end", () => {
            if (firstDifference(peer.received, request) !== -1) badRequests++
            peer.socket.end(reply)
          })
        }).pipe(Scope.provide(scope))
        // Only the proxy runs with the counter: its connection fibers inherit it from the server's context.
        const { server, port } = yield* proxy({ port: upstreamPort }, events).pipe(
          Effect.provideService(Metric.FiberRuntimeMetrics, fibers.service),
          Scope.provide(scope)
        )
        const ports = [port, upstreamPort]
        const fdsListening = openFds()

        // The counter does see the connection fibers: some run while a connection is open.
        const first = yield* rawConnect(port, "first client").pipe(Scope.provide(scope))
        yield* first.write(request)
        yield* eventually("the first connection to be active", server.stats, (s) => s.active === 1)
        assert.isAbove(fibers.running(), 0, `fibers running with a connection open: ${JSON.stringify(fibers.counts)}`)
        // The other two accounts see it too: client, proxy (both legs) and upstream sockets, and their descriptors.
        yield* eventually(
          "the open connection's four sockets established",
          Effect.sync(() => socketStates(ports)),
          (states) => states["ESTABLISHED"] === 4
        )
        yield* eventually(
          "descriptors for the open connection's four sockets",
          Effect.sync(openFds),
          (fds) => fds >= fdsListening + 4
        )
        yield* first.end
        yield* first.awaitEof()
        assert.strictEqual(firstDifference(first.received, reply), -1, `the first reply: ${first.describe()}`)
        yield* first.awaitClose()

        const problems: Array<string> = []
        for (let i = 2; i <= n; i++) {
          const outcome = yield* rawClient({ port }, request).pipe(within("5 seconds", `connection ${i}`))
          const at = firstDifference(outcome.received, reply)
          if (outcome.error !== undefined || !outcome.eof || at !== -1)
            problems.push(`#${i}: error ${outcome.error ?? "none"}, eof ${outcome.eof}, first difference at ${at}`)
        }
        assert.deepStrictEqual(problems.slice(0, 10), [], `${problems.length} of ${n} connections went wrong`)
        assert.strictEqual(badRequests, 0, "requests that reached the upstream altered")

        const closed = yield* events.server.waitFor("ConnectionClosed", { count: n, timeout: "10 seconds" })
        const unclean = closed.filter((e) => e.ending !== "completed" || e.close?.ending !== "eof")
        assert.deepStrictEqual(
          unclean.slice(0, 5).map((e) => `#${e.connection.id} ${e.ending} ${e.close?.ending}`),
          [],
          `${unclean.length} connections did not close cleanly`
        )
        assert.deepStrictEqual(events.upstreamFailures, [])
        yield* eventually("no connection active", server.stats, (s) => s.active === 0 && s.completed === n)

        // With every connection done, the proxy runs no fiber: a listening server has none of its own (accepting
        // is a Node callback), and each connection's fibers (handler, splice copies, closes, events) ended with
        // it. So the count must balance already now, not only once the scope is closed; it is checked at both.
        yield* eventually(
          "every fiber the proxy started to have ended",
          Effect.sync(() => ({ ...fibers.counts })),
          (c) => c.started === c.ended
        )
        assert.isAtLeast(fibers.counts.started, 3 * n, "at least a few fibers per connection were counted")
        // Clean closes end in TIME_WAIT; CLOSE_WAIT or FIN_WAIT2 would be a leg one side never closed.
        yield* socketsSettle(ports, ["LISTEN", "TIME_WAIT"])
        yield* eventually(
          `descriptors back to the ${fdsListening} held with both servers listening`,
          Effect.sync(openFds),
          (fds) => fds <= fdsListening + 2
        )

        yield* Scope.close(scope, Exit.void).pipe(within("10 seconds", "closing the proxy and the upstream"))
        assert.strictEqual(fibers.running(), 0, `fibers still running after shutdown: ${JSON.stringify(fibers.counts)}`)
        yield* socketsSettle(ports, ["TIME_WAIT"])
        yield* eventually(`descriptors back to the ${fdsBefore} held before`, Effect.sync(openFds), (fds) => {
          return fds <= fdsBefore + 2
        })
        yield* assertNoLeakedHandles(handlesBefore)
      }),
    60_000
  )
})

/**
 * Both ends of one proxied connection: `[client, upstream]`, where `client` is a `Tcp.connect` to the
 * proxy and `upstream` the duplex that the upstream `Tcp.serve` handler gets for the relayed connection.
 * Both servers have `shutdownGrace: 0`, so closing the scope closes everything at once.
 */
const proxiedPair = (highWaterMark: number) =>
  Effect.gen(function* () {
    const accepted = yield* Deferred.make<Duplex.Duplex>()
    const upstream = yield* Tcp.serve(
      { host: "127.0.0.1", port: 0, highWaterMark, shutdownGrace: 0, onEvent: () => Effect.void },
      (conn) => Deferred.succeed(accepted, conn).pipe(Effect.andThen(Effect.never))
    )
    const relay = yield* Proxy.serve({
      listen: { host: "127.0.0.1", port: 0, highWaterMark, shutdownGrace: 0 },
      target: { ...upstream.address, highWaterMark },
      onEvent: () => Effect.void
    })
    const client = yield* Tcp.connect({ ...relay.address, highWaterMark, label: "client" })
    const served = yield* Deferred.await(accepted).pipe(within("5 seconds", "the upstream's side of the connection"))
    return [client, served] as const
  })

describe("conformance over a proxied connection", () => {
  // Each end is a fromNodeDuplex adapter, as in the Tcp.serve + Tcp.connect block of Conformance.test.ts: the
  // same bounds apply to what the client and the upstream buffer, whatever the proxy holds in between. Every
  // case passes unmarked: order, EOF and half-close go through the splice, and an abort at one end (RST)
  // reaches the other because the proxy turns a reset on one leg into an abort of the other.
  const hwm = 16 * KiB
  for (const c of conformance("proxied", proxiedPair(hwm), { bufferBound: 64 * KiB + hwm })) {
    it.live(c.name, () => c.run)
  }
})
