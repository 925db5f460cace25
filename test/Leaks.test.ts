/**
 * Every end of a TCP connection gives back its socket: hundreds of connections end each way — a splice
 * interrupted at a random point (the connect and its timeout included), an exchange or a `pipeThrough`
 * interrupted, a handler that fails, an idle timeout, a peer's reset, a normal close — and the testkit's
 * leak check finds the process's fds and active handles back at their count within a second.
 *
 * Seeds: `FC_SEED` if set, else a fresh one, shown in the `describe` title and in every leak report;
 * replay with `FC_SEED=<seed>`.
 */
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Fiber, Scope, Sink, Stream } from "effect"
import { Close, Duplex, Tcp } from "fullduplex"
import { prng, randomBytes, withLeakCheck } from "fullduplex/testkit"
import * as net from "node:net"
import { unacceptingPort, within } from "./helpers.js"

const seed = Number(process.env["FC_SEED"] || Math.floor(Math.random() * 2 ** 31))

/**
 * A bounded `it.live`: a hang fails naming the test. The body starts a step after the bound's timer, so
 * that the leak check inside it counts that timer as already there.
 */
const live = (name: string, body: () => Effect.Effect<unknown, unknown, Scope.Scope>, seconds = 30) =>
  it.live(
    name,
    () =>
      Effect.scoped(Effect.andThen(Effect.yieldNow, Effect.suspend(body))).pipe(
        within(`${seconds} seconds`, `"${name}" (seed ${seed})`)
      ),
    (seconds + 10) * 1000
  )

/** A seeded generator of numbers in [0, 1). */
const unit = (s: number): (() => number) => {
  const next = prng(s)
  return () => next() / 2 ** 32
}

const between = (random: () => number, low: number, high: number): number =>
  low + Math.floor(random() * (high - low + 1))

const portOf = (server: Tcp.Server): number => (server.address as Tcp.TcpAddress).port

/** Echoes every byte, then half-closes at the client's EOF. */
const echo = (conn: Duplex.Duplex) => Stream.run(conn.readable, conn.sink).pipe(Effect.andThen(conn.end))

/** A server that closes its connections without lingering for long: its sockets go as fast as the clients'. */
const serveQuickly = <E, R>(handler: Tcp.Handler<E, R>, options: Partial<Tcp.ServeOptions> = {}) =>
  Tcp.serve(
    {
      port: 0,
      onEvent: () => Effect.void,
      shutdownGrace: 0,
      close: Close.lingering({ lingerTimeout: 200 }),
      ...options
    },
    handler
  )

/** Where an operation is interrupted. */
type Point =
  | { readonly _tag: "BeforeStart" }
  /** The first few yields fall while the connect is still in progress. */
  | { readonly _tag: "AfterYields"; readonly yields: number }
  | { readonly _tag: "AfterMillis"; readonly millis: number }
  | { readonly _tag: "AfterBytes"; readonly bytes: number }
  /** Just after the work has half-closed the connection (or asked for it): while the FIN may be on its way. */
  | { readonly _tag: "AfterHalfClose"; readonly yields: number }
  /** Not interrupted: it runs to its end (a normal close). */
  | { readonly _tag: "Never" }

const randomPoint = (random: () => number, maxBytes: number): Point => {
  const r = random()
  if (r < 0.15) return { _tag: "Never" }
  if (r < 0.2) return { _tag: "BeforeStart" }
  if (r < 0.35) return { _tag: "AfterYields", yields: between(random, 0, 12) }
  if (r < 0.55) return { _tag: "AfterMillis", millis: random() * 6 }
  if (r < 0.75) return { _tag: "AfterBytes", bytes: between(random, 1, maxBytes) }
  return { _tag: "AfterHalfClose", yields: between(random, 0, 4) }
}

/** How an interrupted operation ended: it was interrupted, or it finished first (succeeded or failed). */
type Outcome = "interrupted" | "completed" | "failed"

/** What `work` reports, for the points that wait on it. */
interface Progress {
  /** Bytes moved. */
  readonly bytes: (n: number) => void
  /** The connection is being half-closed now. */
  readonly halfClosing: () => void
}

/**
 * Runs `work` in a fiber and interrupts it at `point`. Waits for the point (or the work's own end) and
 * for the interruption at most `boundMillis` each.
 */
