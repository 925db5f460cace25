/**
 * Stress 3: the fault matrix. Against `Echo.serve` and `Proxy.serve` (in front of an `Echo.serve`):
 * hundreds of clients that reset mid-stream, that half-close and vanish without reading, a flood far past
 * `maxConnections`; behind the proxy, an upstream that accepts and never answers, one that never accepts,
 * and one that resets. In every case each connection ends in a typed way (an ending, a `DuplexError`
 * reason, a `Refused` or `UpstreamConnectFailed` event; never a defect), a well-behaved client running at
 * the same time gets its echo byte-exact, and within a second of the last client's end the process holds
 * the fds and handles it held before, with no socket left half-closed. A peer that never reads is cut by
 * the servers' `sendTimeout`, one that trickles by their `minRate`.
 */
import { assert, describe } from "@effect/vitest"
import { Deferred, Effect, Fiber, Option, Scope } from "effect"
import { Echo, Proxy, Tcp } from "fullduplex"
import { assertNoLeaks, randomBytes, resources } from "fullduplex/testkit"
import * as net from "node:net"
import { eventually, unacceptingPort, within } from "../helpers.js"
import { rounds, type ScenarioId, scaled, SEED, sized } from "./profile.js"
import {
  addCounts,
  type Behaviour,
  between,
  describeOutcome,
  echoClient,
  type EchoOutcome,
  Endings,
  Gauge,
  isExactEcho,
  KiB,
  live,
  MiB,
  mib,
  noHalfClosedSockets,
  openFds,
  prefixed,
  report,
  rssSampler,
  slice,
  tally,
  unit
} from "./support.js"

/** Misbehaving clients per server per round. */
const CLIENTS = scaled(sized({ ci: 500, soak: 1000 }))
/** What each misbehaving client uploads. */
const UPLOAD_BYTES = 1 * MiB
/** What the well-behaved client running meanwhile uploads, and checks. */
const GOOD_BYTES = 4 * MiB
/** Connections of the flood past `maxConnections`. */
const FLOOD = scaled(sized({ ci: 2000, soak: 5000 }))
const MAX_CONNECTIONS = 32

const block = randomBytes(GOOD_BYTES + 4 * MiB, SEED)
const portOf = (address: Tcp.Address): number => ("port" in address ? address.port : -1)

/**
 * A server under test: where it listens, its counters and its events, and every port it owns. `role`:
 * whether faulty clients run against it, the well-behaved client, or both.
 */
interface Target {
  readonly name: string
  readonly role: "faulty" | "good" | "both"
  readonly port: number
  readonly stats: Effect.Effect<Tcp.ServerStats>
  readonly endings: Endings
  /** The echo behind a proxy, whose own connections are counted too. */
  readonly upstream?: { readonly stats: Effect.Effect<Tcp.ServerStats>; readonly endings: Endings } | undefined
  readonly ports: ReadonlyArray<number>
}

const echoTarget = (options: Partial<Tcp.ServeOptions> = {}): Effect.Effect<Target, unknown, Scope.Scope> =>
  Effect.gen(function* () {
    const endings = new Endings()
    const server = yield* Echo.serve({
      host: "127.0.0.1",
      port: 0,
      shutdownGrace: 0,
      onEvent: endings.onEvent,
      ...options
    })
    const port = portOf(server.address)
    return { name: "Echo.serve", role: "both", port, stats: server.stats, endings, ports: [port] }
  })

const proxyTarget = (
  listen: Partial<Tcp.ServeOptions> = {},
  target?: Tcp.ConnectOptions
): Effect.Effect<Target, unknown, Scope.Scope> =>
  Effect.gen(function* () {
    const upstreamEndings = new Endings()
    const upstream =
      target === undefined
        ? yield* Echo.serve({ host: "127.0.0.1", port: 0, shutdownGrace: 0, onEvent: upstreamEndings.onEvent })
        : undefined
    const endings = new Endings()
    const proxy = yield* Proxy.serve({
      listen: { host: "127.0.0.1", port: 0, shutdownGrace: 0, ...listen },
      target: target ?? upstream!.address,
      onEvent: endings.onEvent
    })
    const port = portOf(proxy.address)
    return {
      name: "Proxy.serve",
      role: target === undefined ? "both" : "faulty",
      port,
      stats: proxy.stats,
      endings,
      upstream: upstream === undefined ? undefined : { stats: upstream.stats, endings: upstreamEndings },
      ports: [port, upstream === undefined ? portOf(target!) : portOf(upstream.address)]
    }
  })

