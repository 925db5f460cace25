/**
 * A progress watchdog for tests: a program that stops moving bytes fails with a diagnostic instead of
 * hanging the suite.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { type Duplex, DuplexError } from "fullduplex"

/**
 * Options of {@link assertDeadlockFree}.
 *
 * **Example** (A tighter stall bound and an overall deadline)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Duplex } from "fullduplex"
 * import { assertDeadlockFree, type DeadlockFreeOptions } from "fullduplex/testkit"
 *
 * const checked = Effect.scoped(
 *   Effect.gen(function* () {
 *     const [a, b] = yield* Duplex.pair()
 *     const options: DeadlockFreeOptions = { duplexes: [a, b], stallTimeout: "500 millis", timeout: "10 seconds" }
 *     return yield* assertDeadlockFree(Effect.andThen(a.write(Uint8Array.of(1)), b.read), options)
 *   })
 * )
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface DeadlockFreeOptions {
  /**
   * How long no byte may move in any watched direction before the program is declared stuck. Default 2 s:
   * a deadlock is reported about 2.1 s after it sets in, inside vitest's default test timeout (5 s). A
   * larger value needs the test's timeout raised above it (the third argument of `it.live`).
   */
  readonly stallTimeout?: Duration.Input | undefined
  /** An overall limit, for programs that keep moving bytes forever. Default: none (the test runner's timeout). */
  readonly timeout?: Duration.Input | undefined
  /** Duplexes to watch from the start; more can be added with the `watch` callback. */
  readonly duplexes?: Iterable<Duplex.Duplex> | undefined
  /** Name used in the diagnostic. Default `"program"`. */
  readonly label?: string | undefined
}

/**
 * Registers duplexes whose progress {@link assertDeadlockFree} watches.
 *
 * **Example** (Watching duplexes the program makes itself)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Duplex } from "fullduplex"
 * import { assertDeadlockFree, type Watch } from "fullduplex/testkit"
 *
 * const program = (watch: Watch) =>
 *   Effect.scoped(
 *     Effect.gen(function* () {
 *       const [a, b] = yield* Duplex.pair()
 *       watch(a, b)
 *       yield* a.write(Uint8Array.of(1))
 *       return yield* b.read
 *     })
 *   )
 * const checked = assertDeadlockFree(program)
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export type Watch = (...duplexes: ReadonlyArray<Duplex.Duplex>) => void

const moved = (stats: Duplex.Stats): number => stats.outbound.bytes + stats.inbound.bytes

const snapshot = (
  watched: ReadonlyArray<Duplex.Duplex>,
  all: ReadonlyArray<Duplex.Stats>
): Array<DuplexError.StalledDirection> =>
  watched.flatMap((d, i) => {
    const s = all[i]!
    return [
      { label: d.label, direction: "outbound" as const, ...pick(s.outbound) },
      { label: d.label, direction: "inbound" as const, ...pick(s.inbound) }
    ]
  })

const pick = (s: Duplex.DirectionStats) => ({ bytes: s.bytes, buffered: s.buffered, blocked: s.blocked })

/**
 * Runs `program` under a progress watchdog: if no byte moves through any watched duplex for
 * `stallTimeout`, the program is interrupted and the result fails with `DuplexError` reason
 * `StallDetected`, whose message lists every watched direction (blocked or idle, bytes moved, bytes
 * buffered).
 *
 * **When to use**
 *
 * Around every test of code that reads and writes a duplex, so that a deadlock fails fast with an
 * explanation instead of hitting the runner's timeout. It catches real deadlocks: a client that writes
 * everything before reading, against an echo peer, is reported within the bound.
 *
 * **Details**
 *
 * Pass the duplexes in `options.duplexes`, or pass a function `(watch) => program` and call `watch(d)`
 * once the program has made its duplexes. Progress is the total of `stats.outbound.bytes` and
 * `stats.inbound.bytes` over the watched duplexes, sampled about twenty times per `stallTimeout`. With
 * nothing watched there is never progress, so the bound acts as a deadline. Time comes from `Clock`: under
 * `TestClock` the watchdog fires when the test clock is adjusted.
 *
 * **Example** (Catching the classic write-then-read deadlock)
 *
 * ```ts
 * import { Effect, Stream } from "effect"
 * import { Duplex } from "fullduplex"
 * import { assertDeadlockFree } from "fullduplex/testkit"
 *
 * const naive = assertDeadlockFree(
 *   (watch) =>
 *     Effect.gen(function* () {
 *       const [client, server] = yield* Duplex.pair({ capacity: 1024 })
 *       watch(client, server)
 *       yield* Effect.forkScoped(Stream.run(server.readable, server.sink))
 *       yield* client.write(new Uint8Array(64 * 1024)) // blocks forever: nobody reads the echo
 *       return yield* Stream.runCollect(client.readable)
 *     }),
 *   { stallTimeout: "500 millis" }
 * ) // fails with DuplexError(StallDetected)
 * ```
 *
 * @category assertions
 * @since 0.1.0
 */
export const assertDeadlockFree = <A, E, R>(
  program: Effect.Effect<A, E, R> | ((watch: Watch) => Effect.Effect<A, E, R>),
  options: DeadlockFreeOptions = {}
): Effect.Effect<A, E | DuplexError.DuplexError, R> =>
  Effect.suspend(() => {
    const label = options.label ?? "program"
    const stallMillis = Duration.toMillis(options.stallTimeout ?? "2 seconds")
    const pollMillis = Math.max(1, Math.floor(stallMillis / 20))
    const watched: Array<Duplex.Duplex> = [...(options.duplexes ?? [])]
    const watch: Watch = (...duplexes) => {
      watched.push(...duplexes)
    }
    const effect = typeof program === "function" ? program(watch) : program

    const watchdog: Effect.Effect<never, DuplexError.DuplexError> = Effect.gen(function* () {
      let last = -1
      let lastChange = yield* Clock.currentTimeMillis
      while (true) {
        yield* Effect.sleep(pollMillis)
        const duplexes = [...watched] // `watch` may add more while the stats are read
        const all = yield* Effect.forEach(duplexes, (d) => d.stats)
        const total = all.reduce((sum, s) => sum + moved(s), 0)
        const now = yield* Clock.currentTimeMillis
        if (total !== last) {
          last = total
          lastChange = now
        } else if (now - lastChange >= stallMillis) {
          return yield* new DuplexError.DuplexError({
            reason: new DuplexError.StallDetected({
              label: duplexes.length === 0 ? `${label} (no duplex watched)` : label,
              stalledMillis: now - lastChange,
              directions: snapshot(duplexes, all)
            })
          })
        }
      }
    })

    const guarded = Effect.raceFirst(effect, watchdog)
    if (options.timeout === undefined) return guarded
    const timeoutMillis = Duration.toMillis(options.timeout)
    return Effect.timeoutOrElse(guarded, {
      duration: timeoutMillis,
      orElse: () =>
        Effect.fail(
          new DuplexError.DuplexError({
            reason: new DuplexError.Timeout({
              label,
              operation: "the whole run (assertDeadlockFree's timeout; a test runner's timeout must be above it)",
              timeoutMillis
            })
          })
        )
    })
  })