const interruptAt = <E>(
  point: Point,
  work: (progress: Progress) => Effect.Effect<unknown, E, Scope.Scope>,
  boundMillis = 3000
): Effect.Effect<Outcome, Error> =>
  Effect.gen(function* () {
    const reached = yield* Deferred.make<void>()
    let moved = 0
    const progress: Progress = {
      bytes: (n) => {
        moved += n
        if (point._tag === "AfterBytes" && moved >= point.bytes) Deferred.doneUnsafe(reached, Exit.void)
      },
      halfClosing: () => {
        if (point._tag === "AfterHalfClose") Deferred.doneUnsafe(reached, Exit.void)
      }
    }
    const fiber = yield* Effect.forkChild(Effect.scoped(work(progress)), {
      startImmediately: point._tag !== "BeforeStart"
    })
    const reachedOrDone = (what: string) =>
      Effect.raceFirst(Deferred.await(reached), Fiber.await(fiber)).pipe(within(boundMillis, what))
    switch (point._tag) {
      case "AfterYields":
        for (let i = 0; i < point.yields; i++) yield* Effect.yieldNow
        break
      case "AfterMillis":
        yield* Effect.sleep(point.millis)
        break
      case "AfterBytes":
        yield* reachedOrDone(`${point.bytes} bytes through`)
        break
      case "AfterHalfClose":
        yield* reachedOrDone("the half-close")
        for (let i = 0; i < point.yields; i++) yield* Effect.yieldNow
        break
      case "Never":
        yield* Fiber.await(fiber).pipe(within(boundMillis, "the work's normal end"))
    }
    yield* Fiber.interrupt(fiber).pipe(within(boundMillis, "the interruption"))
    const exit = yield* Fiber.await(fiber)
    return Exit.isSuccess(exit) ? "completed" : Exit.hasInterrupts(exit) ? "interrupted" : "failed"
  })

/** Reads `duplex` to its end (or first failure), reporting the bytes. */
const drainCounting = (duplex: Duplex.Duplex, progress: Progress) =>
  Stream.runForEach(duplex.readable, (chunk) => Effect.sync(() => progress.bytes(chunk.length)))

const tally = (outcomes: ReadonlyArray<string>): Record<string, number> => {
  const counts: Record<string, number> = {}
  for (const o of outcomes) counts[o] = (counts[o] ?? 0) + 1
  return counts
}

/**
 * A raw `net` peer: connects, writes `bytes`, reads and discards what comes back, and from the first byte
 * back (so the server has accepted it) half-closes after `endAfterMillis` and resets `resetAfterMillis`
 * after its own FIN has left (never, if undefined); resolves when its socket closes, or destroys it after
 * `boundMillis`.
 */
const rawPeer = (
  port: number,
  bytes: Uint8Array,
  plan: { readonly endAfterMillis?: number | undefined; readonly resetAfterMillis?: number | undefined },
  boundMillis = 3000
): Effect.Effect<"closed" | "timedOut"> =>
  Effect.callback<"closed" | "timedOut">((resume) => {
    const socket = net.connect({ port, host: "127.0.0.1", allowHalfOpen: true })
    const timers: Array<ReturnType<typeof setTimeout>> = []
    const clear = () => timers.forEach(clearTimeout)
    socket.on("error", () => {})
    // Reset once the FIN has left: Node cannot reset a socket whose shutdown is still in progress.
    const reset = () => (socket.writableEnded && !socket.writableFinished ? socket.destroy() : socket.resetAndDestroy())
    socket.once("connect", () => socket.write(bytes))
    socket.on("data", () => {})
    socket.once("data", () => {
      if (plan.endAfterMillis !== undefined) {
        timers.push(setTimeout(() => socket.end(), plan.endAfterMillis))
        if (plan.resetAfterMillis !== undefined) {
          const after = plan.resetAfterMillis
          socket.once("finish", () => (after === 0 ? reset() : timers.push(setTimeout(reset, after))))
        }
      } else if (plan.resetAfterMillis !== undefined) timers.push(setTimeout(reset, plan.resetAfterMillis))
    })
    timers.push(
      setTimeout(() => {
        clear()
        socket.destroy()
        resume(Effect.succeed("timedOut"))
      }, boundMillis)
    )
    socket.on("close", () => {
      clear()
      resume(Effect.succeed("closed"))
    })
    return Effect.sync(() => {
      clear()
      socket.destroy()
    })
  })