/** The well-behaved client: a 4 MiB echo, asserted byte-exact. */
const goodClient = (target: Target, index: number, gauge?: Gauge) =>
  Effect.gen(function* () {
    const payload = slice(block, GOOD_BYTES, index)
    const o = yield* echoClient(target.port, payload, { timeoutMillis: 20_000, ...(gauge ? { gauge } : {}) })
    assert.isTrue(isExactEcho(o, GOOD_BYTES), `the well-behaved client of ${target.name}: ${describeOutcome(o)}`)
    return o
  })

/** Waits until no connection of the target (or of its upstream) is active. */
const settled = (target: Target, what: string) =>
  Effect.gen(function* () {
    yield* eventually(`${what}: ${target.name} has no connection left`, target.stats, (s) => s.active === 0, 5000)
    if (target.upstream !== undefined) {
      yield* eventually(
        `${what}: the proxy's upstream has no connection left`,
        target.upstream.stats,
        (s) => s.active === 0,
        5000
      )
    }
  })

const outcomeKey = (o: EchoOutcome, length: number): string =>
  isExactEcho(o, length)
    ? "exact"
    : o.mismatchAt !== undefined
      ? "WRONG BYTES"
      : (o.error ?? (o.eof ? "eof" : "closed"))

/**
 * One fault scenario: `targets` made once; each round runs `faulty` clients against every target at the
 * same time as a well-behaved client; then every connection has ended in a typed way, the process is back
 * at its fds and handles within a second, and no socket is half-closed. Reports the summary.
 */
const faultScenario = (
  id: ScenarioId,
  makeTargets: Effect.Effect<ReadonlyArray<Target>, unknown, Scope.Scope>,
  faulty: (
    target: Target,
    round: number,
    gauge: Gauge
  ) => Effect.Effect<{ readonly outcomes: ReadonlyArray<string>; readonly bytes: number }, unknown, Scope.Scope>,
  checks: (targets: ReadonlyArray<Target>) => Effect.Effect<void, unknown> = () => Effect.void
) =>
  Effect.gen(function* () {
    const rss = yield* rssSampler
    const targets = yield* makeTargets
    const before = resources()
    const started = Date.now()
    const clientEnds: Record<string, number> = {}
    /** Client connections open at once, over every target. */
    const gauge = new Gauge()
    let bytes = 0
    const done = yield* rounds(id, (round) =>
      Effect.gen(function* () {
        yield* Effect.forEach(
          targets,
          (target) =>
            Effect.scoped(
              Effect.gen(function* () {
                const good =
                  target.role === "faulty"
                    ? undefined
                    : yield* Effect.forkChild(goodClient(target, round, gauge), { startImmediately: true })
                if (target.role !== "good") {
                  const result = yield* faulty(target, round, gauge)
                  addCounts(clientEnds, tally(result.outcomes))
                  bytes += result.bytes
                }
                if (good !== undefined) {
                  const o = yield* Fiber.join(good)
                  bytes += o.sent + o.received
                  addCounts(clientEnds, { [`${target.name}: well-behaved exact`]: 1 })
                }
              })
            ),
          { concurrency: "unbounded", discard: true }
        )
        for (const target of targets) yield* settled(target, `round ${round}`)
        // Within about a second of the last client's end, every fd and handle is back.
        yield* assertNoLeaks(before, { timeout: "1 second", label: `${id}, round ${round}` })
        yield* noHalfClosedSockets(targets.flatMap((t) => t.ports))
      })
    )
    yield* checks(targets)
    const endings: Record<string, number> = {}
    for (const t of targets) {
      addCounts(endings, prefixed(t.name, t.endings.counts))
      if (t.upstream !== undefined) {
        addCounts(endings, prefixed("upstream", t.upstream.endings.counts))
      }
    }
    const connections = (yield* Effect.forEach(targets, (t) => t.stats)).reduce((n, s) => n + s.accepted + s.refused, 0)
    yield* report({
      scenario: id,
      rounds: done.length,
      connections,
      peakConcurrent: gauge.peak,
      bytes,
      endings: { ...endings, ...prefixed("client", clientEnds) },
      peakRssMiB: mib(rss.peakBytes()),
      fdsBefore: before.fds ?? -1,
      fdsAfter: openFds(),
      millis: Date.now() - started
    })
    for (const t of targets) {
      t.endings.assertTyped(t.name)
      t.upstream?.endings.assertTyped(`${t.name}'s upstream`)
    }
    assert.notProperty(clientEnds, "WRONG BYTES", "a client got bytes that were not its echo")
  })

