/**
 * Property checks of Effect programs with fast-check, within a time budget that fits a test runner's
 * timeout, so that a failure (a deadlock reported by {@link assertDeadlockFree} included) arrives with its
 * seed and counterexample instead of as the runner's "test timed out".
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import type * as Scope from "effect/Scope"
import fc from "fast-check"

/**
 * The default budget of {@link assertProperty}: 4 s for every run and the shrinking together, a second
 * inside vitest's default test timeout (5 s).
 *
 * **Example** (A test timeout above a larger budget)
 *
 * ```ts
 * import { Duration } from "effect"
 * import { DEFAULT_PROPERTY_BUDGET } from "fullduplex/testkit"
 *
 * const budget = Duration.sum(DEFAULT_PROPERTY_BUDGET, Duration.seconds(6)) // 10 s
 * const testTimeoutMillis = Duration.toMillis(budget) + 1000 // the third argument of `it.live`
 * ```
 *
 * @category constants
 * @since 0.1.0
 */
export const DEFAULT_PROPERTY_BUDGET: Duration.Duration = Duration.seconds(4)

/**
 * Options of {@link assertProperty}.
 *
 * **Example** (Replaying a counterexample)
 *
 * ```ts
 * import type { PropertyOptions } from "fullduplex/testkit"
 *
 * // The seed and path a PropertyFailed reported, and room for slow runs.
 * const replay: PropertyOptions = { seed: 1234, path: "7:1:0", numRuns: 1, budget: "10 seconds" }
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface PropertyOptions {
  /** Seed of the generated values. Default the `FULLDUPLEX_SEED` environment variable, else a fresh one. */
  readonly seed?: number | undefined
  /** How many values to try. Default 100. */
  readonly numRuns?: number | undefined
  /** The time for every run and the shrinking together. Default {@link DEFAULT_PROPERTY_BUDGET} (4 s). */
  readonly budget?: Duration.Input | undefined
  /** A counterexample's path from a {@link PropertyFailed}, to replay it (with its seed). */
  readonly path?: string | undefined
}

/**
 * What a passing {@link assertProperty} did: the seed, and the runs made before the budget ran out.
 *
 * **Example** (Saying how far a property got)
 *
 * ```ts
 * import type { PropertyReport } from "fullduplex/testkit"
 *
 * const describeReport = (report: PropertyReport): string =>
 *   `${report.runs} runs, seed ${report.seed}${report.interrupted ? " (cut by the budget)" : ""}`
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface PropertyReport {
  readonly seed: number
  /** Values tried; fewer than `numRuns` when `interrupted`. */
  readonly runs: number
  /** The budget ran out before `numRuns` values were tried. */
  readonly interrupted: boolean
}

/**
 * A property failed, or no run finished within the budget.
 *
 * **Details**
 *
 * `counterexample` is the smallest failing value found (fast-check's rendering), `failure` what its run
 * failed with (a `DuplexError` `StallDetected` for a deadlock, whose message names every blocked
 * direction). `shrinkingCut` says the budget ended the shrinking early. Replay with
 * `{ seed, path }` in the options, or `FULLDUPLEX_SEED=<seed>`.
 *
 * **Example** (The replay options of a failure)
 *
 * ```ts
 * import type { PropertyFailed, PropertyOptions } from "fullduplex/testkit"
 *
 * const replayOf = (failure: PropertyFailed): PropertyOptions => ({ seed: failure.seed, path: failure.path })
 * ```
 *
 * @category errors
 * @since 0.1.0
 */
export class PropertyFailed extends Data.TaggedError("PropertyFailed")<{
  readonly seed: number
  readonly path: string | undefined
  /** Runs made, the failing one included. */
  readonly runs: number
  readonly counterexample: string | undefined
  readonly failure: string | undefined
  readonly shrinks: number
  readonly shrinkingCut: boolean
  readonly budgetMillis: number
}> {
  override get message(): string {
    if (this.counterexample === undefined) {
      return `property: no run finished within its budget of ${this.budgetMillis} ms (seed ${this.seed}); raise the budget, and the test's timeout above it`
    }
    const shrunk = `shrunk ${this.shrinks} time(s)${this.shrinkingCut ? `, stopped by the budget of ${this.budgetMillis} ms: raise it, and the test's timeout above it, to shrink further` : ""}`
    return [
      `property failed after ${this.runs} run(s) (seed ${this.seed}, path "${this.path}"; ${shrunk})`,
      `counterexample: ${this.counterexample}`,
      `failure: ${this.failure}`,
      `replay with { seed: ${this.seed}, path: "${this.path}" } or FULLDUPLEX_SEED=${this.seed}`
    ].join("\n")
  }
}

const describeCause = (cause: Cause.Cause<unknown>): string => {
  const error = Cause.squash(cause)
  if (error instanceof Error) return `${error.name}: ${error.message}`
  return String(error)
}