describe(`every end of a TCP connection frees its socket (seed ${seed})`, () => {
  live("300 splices between Tcp.connect and a Duplex.pair, interrupted at random points, connects included", () =>
    Effect.gen(function* () {
      const random = unit(seed)
      const server = yield* serveQuickly(echo)
      // Connects to it time out or are interrupted before any answer: its accept queue is full.
      const silentPort = yield* unacceptingPort
      const plans = Array.from({ length: 300 }, () => {
        const payload = between(random, 0, 256 * 1024)
        const point = randomPoint(random, payload + 1)
        return {
          point,
          payload,
          // A splice ends once both sides have half-closed: the pair's side does unless it is interrupted.
          ends: point._tag === "Never" || point._tag === "AfterHalfClose" || random() < 0.8,
          capacity: between(random, 1, 64 * 1024),
          silent: random() < 0.05 ? random() * 20 : undefined
        }
      })
      const one = (plan: (typeof plans)[number]) =>
        interruptAt(plan.point, (progress) =>
          Effect.gen(function* () {
            const conn = yield* plan.silent === undefined
              ? Tcp.connect({ port: portOf(server) })
              : Tcp.connect({ port: silentPort, connectTimeout: plan.silent })
            const [a, b] = yield* Duplex.pair({ capacity: plan.capacity })
            const upload = b.write(new Uint8Array(plan.payload))
            // The pair's end reaches the socket in the same step: the splice half-closes it at once.
            const ending = Effect.andThen(upload, Effect.andThen(b.end, Effect.sync(progress.halfClosing)))
            yield* Effect.forkScoped(plan.ends ? ending : upload, { startImmediately: true })
            yield* Effect.forkScoped(drainCounting(b, progress), { startImmediately: true })
            return yield* Duplex.splice(conn, a)
          })
        )
      const outcomes = yield* withLeakCheck(Effect.forEach(plans, one, { concurrency: 8 }), {
        label: `300 interrupted splices (seed ${seed})`
      })
      const counts = tally(outcomes)
      // Both kinds of end happened: interruptions and splices that ran to the end first.
      assert.isAbove(counts["interrupted"] ?? 0, 50, JSON.stringify(counts))
      assert.isAbove(counts["completed"] ?? 0, 10, JSON.stringify(counts))
    })
  )

  live("300 exchanges and pipeThroughs over Tcp.connect, interrupted at random points or run to the end", () =>
    Effect.gen(function* () {
      const random = unit(seed + 1)
      const server = yield* serveQuickly(echo)
      const plans = Array.from({ length: 300 }, () => {
        const payload = between(random, 0, 512 * 1024)
        return {
          point: randomPoint(random, payload + 1),
          payload,
          chunk: between(random, 1, 64 * 1024),
          via: random() < 0.5 ? ("exchange" as const) : ("pipeThrough" as const)
        }
      })
      const one = (plan: (typeof plans)[number]) =>
        interruptAt(plan.point, (progress) =>
          Effect.gen(function* () {
            const conn = yield* Tcp.connect({ port: portOf(server) })
            const chunks = Array.from(
              { length: Math.ceil(plan.payload / plan.chunk) },
              (_, i) => new Uint8Array(Math.min(plan.chunk, plan.payload - i * plan.chunk))
            )
            // Its end is the moment the exchange half-closes the connection.
            const input = Stream.concat(
              Stream.fromIterable(chunks),
              Stream.fromEffectDrain(Effect.sync(progress.halfClosing))
            )
            const counting = Sink.forEach((chunk: Uint8Array) => Effect.sync(() => progress.bytes(chunk.length)))
            return plan.via === "exchange"
              ? yield* Duplex.exchange(conn, input, counting)
              : yield* Stream.run(Duplex.pipeThrough(input, conn), counting)
          })
        )
      const outcomes = yield* withLeakCheck(Effect.forEach(plans, one, { concurrency: 8 }), {
        label: `300 interrupted exchanges (seed ${seed})`
      })
      const counts = tally(outcomes)
      assert.isAbove(counts["interrupted"] ?? 0, 50, JSON.stringify(counts))
      assert.isAbove(counts["completed"] ?? 0, 10, JSON.stringify(counts))
      assert.strictEqual(counts["failed"] ?? 0, 0, JSON.stringify(counts))
    })
  )

  live("300 handlers that fail at a random point, after writing, half-closing or neither", () =>
    Effect.gen(function* () {
      const random = unit(seed + 2)
      const plans = Array.from({ length: 300 }, () => ({
        reads: between(random, 0, 4096),
        writes: between(random, 0, 128 * 1024),
        ends: random() < 0.6,
        failAfterYields: between(random, 0, 10),
        upload: between(random, 0, 64 * 1024)
      }))
      let next = 0
      const server = yield* serveQuickly((conn) =>
        Effect.gen(function* () {
          const plan = plans[next++ % plans.length]!
          let read = 0
          while (read < plan.reads) {
            const chunk = yield* conn.read
            if (chunk._tag === "None") break
            read += chunk.value.length
          }
          // The write and the half-close go on in fibers of their own while the handler fails.
          yield* Effect.forkScoped(
            plan.ends
              ? Effect.andThen(conn.write(new Uint8Array(plan.writes)), conn.end)
              : conn.write(new Uint8Array(plan.writes)),
            {
              startImmediately: true
            }
          )
          for (let i = 0; i < plan.failAfterYields; i++) yield* Effect.yieldNow
          return yield* Effect.fail(new Error("the handler gives up"))
        })
      )
      const clients = plans.map((plan) =>
        Effect.scoped(
          Effect.gen(function* () {
            const conn = yield* Tcp.connect({ port: portOf(server) })
            return yield* Duplex.exchange(conn, Stream.make(new Uint8Array(plan.upload)), Sink.drain)
          })
        ).pipe(within("3 seconds", "a client of a failing handler"), Effect.exit)
      )
      const exits = yield* withLeakCheck(Effect.all(clients, { concurrency: 10 }), {
        label: `300 failing handlers (seed ${seed})`
      })
      const stats = yield* server.stats
      assert.strictEqual(stats.failed, 300, JSON.stringify(stats))
      // Every client saw its connection end (a reset, mostly), none hung.
      for (const exit of exits) if (Exit.isFailure(exit)) assert.notInclude(String(exit.cause), "still waiting")
    })
  )

  live("200 connections ended by the idle timeout, some of them just as the handler half-closes", () =>
    Effect.gen(function* () {
      const random = unit(seed + 3)
      const idleMillis = 20
      const plans = Array.from({ length: 200 }, () => ({
        // Half-close at about the moment the idle timer fires: the timeout must not wait on the FIN.
        endAfterMillis: random() < 0.8 ? idleMillis - 4 + random() * 8 : undefined,
        clientReadsAfterMillis: random() * 40
      }))
      let next = 0
      const server = yield* serveQuickly(
        (conn) =>
          Effect.gen(function* () {
            const plan = plans[next++ % plans.length]!
            if (plan.endAfterMillis !== undefined) {
              yield* Effect.forkScoped(Effect.andThen(Effect.sleep(plan.endAfterMillis), conn.end), {
                startImmediately: true
              })
            }
            // Waits for bytes that never come.
            return yield* Stream.runDrain(conn.readable)
          }),
        { idleTimeout: idleMillis }
      )
      const clients = plans.map((plan) =>
        Effect.scoped(
          Effect.gen(function* () {
            const conn = yield* Tcp.connect({ port: portOf(server) })
            yield* Effect.sleep(plan.clientReadsAfterMillis)
            yield* Stream.runDrain(conn.readable)
            // After the server's FIN, stay (and stay silent) until its idle timeout has fired: a reset from
            // here would end the handler first.
            yield* Effect.sleep(4 * idleMillis)
          })
        ).pipe(within("3 seconds", "an idle client"), Effect.exit)
      )
      const exits = yield* withLeakCheck(Effect.all(clients, { concurrency: 25 }), {
        label: `200 idle timeouts (seed ${seed})`
      })
      const stats = yield* server.stats
      assert.strictEqual(stats.idleTimeouts + stats.failed, 200, JSON.stringify(stats))
      assert.isAbove(stats.idleTimeouts, 150, JSON.stringify(stats))
      for (const exit of exits) if (Exit.isFailure(exit)) assert.notInclude(String(exit.cause), "still waiting")
    })
  )

  live("300 relayed connections whose clients reset at random points, or half-close and then reset", () =>
    Effect.gen(function* () {
      const random = unit(seed + 4)
      // An upstream that talks without waiting (a download): its bytes are on their way to the client when
      // the client's FIN and reset reach the relay.
      const talker = (conn: Duplex.Duplex) =>
        Effect.gen(function* () {
          yield* Effect.forkScoped(Stream.runDrain(conn.readable), { startImmediately: true })
          const chunk = new Uint8Array(16 * 1024)
          for (let i = 0; i < 32; i++) yield* conn.write(chunk)
          yield* conn.end
        })
      const upstream = yield* serveQuickly(talker)
      // A relay: each connection spliced to a connection of its own to the upstream.
      const relay = yield* serveQuickly((conn) =>
        Effect.scoped(Effect.flatMap(Tcp.connect({ port: portOf(upstream) }), (up) => Duplex.splice(conn, up)))
      )
      const plans = Array.from({ length: 300 }, () => {
        const halfCloses = random() < 0.7
        return {
          bytes: between(random, 0, 512 * 1024),
          endAfterMillis: halfCloses ? random() * 2 : undefined,
          // Half-closed clients mostly reset as soon as their FIN has left, while the relay passes it on.
          resetAfterMillis: halfCloses ? (random() < 0.6 ? 0 : random() * 2) : random() * 5
        }
      })
      const outcomes = yield* withLeakCheck(
        Effect.forEach(plans, (plan) => rawPeer(portOf(relay), randomBytes(plan.bytes, plan.bytes), plan), {
          concurrency: 10
        }),
        { label: `300 reset relay clients (seed ${seed})` }
      )
      assert.strictEqual(tally(outcomes)["timedOut"] ?? 0, 0, JSON.stringify(tally(outcomes)))
    })
  )
})