const echoAndProxy = Effect.all([echoTarget(), proxyTarget()])

/** `CLIENTS` misbehaving echo clients against `target`, 50 at a time, each with its own misbehaviour. */
const misbehaving = (target: Target, gauge: Gauge, seed: number, behaviour: (random: () => number) => Behaviour) =>
  Effect.gen(function* () {
    const random = unit(seed)
    const plans = Array.from({ length: CLIENTS }, () => behaviour(random))
    const outcomes = yield* Effect.forEach(
      plans,
      (plan, i) =>
        echoClient(target.port, slice(block, UPLOAD_BYTES, i), { behaviour: plan, timeoutMillis: 10_000, gauge }),
      { concurrency: 50 }
    )
    assert.notInclude(
      outcomes.map((o) => o.error),
      "timeout",
      `a misbehaving client of ${target.name} was left hanging`
    )
    return {
      outcomes: outcomes.map((o) => outcomeKey(o, UPLOAD_BYTES)),
      bytes: outcomes.reduce((n, o) => n + o.sent + o.received, 0)
    }
  })

describe(`Stress: the fault matrix against Echo.serve and Proxy.serve (seed ${SEED})`, () => {
  live(
    `${CLIENTS} clients per server that reset (RST) at a random point, from the connect to 1 MiB in`,
    { id: "fault-resets", seconds: { ci: 40, soak: 60 } },
    () =>
      faultScenario("fault-resets", echoAndProxy, (target, round, gauge) =>
        misbehaving(target, gauge, SEED + round * 10 + target.port, (random) => ({
          _tag: "reset",
          // One in ten at once, on connecting; the rest once a random part of the echo has come back.
          afterBytes: random() < 0.1 ? 0 : between(random, 1, UPLOAD_BYTES - 1)
        }))
      )
  )

  live(
    `${CLIENTS} clients per server that upload part of 1 MiB, half-close and vanish without reading a byte`,
    { id: "fault-vanish", seconds: { ci: 40, soak: 60 } },
    () =>
      faultScenario("fault-vanish", echoAndProxy, (target, round, gauge) =>
        misbehaving(target, gauge, SEED + round * 10 + target.port + 1, (random) => ({
          _tag: "vanish",
          afterBytes: random() < 0.1 ? 0 : between(random, 1, UPLOAD_BYTES)
        }))
      )
  )

  live(
    `a flood of ${FLOOD} connections past maxConnections (${MAX_CONNECTIONS}) is refused, counted and reported, ` +
      `while the connections admitted are served`,
    { id: "fault-flood", seconds: { ci: 40, soak: 60 } },
    () =>
      faultScenario(
        "fault-flood",
        // The well-behaved client here is the talker below, admitted before the flood: one started at the
        // same time as the flood would be refused with it.
        Effect.map(
          Effect.all([
            echoTarget({ maxConnections: MAX_CONNECTIONS }),
            proxyTarget({ maxConnections: MAX_CONNECTIONS })
          ]),
          (targets) => targets.map((t): Target => ({ ...t, role: "faulty" }))
        ),
        (target, _round, gauge) =>
          Effect.gen(function* () {
            const refusedBefore = (yield* target.stats).refused
            // Every slot but one taken by idle clients; the last is the talker's, which keeps talking (each
            // echo checked) until the flood is over.
            yield* Effect.forEach(Array.from({ length: MAX_CONNECTIONS - 1 }), () => idleHolder(target.port), {
              concurrency: 8,
              discard: true
            })
            const floodOver = yield* Deferred.make<void>()
            const talker = yield* Effect.forkChild(talkUntil(target, Deferred.await(floodOver)), {
              startImmediately: true
            })
            yield* eventually(
              `${target.name}: every slot taken`,
              target.stats,
              (s) => s.active === MAX_CONNECTIONS,
              5000
            )
            const flood = yield* Effect.forEach(
              Array.from({ length: FLOOD }, (_, i) => i),
              (i) => echoClient(target.port, slice(block, KiB, i), { timeoutMillis: 10_000, gauge }),
              { concurrency: 200 }
            )
            yield* Deferred.succeed(floodOver, undefined)
            const talked = yield* Fiber.join(talker)
            const s = yield* target.stats
            // Every flood connection was refused (no slot was ever free while it lasted), none got an echo.
            assert.strictEqual(s.refused - refusedBefore, FLOOD, `${target.name}: ${JSON.stringify(s)}`)
            assert.isTrue(
              flood.every((o) => o.received === 0 && o.error !== "timeout"),
              `${target.name}: a refused client got bytes or hung: ${flood
                .filter((o) => o.received > 0 || o.error === "timeout")
                .map(describeOutcome)
                .slice(0, 3)
                .join("; ")}`
            )
            yield* eventually(
              `${target.name}: a Refused event per refused connection`,
              Effect.sync(() => target.endings.refused),
              (n) => n === s.refused,
              5000
            )
            return {
              outcomes: [
                ...flood.map((o) => `refused: ${o.error ?? (o.eof ? "eof" : "closed")}`),
                `${target.name}: talker exact`
              ],
              bytes: flood.reduce((n, o) => n + o.sent, 0) + talked
            }
          })
      )
  )

  live(
    "behind the proxy, an upstream that accepts and never answers is cut by the idle timeout, and one that " +
      "never accepts by the connect timeout (UpstreamConnectFailed ETIMEDOUT, the client closed cleanly)",
    { id: "fault-silent-upstream", seconds: { ci: 40, soak: 60 } },
    () =>
      faultScenario(
        "fault-silent-upstream",
        Effect.gen(function* () {
          const silent = yield* silentUpstream
          const unaccepting = yield* unacceptingPort
          return [
            {
              ...(yield* proxyTarget({ idleTimeout: "300 millis" }, { port: silent })),
              name: "proxy to a silent upstream"
            },
            {
              ...(yield* proxyTarget({}, { port: unaccepting, connectTimeout: "300 millis" })),
              name: "proxy to an upstream that never accepts"
            },
            // The well-behaved client meanwhile: through a proxy of its own, to a real echo.
            { ...(yield* proxyTarget()), role: "good" as const }
          ]
        }),
        (target, round, gauge) =>
          Effect.gen(function* () {
            const n = Math.max(1, Math.floor(CLIENTS / 4))
            const silent = target.name === "proxy to a silent upstream"
            const outcomes = yield* Effect.forEach(
              Array.from({ length: n }, (_, i) => i),
              (i) =>
                // No half-close: the client sends its request and waits for an answer that never comes.
                echoClient(target.port, slice(block, 64 * KiB, round * n + i), {
                  timeoutMillis: 10_000,
                  halfClose: !silent,
                  gauge
                }),
              { concurrency: "unbounded" }
            )
            const bad = outcomes.filter((o) =>
              silent
                ? o.received !== 0 || o.error === "timeout" || o.error === undefined
                : o.received !== 0 || o.error !== undefined || !o.eof
            )
            assert.deepStrictEqual(
              bad.slice(0, 3).map(describeOutcome),
              [],
              `${target.name}: ${silent ? "a client not cut (reset) by the idle timeout" : "a client not closed cleanly (EOF)"}`
            )
            yield* eventually(
              `${target.name}: every connection reported`,
              Effect.sync(() => target.endings.closed),
              (closed) => closed >= (round + 1) * n,
              5000
            )
            return {
              outcomes: outcomes.map((o) => `${target.name}: ${outcomeKey(o, 64 * KiB)}`),
              bytes: outcomes.reduce((b, o) => b + o.sent, 0)
            }
          }),
        (targets) =>
          Effect.sync(() => {
            const [silent, unaccepting] = targets
            assert.deepStrictEqual(
              Object.keys(silent!.endings.counts),
              ["idleTimeout"],
              `every connection to the silent upstream ended by the idle timeout: ${JSON.stringify(silent!.endings.counts)}`
            )
            assert.deepStrictEqual(
              unaccepting!.endings.counts,
              {
                "UpstreamConnectFailed: ConnectFailed ETIMEDOUT": unaccepting!.endings.closed,
                completed: unaccepting!.endings.closed
              },
              "every connect to the upstream that never accepts timed out, and its client was closed cleanly"
            )
          })
      )
  )

  live(
    "behind the proxy, an upstream that resets at a random point (on accept, mid-upload, after answering) " +
      "fails the connection with Broken, and both legs are freed",
    { id: "fault-upstream-reset", seconds: { ci: 40, soak: 60 } },
    () =>
      faultScenario(
        "fault-upstream-reset",
        Effect.gen(function* () {
          const resetting = yield* resettingUpstream(SEED)
          return [
            { ...(yield* proxyTarget({}, { port: resetting })), name: "proxy to a resetting upstream" },
            { ...(yield* proxyTarget()), role: "good" as const }
          ]
        }),
        (target, _round, gauge) =>
          Effect.gen(function* () {
            const outcomes = yield* Effect.forEach(
              Array.from({ length: CLIENTS }, (_, i) => i),
              (i) => echoClient(target.port, slice(block, UPLOAD_BYTES, i), { timeoutMillis: 10_000, gauge }),
              { concurrency: 50 }
            )
            const bad = outcomes.filter(
              (o) => o.error === "timeout" || isExactEcho(o, UPLOAD_BYTES) || (o.error === undefined && !o.eof)
            )
            assert.deepStrictEqual(
              bad.slice(0, 3).map(describeOutcome),
              [],
              "a client of the resetting upstream hung or got a whole echo"
            )
            return {
              outcomes: outcomes.map((o) => outcomeKey(o, UPLOAD_BYTES)),
              bytes: outcomes.reduce((n, o) => n + o.sent + o.received, 0)
            }
          }),
        (targets) =>
          Effect.sync(() => {
            const counts = targets[0]!.endings.counts
            const failures = Object.keys(counts).filter((k) => k.startsWith("failed"))
            assert.isAbove(failures.length, 0, `no connection failed: ${JSON.stringify(counts)}`)
            // A reset on accept can beat the connect's own completion: then it is the connect that fails.
            const expected = ["completed", "failed: Broken", "UpstreamConnectFailed: ConnectFailed ECONNRESET"]
            for (const k of Object.keys(counts)) {
              assert.isTrue(
                expected.some((e) => k.startsWith(e)),
                `an ending other than Broken or a reset connect: ${k}`
              )
            }
          })
      )
  )

  // ---- peers that never read, and peers that trickle: the servers' sendTimeout and minRate -----------------

  live(
    "a client that writes 16 MiB and never reads is cut by sendTimeout, while a well-behaved client is served",
    { seconds: { ci: 30, soak: 30 } },
    () =>
      Effect.gen(function* () {
        const endings = new Endings()
        const server = yield* Echo.serve({
          host: "127.0.0.1",
          port: 0,
          shutdownGrace: 0,
          sendTimeout: "500 millis",
          onEvent: endings.onEvent
        })
        const port = portOf(server.address)
        const target: Target = { name: "Echo.serve", role: "both", port, stats: server.stats, endings, ports: [port] }
        const before = resources()
        // Never reads: the echo fills its receive buffer, then the server's send buffer, then the server waits.
        // 16 MiB, not 4: the server's send buffer alone grows to 4 MiB on Linux (`net.ipv4.tcp_wmem`), and a
        // 4 MiB echo fits in the kernel without a write of the server's ever waiting.
        const deaf = yield* Effect.forkChild(neverReads(port, 16 * MiB), { startImmediately: true })
        yield* goodClient(target, 0)
        const outcome = yield* Fiber.join(deaf).pipe(within("10 seconds", "the deaf client's end"))
        assert.oneOf(outcome, ["ECONNRESET", "EPIPE"], "the deaf client was cut")
        yield* eventually(
          "the deaf client's ConnectionClosed",
          Effect.sync(() => endings.counts),
          (c) => c["sendTimeout: Timeout"] === 1
        )
        yield* settled(target, "after the deaf client")
        yield* assertNoLeaks(before, { timeout: "1 second" })
        endings.assertTyped("Echo.serve")
      })
  )

  live(
    "a client that sends 1 byte every 200 ms is cut by minRate (it never goes idle), while a well-behaved client is served",
    { seconds: { ci: 30, soak: 30 } },
    () =>
      Effect.gen(function* () {
        const endings = new Endings()
        const server = yield* Echo.serve({
          host: "127.0.0.1",
          port: 0,
          shutdownGrace: 0,
          idleTimeout: "1 second",
          minRate: { bytes: 1024, window: "2 seconds" },
          onEvent: endings.onEvent
        })
        const port = portOf(server.address)
        const target: Target = { name: "Echo.serve", role: "both", port, stats: server.stats, endings, ports: [port] }
        const before = resources()
        // 1 byte every 200 ms: 5 B/s, never idle for the 1 s idle timeout, far below 1 KiB per 2 s.
        const trickler = yield* Effect.forkChild(trickles(port, 200), { startImmediately: true })
        yield* goodClient(target, 1)
        const outcome = yield* Fiber.join(trickler).pipe(within("10 seconds", "the trickling client's end"))
        assert.oneOf(outcome.error, ["ECONNRESET", "EPIPE"], `the trickler was cut after ${outcome.sent} bytes`)
        assert.isBelow(outcome.sent, 30, "the trickler was cut within about one window")
        yield* eventually(
          "the trickler's ConnectionClosed",
          Effect.sync(() => endings.counts),
          (c) => c["tooSlow: Timeout"] === 1
        )
        yield* settled(target, "after the trickler")
        yield* assertNoLeaks(before, { timeout: "1 second" })
        endings.assertTyped("Echo.serve")
      })
  )
})

