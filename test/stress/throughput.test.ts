/**
 * Stress 1: a thousand clients at once, each uploading 1 MiB and reading its echo, through `Echo.serve`
 * and through `Proxy.serve` in front of an echo: every byte comes back where it belongs, every connection
 * closes cleanly, the process gives back every fd and handle, and its peak RSS stays under a stated bound.
 *
 * The clients are raw `net` sockets that compare each byte back with their upload as it arrives; each
 * sends a different slice of one random block, so bytes crossing from one connection to another show.
 * Sizes: see `profile.ts` (`ci`: 1000 × 1 MiB once; `soak`: more clients, more bytes, round after round).
 */
import { assert, describe } from "@effect/vitest"
import { Effect, type Scope } from "effect"
import { Echo, Proxy, type Tcp } from "fullduplex"
import { assertNoLeaks, randomBytes, resources } from "fullduplex/testkit"
import { eventually } from "../helpers.js"
import { rounds, type ScenarioId, scaled, SEED, sized } from "./profile.js"
import {
  addCounts,
  describeOutcome,
  echoClient,
  Endings,
  Gauge,
  isExactEcho,
  live,
  MiB,
  mib,
  openFds,
  prefixed,
  report,
  rssSampler,
  slice,
  tally
} from "./support.js"

const CLIENTS = scaled(sized({ ci: 1000, soak: 2000 }))
const BYTES = sized({ ci: 1 * MiB, soak: 1 * MiB })

/**
 * The peak RSS allowed, in bytes: 400 MiB for the process (Node, vitest, Effect and the test's own
 * payload block), plus 512 KiB per client. A server that buffered whole uploads would need at least
 * 1 MiB per client (2 through the proxy) on top; the measured figure is in the summary.
 */
const RSS_BOUND_BYTES = 400 * MiB + CLIENTS * 512 * 1024

const portOf = (address: Tcp.Address): number => ("port" in address ? address.port : -1)

/**
 * The scenario against a server listening on `port` whose `stats` count its connections: every round
 * runs every client at once, checks every echo and every connection's end, then that nothing is left.
 */
const throughput = (
  id: ScenarioId,
  setup: Effect.Effect<
    { readonly port: number; readonly stats: Effect.Effect<Tcp.ServerStats>; readonly endings: ReadonlyArray<Endings> },
    unknown,
    Scope.Scope
  >
) =>
  Effect.gen(function* () {
    const block = randomBytes(BYTES + 4 * MiB, SEED)
    const rss = yield* rssSampler
    const { port, stats, endings } = yield* setup
    const before = resources()
    const started = Date.now()
    let peak = 0
    const clientEnds: Record<string, number> = {}
    const done = yield* rounds(id, (round) =>
      Effect.gen(function* () {
        const gauge = new Gauge()
        const completedBefore = (yield* stats).completed
        const outcomes = yield* Effect.forEach(
          Array.from({ length: CLIENTS }, (_, i) => i),
          (i) => echoClient(port, slice(block, BYTES, round * CLIENTS + i), { gauge, timeoutMillis: 120_000 }),
          { concurrency: "unbounded" }
        )
        peak = Math.max(peak, gauge.peak)
        addCounts(clientEnds, tally(outcomes.map((o) => (isExactEcho(o, BYTES) ? "exact" : (o.error ?? "inexact")))))
        const bad = outcomes.flatMap((o, i) => (isExactEcho(o, BYTES) ? [] : [`client ${i}: ${describeOutcome(o)}`]))
        assert.deepStrictEqual(bad.slice(0, 5), [], `round ${round}: ${bad.length} of ${CLIENTS} clients wrong`)
        // Every connection closed cleanly on the server's side too.
        yield* eventually(
          `round ${round}: every connection completed on the server`,
          stats,
          (s) => s.completed - completedBefore === CLIENTS && s.active === 0,
          10_000
        )
        return outcomes.length
      })
    )
    yield* assertNoLeaks(before, { timeout: "2 seconds", label: `${id}: after ${done.length} round(s)` })
    const peakRss = rss.peakBytes()
    const s = yield* stats
    yield* report({
      scenario: id,
      rounds: done.length,
      connections: s.accepted,
      peakConcurrent: peak,
      bytes: 2 * BYTES * CLIENTS * done.length,
      endings: {
        ...addCounts({}, ...endings.map((e, i) => prefixed(i === 0 ? "server" : "upstream", e.counts))),
        ...prefixed("client", clientEnds)
      },
      peakRssMiB: mib(peakRss),
      fdsBefore: before.fds ?? -1,
      fdsAfter: openFds(),
      millis: Date.now() - started,
      extra: { clients: CLIENTS, bytesPerClient: BYTES, rssBoundMiB: mib(RSS_BOUND_BYTES), refused: s.refused }
    })
    assert.strictEqual(s.failed + s.idleTimeouts + s.shutdownAborts + s.refused, 0, JSON.stringify(s))
    for (const e of endings) e.assertTyped(id)
    assert.isAtMost(
      peakRss,
      RSS_BOUND_BYTES,
      `peak RSS ${mib(peakRss)} MiB above the bound of ${mib(RSS_BOUND_BYTES)} MiB (${CLIENTS} clients × ${mib(BYTES)} MiB)`
    )
  })

/** Room for every client at once, and an accept queue that holds them all while they connect. */
const limits = { maxConnections: CLIENTS + 64, backlog: 4096, shutdownGrace: 0 } as const

describe(`Stress: ${CLIENTS} concurrent clients × ${mib(BYTES)} MiB (seed ${SEED})`, () => {
  live(
    `through Echo.serve: every echo byte-exact, every connection completed, nothing left, RSS bounded`,
    { id: "echo-throughput", seconds: { ci: 60, soak: 120 } },
    () =>
      throughput(
        "echo-throughput",
        Effect.gen(function* () {
          const endings = new Endings()
          const server = yield* Echo.serve({ host: "127.0.0.1", port: 0, ...limits, onEvent: endings.onEvent })
          return { port: portOf(server.address), stats: server.stats, endings: [endings] }
        })
      )
  )

  live(
    `through Proxy.serve to an Echo.serve upstream: every echo byte-exact, nothing left, RSS bounded`,
    { id: "proxy-throughput", seconds: { ci: 90, soak: 180 } },
    () =>
      throughput(
        "proxy-throughput",
        Effect.gen(function* () {
          const upstreamEndings = new Endings()
          const upstream = yield* Echo.serve({
            host: "127.0.0.1",
            port: 0,
            ...limits,
            onEvent: upstreamEndings.onEvent
          })
          const endings = new Endings()
          const proxy = yield* Proxy.serve({
            listen: { host: "127.0.0.1", port: 0, ...limits },
            target: upstream.address,
            onEvent: endings.onEvent
          })
          return { port: portOf(proxy.address), stats: proxy.stats, endings: [endings, upstreamEndings] }
        })
      )
  )
})