/**
 * Checks that `predicate` holds for values of `arbitrary`: each run is an Effect in a scope of its own,
 * and fails the property when it fails, dies or returns `false`. Fails with {@link PropertyFailed}, which
 * carries the seed, the shrunk counterexample and what the run failed with.
 *
 * **When to use**
 *
 * For property tests of code that moves bytes, with {@link assertDeadlockFree} inside the predicate: a
 * deadlock then fails within the runner's default timeout, with its diagnostic and its seed.
 *
 * **Details**
 *
 * The runs and the shrinking share `budget` (4 s by default, inside vitest's 5 s): when it runs out, a
 * passing check stops with the runs it made (`interrupted` in the report), and a failing one reports the
 * smallest counterexample found so far. A run still going then is interrupted. Each run's Effect gets the
 * caller's services (a fresh `Scope` for each). The seed is `FULLDUPLEX_SEED` when set, else a fresh one;
 * either way it is in the report and in every failure.
 *
 * **Gotchas**
 *
 * A deadlocked run lasts its stall limit (2 s by default for {@link assertDeadlockFree}), and shrinking
 * repeats it: leave the budget room for two such runs, and raise the test's timeout with the budget. The
 * budget is fast-check's `interruptAfterTimeLimit`, on the wall clock (not `TestClock`): run it under
 * `it.live`.
 *
 * **Example** (Echo through pairs of every buffer size, with a deadlock guard)
 *
 * ```ts
 * import { it } from "@effect/vitest"
 * import { Effect, Stream } from "effect"
 * import fc from "fast-check"
 * import { Duplex } from "fullduplex"
 * import { assertDeadlockFree, assertProperty, capacity, collectBytes, firstDifference, payload } from "fullduplex/testkit"
 *
 * it.live("echo is exact", () =>
 *   assertProperty(fc.tuple(payload({ maxBytes: 64 * 1024 }), capacity({ maxBytes: 4096 })), ([bytes, cap]) =>
 *     assertDeadlockFree((watch) =>
 *       Effect.gen(function* () {
 *         const [client, server] = yield* Duplex.pair({ capacity: cap })
 *         watch(client, server)
 *         yield* Effect.forkScoped(Stream.run(server.readable, server.sink).pipe(Effect.andThen(server.end)))
 *         const reply = yield* Duplex.exchange(client, Stream.make(bytes), collectBytes)
 *         return firstDifference(reply, bytes) === -1
 *       })
 *     )
 *   )
 * )
 * ```
 *
 * @category assertions
 * @since 0.1.0
 */
export const assertProperty = <T, E, R>(
  arbitrary: fc.Arbitrary<T>,
  predicate: (value: T) => Effect.Effect<boolean | void, E, R>,
  options: PropertyOptions = {}
): Effect.Effect<PropertyReport, PropertyFailed, Exclude<R, Scope.Scope>> =>
  Effect.gen(function* () {
    const context = yield* Effect.context<Exclude<R, Scope.Scope>>()
    const seed = options.seed ?? Number(process.env["FULLDUPLEX_SEED"] ?? Math.floor(Math.random() * 2 ** 31))
    const budgetMillis = Duration.toMillis(options.budget ?? DEFAULT_PROPERTY_BUDGET)
    const running = new Set<Fiber.Fiber<boolean | void, E>>()

    const run = (value: T): Promise<boolean | void> =>
      new Promise((resolve, reject) => {
        const fiber = Effect.runForkWith(context)(Effect.scoped(predicate(value)))
        running.add(fiber)
        fiber.addObserver((exit) => {
          running.delete(fiber)
          if (Exit.isSuccess(exit)) resolve(exit.value)
          // fast-check prints a thrown error's stack; this one's frames would only point here.
          else reject(Object.assign(new Error(describeCause(exit.cause)), { stack: describeCause(exit.cause) }))
        })
      })

    const details = yield* Effect.promise(() =>
      fc.check(fc.asyncProperty(arbitrary, run), {
        seed,
        numRuns: options.numRuns ?? 100,
        // The option form rather than the plugin (fast-check ≥ 4.10), so that every fast-check 4 works.
        interruptAfterTimeLimit: budgetMillis,
        ...(options.path === undefined ? {} : { path: options.path })
      })
    ).pipe(Effect.ensuring(Effect.suspend(() => Fiber.interruptAll([...running]))))

    if (!details.failed) return { seed, runs: details.numRuns, interrupted: details.interrupted }
    const failure = details.errorInstance
    return yield* new PropertyFailed({
      seed,
      path: details.counterexamplePath ?? undefined,
      runs: details.numRuns,
      counterexample: details.counterexample === null ? undefined : fc.stringify(details.counterexample[0]),
      failure: failure instanceof Error ? failure.message : failure === null ? undefined : String(failure),
      shrinks: details.numShrinks,
      shrinkingCut: details.interrupted,
      budgetMillis
    })
  })