// ---- hostile peers ---------------------------------------------------------------------------------------

/** An idle client holding a slot of `port` until the scope closes. */
const idleHolder = (port: number): Effect.Effect<void, Error, Scope.Scope> =>
  Effect.asVoid(
    Effect.acquireRelease(
      Effect.callback<net.Socket, Error>((resume) => {
        const socket = net.connect({ host: "127.0.0.1", port, allowHalfOpen: true })
        socket.on("error", () => {})
        socket.once("connect", () => resume(Effect.succeed(socket)))
        socket.once("close", () => resume(Effect.fail(new Error("an idle holder was closed before it connected"))))
        return Effect.sync(() => socket.destroy())
      }).pipe(within("5 seconds", "an idle holder's connect")),
      (socket) => Effect.sync(() => socket.end())
    )
  )

/**
 * A client that keeps a slot busy: 64 KiB out, its echo back (checked), again and again until `until`
 * completes; returns the bytes moved.
 */
const talkUntil = (target: Target, until: Effect.Effect<void>) =>
  Effect.scoped(
    Effect.gen(function* () {
      const conn = yield* Tcp.connect({ port: target.port, label: "talker" })
      const done = yield* Effect.forkChild(until, { startImmediately: true })
      let moved = 0
      for (let i = 0; done.pollUnsafe() === undefined || i === 0; i++) {
        const piece = slice(block, 64 * KiB, i)
        yield* conn.write(piece)
        let got = 0
        while (got < piece.length) {
          const chunk = yield* conn.read
          if (Option.isNone(chunk)) return yield* Effect.fail(new Error(`the talker got EOF after ${got} bytes`))
          const expected = piece.subarray(got, got + chunk.value.length)
          assert.isTrue(Buffer.from(chunk.value).equals(expected), `the talker's echo ${i} differs`)
          got += chunk.value.length
        }
        moved += 2 * piece.length
      }
      yield* conn.end
      while (Option.isSome(yield* conn.read));
      return moved
    })
  ).pipe(within("30 seconds", `the talker of ${target.name}`))

