/**
 * Stress 2: ten thousand connections to `Echo.serve`, one after the other, each a short echo: afterwards
 * the process holds the fds and handles it held before (the testkit's leak check), and no socket on the
 * server's port is left in CLOSE_WAIT (a side that never closed after its peer's FIN) or FIN_WAIT2 (a
 * FIN never answered). Every other connection's client is a `Tcp.connect` + `Duplex.exchange`, so both
 * ends of the library are counted; the others are raw `net` sockets.
 */
import { assert, describe } from "@effect/vitest"
import { Effect, Sink, Stream } from "effect"
import { Duplex, Echo, Tcp } from "fullduplex"
import { assertNoLeaks, firstDifference, concatBytes, randomBytes, resources } from "fullduplex/testkit"
import { eventually, gc, liveBytes, socketStates, within } from "../helpers.js"
import { rounds, scaled, SEED, sized } from "./profile.js"
import {
  addCounts,
  describeOutcome,
  echoClient,
  Endings,
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
  tally
} from "./support.js"

/** Connections per round. */
const CONNECTIONS = scaled(sized({ ci: 10_000, soak: 10_000 }))
/** The most one connection uploads; each draws its size up to this. */
const MAX_BYTES = 16 * KiB
/**
 * How much more the process may retain (heap and array buffers, after full collections) after its last
 * round than after its first: a leak of 1 KiB per connection crosses it within four 10,000-connection rounds.
 */
const RETAINED_GROWTH_BOUND_BYTES = 32 * MiB

describe(`Stress: ${CONNECTIONS} sequential connections to Echo.serve (seed ${SEED})`, () => {
  live(
    "leave the process's fds and handles at their count, and no socket half-closed (CLOSE_WAIT, FIN_WAIT2)",
    { id: "echo-churn", seconds: { ci: 90, soak: 150 } },
    () =>
      Effect.gen(function* () {
        const rss = yield* rssSampler
        const block = randomBytes(MAX_BYTES + 64 * KiB, SEED)
        const endings = new Endings()
        const server = yield* Echo.serve({ host: "127.0.0.1", port: 0, shutdownGrace: 0, onEvent: endings.onEvent })
        const port = (server.address as Tcp.TcpAddress).port
        const before = resources()
        const started = Date.now()
        let bytes = 0
        const clientEnds: Record<string, number> = {}
        /** Bytes retained after each round (after full collections), where the runtime lets us collect. */
        const retained: Array<number> = []

        /** One connection through the library's own client: exchange, then compare. */
        const libraryClient = (payload: Uint8Array, what: string) =>
          Effect.scoped(
            Effect.gen(function* () {
              const conn = yield* Tcp.connect({ port })
              const chunks = yield* Duplex.exchange(conn, Stream.make(payload), Sink.collect<Uint8Array>())
              const got = concatBytes(chunks)
              const at = firstDifference(got, payload)
              assert.strictEqual(
                at,
                -1,
                `${what}: ${got.length} of ${payload.length} bytes back, first difference at ${at}`
              )
            })
          ).pipe(within("10 seconds", what))

        const done = yield* rounds("echo-churn", (round) =>
          Effect.gen(function* () {
            const random = (i: number) => ((i + 1) * 2654435761 + round * 40503 + SEED) >>> 0
            const outcomes: Array<string> = []
            for (let i = 0; i < CONNECTIONS; i++) {
              const payload = slice(block, random(i) % (MAX_BYTES + 1), i)
              const what = `round ${round}, connection ${i + 1}`
              if (i % 2 === 0) {
                yield* libraryClient(payload, what)
                outcomes.push("exact")
              } else {
                const o = yield* echoClient(port, payload, { timeoutMillis: 10_000 })
                assert.isTrue(isExactEcho(o, payload.length), `${what}: ${describeOutcome(o)}`)
                outcomes.push("exact")
              }
              bytes += 2 * payload.length
            }
            addCounts(clientEnds, tally(outcomes))
            const total = (round + 1) * CONNECTIONS
            yield* eventually(
              `round ${round}: every connection completed on the server`,
              server.stats,
              (s) => s.completed === total && s.active === 0,
              10_000
            )
            // Checked after every round: in a soak a slow leak shows in the first round it crosses.
            yield* assertNoLeaks(before, { timeout: "2 seconds", label: `echo churn after round ${round}` })
            if (gc !== undefined) retained.push(liveBytes(gc))
            return yield* noHalfClosedSockets([port])
          })
        )
        const states = done.at(-1)!
        const stats = yield* server.stats
        yield* report({
          scenario: "echo-churn",
          rounds: done.length,
          connections: stats.accepted,
          peakConcurrent: 1,
          bytes,
          endings: {
            ...prefixed("server", endings.counts),
            ...prefixed("client", clientEnds)
          },
          peakRssMiB: mib(rss.peakBytes()),
          fdsBefore: before.fds ?? -1,
          fdsAfter: openFds(),
          millis: Date.now() - started,
          extra: {
            socketStates: states,
            handlesBefore: before.handles,
            handlesAfter: resources().handles,
            retainedMiB:
              retained.length === 0 ? "no gc" : { firstRound: mib(retained[0]!), lastRound: mib(retained.at(-1)!) }
          }
        })
        assert.strictEqual(stats.failed + stats.idleTimeouts + stats.refused, 0, JSON.stringify(stats))
        endings.assertTyped("the echo server")
        if (retained.length > 1) {
          const growth = retained.at(-1)! - retained[0]!
          assert.isAtMost(
            growth,
            RETAINED_GROWTH_BOUND_BYTES,
            `retained memory grew ${mib(growth)} MiB over ${done.length} rounds`
          )
        }
        assert.deepStrictEqual(
          Object.keys(socketStates([port])).filter((s) => s !== "LISTEN" && s !== "TIME_WAIT"),
          [],
          "only the listener and TIME_WAIT left on the server's port"
        )
      })
  )
})
