/**
 * Stress 6: a thousand operations interrupted at random points (a random delay, 0 to 20 ms, or never):
 * `Duplex.exchange`, `Duplex.pipeThrough` and `Duplex.splice` over `Tcp.connect`, `Close.lingering` and
 * `Close.halfClose` in progress, and `Tcp.serve` handlers interrupted from inside (their work's fiber
 * interrupted, the handler fiber interrupted, a timeout around the work) and from outside (the server
 * shut down with `shutdownGrace: 0` while its handlers run). Afterwards the process holds the fds and
 * handles it held before (the testkit's `withLeakCheck`), no `unhandledRejection` or `uncaughtException`
 * fired, and every operation ended as it may: completed, interrupted, or failed with a `DuplexError`
 * (never a defect).
 *
 * `test/Leaks.test.ts` runs 300-operation versions of the first three; this mixes every kind, in one
 * process, with the servers' own handlers interrupted too.
 */
import { assert, describe } from "@effect/vitest"
import { Effect, Exit, Fiber, Scope, Sink, Stream } from "effect"
import { Close, Duplex, Echo, Tcp } from "fullduplex"
import { randomBytes, withLeakCheck } from "fullduplex/testkit"
import { within } from "../helpers.js"
import { rounds, scaled, SEED, sized } from "./profile.js"
import {
  addCounts,
  between,
  echoClient,
  Endings,
  failureKey,
  isTyped,
  KiB,
  live,
  MiB,
  mib,
  openFds,
  prefixed,
  pieces,
  processErrors,
  report,
  rssSampler,
  slice,
  tally,
  unit
} from "./support.js"

const OPERATIONS = scaled(sized({ ci: 1000, soak: 5000 }))
/** Operations at once. */
const CONCURRENCY = 16
const MAX_BYTES = 512 * KiB
/** One in this many operations is a server shut down under its handlers instead. */
const SHUTDOWN_EVERY = 100

const block = randomBytes(MAX_BYTES + 4 * MiB, SEED)

const KINDS = [
  "exchange",
  "pipeThrough",
  "splice",
  "lingering",
  "halfClose",
  "handler: work interrupted",
  "handler: interrupted",
  "handler: timeout",
  "shutdown"
] as const
type Kind = (typeof KINDS)[number]

interface Plan {
  readonly kind: Kind
  /** Milliseconds before the interruption; `undefined`: never interrupted, runs to its end. */
  readonly afterMillis: number | undefined
  readonly bytes: number
  readonly chunk: number
  readonly index: number
}

const plansOf = (seed: number, n: number): Array<Plan> => {
  const random = unit(seed)
  return Array.from({ length: n }, (_, index) => {
    const kind: Kind =
      index % SHUTDOWN_EVERY === SHUTDOWN_EVERY - 1 ? "shutdown" : KINDS[between(random, 0, KINDS.length - 2)]!
    return {
      kind,
      afterMillis: random() < 0.15 ? undefined : random() * 20,
      bytes: between(random, 0, MAX_BYTES),
      chunk: between(random, 1, 64 * KiB),
      index
    }
  })
}

/**
 * Runs `work` in a fiber of its own and interrupts it after `afterMillis` (or lets it run to its end),
 * each wait bounded: the outcome, as a key (`completed`, `interrupted`, `Broken ECONNRESET`, …).
 */
const interruptAfter = <A, E>(
  afterMillis: number | undefined,
  work: Effect.Effect<A, E, Scope.Scope>,
  what: string
): Effect.Effect<string, Error> =>
  Effect.gen(function* () {
    const fiber = yield* Effect.forkChild(Effect.scoped(work), { startImmediately: true })
    if (afterMillis === undefined) yield* Fiber.await(fiber).pipe(within("10 seconds", `${what}: its end`))
    else yield* Effect.sleep(afterMillis)
    yield* Fiber.interrupt(fiber).pipe(within("10 seconds", `${what}: the interruption`))
    const exit = yield* Fiber.await(fiber)
    return Exit.isSuccess(exit) ? "completed" : failureKey(exit.cause)
  })

/** Where the operations connect: an echo, and a server whose handlers interrupt their own work. */
interface Servers {
  readonly echo: number
  readonly fragile: number
  readonly endings: Endings
}