/** An upstream that accepts, reads and discards, and never answers nor closes: the proxy must cut it. */
const silentUpstream: Effect.Effect<number, Error, Scope.Scope> = rawServer((socket) => {
  socket.on("data", () => {})
})

/**
 * An upstream that resets each connection at a point drawn from `seed`: on accept, after part of the
 * upload, or after answering part of it.
 */
const resettingUpstream = (seed: number): Effect.Effect<number, Error, Scope.Scope> => {
  const random = unit(seed)
  return rawServer((socket) => {
    const r = random()
    if (r < 0.2) return void socket.resetAndDestroy()
    const after = between(random, 1, UPLOAD_BYTES - 1)
    const answers = r > 0.6
    let read = 0
    socket.on("data", (chunk: Buffer) => {
      read += chunk.length
      if (answers) socket.write(chunk)
      if (read >= after && !socket.destroyed) socket.resetAndDestroy()
    })
  })
}

/**
 * A raw `net` server on 127.0.0.1 (half-open allowed) giving each connection to `onSocket`; closed, with
 * every socket it accepted destroyed, when the scope closes. Resolves with its port.
 */
function rawServer(onSocket: (socket: net.Socket) => void): Effect.Effect<number, Error, Scope.Scope> {
  return Effect.gen(function* () {
    const sockets = new Set<net.Socket>()
    const server = net.createServer({ allowHalfOpen: true }, (socket) => {
      sockets.add(socket)
      socket.on("error", () => {})
      socket.once("close", () => sockets.delete(socket))
      onSocket(socket)
    })
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        server.close()
        for (const s of sockets) s.destroy()
      })
    )
    return yield* Effect.callback<number>((resume) => {
      server.listen(0, "127.0.0.1", () => resume(Effect.succeed((server.address() as net.AddressInfo).port)))
    }).pipe(within("5 seconds", "a raw upstream's listen"))
  })
}