const portOf = (server: Tcp.Server): number => (server.address as Tcp.TcpAddress).port

/**
 * A server whose handler echoes, and interrupts itself at the point the client's first byte says (the
 * clients of the `handler` kinds write the plan's index first, as 4 bytes).
 */
const fragileServer = (plans: ReadonlyArray<Plan>, endings: Endings) =>
  Tcp.serve(
    {
      host: "127.0.0.1",
      port: 0,
      shutdownGrace: 0,
      close: Close.lingering({ lingerTimeout: 200 }),
      onEvent: endings.onEvent
    },
    (conn) =>
      Effect.gen(function* () {
        const first = yield* conn.read
        if (first._tag === "None" || first.value.length < 4) return
        const plan = plans[new DataView(first.value.buffer, first.value.byteOffset).getUint32(0) % plans.length]!
        yield* conn.write(first.value)
        const echo = Effect.andThen(Stream.run(conn.readable, conn.sink), conn.end)
        const delay = plan.afterMillis ?? 5
        switch (plan.kind) {
          case "handler: work interrupted": {
            const work = yield* Effect.forkChild(echo, { startImmediately: true })
            yield* Effect.sleep(delay)
            yield* Fiber.interrupt(work)
            return
          }
          case "handler: interrupted": {
            yield* Effect.forkChild(echo, { startImmediately: true })
            yield* Effect.sleep(delay)
            return yield* Effect.interrupt
          }
          default:
            return yield* echo.pipe(Effect.timeout(delay))
        }
      })
  )

const runPlan = (plan: Plan, servers: Servers): Effect.Effect<string, Error> => {
  const payload = slice(block, plan.bytes, plan.index)
  const input = Stream.fromIterable(pieces(payload, plan.chunk))
  const what = `operation ${plan.index} (${plan.kind}, ${plan.bytes} B, after ${plan.afterMillis ?? "never"} ms)`
  switch (plan.kind) {
    case "exchange":
      return interruptAfter(
        plan.afterMillis,
        Effect.flatMap(Tcp.connect({ port: servers.echo }), (conn) => Duplex.exchange(conn, input, Sink.drain)),
        what
      )
    case "pipeThrough":
      return interruptAfter(
        plan.afterMillis,
        Effect.flatMap(Tcp.connect({ port: servers.echo }), (conn) => Stream.runDrain(Duplex.pipeThrough(input, conn))),
        what
      )
    case "splice":
      return interruptAfter(
        plan.afterMillis,
        Effect.gen(function* () {
          const conn = yield* Tcp.connect({ port: servers.echo })
          const [a, b] = yield* Duplex.pair({ capacity: plan.chunk })
          yield* Effect.forkScoped(Effect.andThen(b.writeAll(pieces(payload, plan.chunk)), b.end), {
            startImmediately: true
          })
          yield* Effect.forkScoped(Stream.runDrain(b.readable), { startImmediately: true })
          return yield* Duplex.splice(conn, a)
        }),
        what
      )
    case "lingering":
    case "halfClose":
      return interruptAfter(
        plan.afterMillis,
        Effect.gen(function* () {
          const conn = yield* Tcp.connect({ port: servers.echo })
          yield* conn.writeAll(pieces(payload.subarray(0, 64 * KiB), plan.chunk))
          // The echo keeps coming while the close discards it.
          return plan.kind === "lingering"
            ? yield* Close.lingering(conn, { lingerTimeout: 100 })
            : yield* Close.halfClose(conn, { timeout: "2 seconds" })
        }),
        what
      )
    case "handler: work interrupted":
    case "handler: interrupted":
    case "handler: timeout": {
      const tagged = new Uint8Array(4 + payload.length)
      new DataView(tagged.buffer).setUint32(0, plan.index)
      tagged.set(payload, 4)
      return Effect.map(echoClient(servers.fragile, tagged, { timeoutMillis: 10_000 }), (o) => {
        assert.notStrictEqual(o.error, "timeout", `${what}: the client was left hanging`)
        return `client: ${o.error ?? (o.eof ? "eof" : "closed")}`
      })
    }
    case "shutdown":
      return shutdownUnderLoad(plan, servers.endings, what)
  }
}

/**
 * A fresh echo server (`shutdownGrace: 0`) with twenty clients uploading, shut down (its scope closed)
 * after `afterMillis`: every handler still running is interrupted, its connection aborted.
 */
const shutdownUnderLoad = (plan: Plan, endings: Endings, what: string): Effect.Effect<string, Error> =>
  Effect.gen(function* () {
    const scope = yield* Scope.make()
    const server = yield* Echo.serve({ host: "127.0.0.1", port: 0, shutdownGrace: 0, onEvent: endings.onEvent }).pipe(
      Scope.provide(scope),
      Effect.orDie
    )
    const clients = yield* Effect.forkChild(
      Effect.forEach(
        Array.from({ length: 20 }, (_, i) => i),
        (i) => echoClient(portOf(server), slice(block, 4 * MiB, i), { timeoutMillis: 10_000 }),
        { concurrency: "unbounded" }
      ),
      { startImmediately: true }
    )
    yield* Effect.sleep(plan.afterMillis ?? 20)
    yield* Scope.close(scope, Exit.void).pipe(within("10 seconds", `${what}: the shutdown`))
    const outcomes = yield* Fiber.join(clients).pipe(within("10 seconds", `${what}: the clients' ends`))
    assert.notInclude(
      outcomes.map((o) => o.error),
      "timeout",
      `${what}: a client hung after the shutdown`
    )
    return "shutdown done"
  })

describe(`Stress: ${OPERATIONS} operations interrupted at random points (seed ${SEED})`, () => {
  live(
    "give back every fd and handle, raise no unhandled rejection, and end completed, interrupted or with a DuplexError",
    { id: "interruptions", seconds: { ci: 90, soak: 150 } },
    () =>
      Effect.gen(function* () {
        const rss = yield* rssSampler
        const errors = yield* processErrors
        const endings = new Endings()
        const started = Date.now()
        const outcomes: Record<string, number> = {}
        const fdsBefore = openFds()
        const done = yield* rounds("interruptions", (round) =>
          withLeakCheck(
            Effect.scoped(
              Effect.gen(function* () {
                const plans = plansOf(SEED + round, OPERATIONS)
                const echo = yield* Echo.serve({
                  host: "127.0.0.1",
                  port: 0,
                  shutdownGrace: 0,
                  close: Close.lingering({ lingerTimeout: 200 }),
                  onEvent: endings.onEvent
                })
                const fragile = yield* fragileServer(plans, endings)
                const servers: Servers = { echo: portOf(echo), fragile: portOf(fragile), endings }
                const keys = yield* Effect.forEach(
                  plans,
                  (plan) => Effect.map(runPlan(plan, servers), (k) => `${plan.kind}: ${k}`),
                  {
                    concurrency: CONCURRENCY
                  }
                )
                addCounts(outcomes, tally(keys))
                const untyped = keys.filter((k) => !isTyped(k.slice(k.indexOf(": ") + 2)))
                assert.deepStrictEqual(untyped.slice(0, 3), [], `${untyped.length} operation(s) ended untyped`)
                return keys.length
              })
            ),
            { timeout: "2 seconds", label: `${OPERATIONS} interrupted operations, round ${round} (seed ${SEED})` }
          )
        )
        errors.assertNone()
        endings.assertTyped("the servers")
        yield* report({
          scenario: "interruptions",
          rounds: done.length,
          connections: endings.closed,
          peakConcurrent: CONCURRENCY,
          bytes: 0,
          endings: {
            ...outcomes,
            ...prefixed("server", endings.counts)
          },
          peakRssMiB: mib(rss.peakBytes()),
          fdsBefore,
          fdsAfter: openFds(),
          millis: Date.now() - started,
          extra: { operations: OPERATIONS, unhandled: errors.seen.length }
        })
        // Interruptions, and runs to the end, both happened.
        const interrupted = Object.entries(outcomes)
          .filter(([k]) => k.endsWith("interrupted"))
          .reduce((n, [, c]) => n + c, 0)
        const completed = Object.entries(outcomes)
          .filter(([k]) => k.endsWith("completed"))
          .reduce((n, [, c]) => n + c, 0)
        assert.isAbove(interrupted, OPERATIONS / 10, JSON.stringify(outcomes))
        assert.isAbove(completed, OPERATIONS / 20, JSON.stringify(outcomes))
      })
  )
})