/**
 * A client that writes `bytes` and never reads: resolves with the error that ended it, or "closed". A
 * socket that does not read does not see a reset either, so once its upload is out it probes with one
 * byte every 50 ms: the first write after the server's reset fails.
 */
const neverReads = (port: number, bytes: number): Effect.Effect<string> =>
  Effect.callback<string>((resume) => {
    const socket = net.connect({ host: "127.0.0.1", port, allowHalfOpen: true })
    socket.pause()
    let error: string | undefined
    let probe: ReturnType<typeof setInterval> | undefined
    socket.on("error", (e: NodeJS.ErrnoException) => void (error ??= e.code ?? e.message))
    socket.once("connect", () => {
      for (let at = 0; at < bytes; at += block.length)
        socket.write(block.subarray(0, Math.min(block.length, bytes - at)))
      socket.write(new Uint8Array(0), () => {
        probe = setInterval(() => socket.write(block.subarray(0, 1)), 50)
      })
    })
    socket.once("close", () => {
      clearInterval(probe)
      resume(Effect.succeed(error ?? "closed"))
    })
    return Effect.sync(() => {
      clearInterval(probe)
      socket.destroy()
    })
  })

/** A client that sends one byte every `everyMillis` and reads what comes back, until it is cut. */
const trickles = (port: number, everyMillis: number): Effect.Effect<{ sent: number; error: string | undefined }> =>
  Effect.callback<{ sent: number; error: string | undefined }>((resume) => {
    const socket = net.connect({ host: "127.0.0.1", port, allowHalfOpen: true })
    let sent = 0
    let error: string | undefined
    let timer: ReturnType<typeof setInterval> | undefined
    socket.on("error", (e: NodeJS.ErrnoException) => void (error ??= e.code ?? e.message))
    socket.on("data", () => {})
    socket.once("connect", () => {
      timer = setInterval(() => {
        if (!socket.destroyed) socket.write(block.subarray(sent, ++sent))
      }, everyMillis)
    })
    socket.once("close", () => {
      clearInterval(timer)
      resume(Effect.succeed({ sent, error }))
    })
    return Effect.sync(() => {
      clearInterval(timer)
      socket.destroy()
    })
  })
