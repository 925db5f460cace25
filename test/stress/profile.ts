/**
 * How big and how long the stress scenarios run.
 *
 * - `ci` (the default, what `npm test` runs): every scenario once, at the sizes marked `ci` in each test
 *   file, sized so that the whole of `test/stress` takes about two minutes on a 2-core machine.
 * - `soak` (what `npm run soak -- --minutes N` runs): the sizes marked `soak`, and each scenario repeated
 *   round after round until its share of the N minutes is spent ({@link SCENARIOS} gives the shares).
 *
 * Environment: `FULLDUPLEX_STRESS_PROFILE` (`ci` | `soak`), `FULLDUPLEX_SOAK_MINUTES` (soak only, default
 * 10), `FULLDUPLEX_STRESS_SCALE` (a factor on every count, default 1: `0.25` for a slow machine),
 * `FULLDUPLEX_STRESS_RUN` (the name of the results file under `test/stress/.results/`, default `ci`), and
 * `FC_SEED` (the seed of every random choice, printed in each test's title).
 */
import { Clock, Effect } from "effect"

/** The profile of this run. */
export const PROFILE: "ci" | "soak" = process.env["FULLDUPLEX_STRESS_PROFILE"] === "soak" ? "soak" : "ci"

/** Minutes a soak run lasts in all, scenarios together (soak only). */
export const SOAK_MINUTES = Number(process.env["FULLDUPLEX_SOAK_MINUTES"] || 10)

/** A factor on every count (clients, connections, children, runs). */
export const SCALE = Number(process.env["FULLDUPLEX_STRESS_SCALE"] || 1)

/** The seed of every random choice in the stress tests. */
export const SEED = Number(process.env["FC_SEED"] || Math.floor(Math.random() * 2 ** 31))

/** The name of the results file this run appends to. */
export const RUN = process.env["FULLDUPLEX_STRESS_RUN"] || PROFILE

/**
 * The scenarios that repeat in a soak run, with their share of its time (relative weights). A test that
 * is not listed here runs once in either profile.
 */
export const SCENARIOS = {
  "echo-throughput": 3,
  "proxy-throughput": 3,
  "echo-churn": 4,
  "fault-resets": 1,
  "fault-vanish": 1,
  "fault-flood": 1,
  "fault-silent-upstream": 1,
  "fault-upstream-reset": 1,
  "cat-fanout": 2,
  "cat-kill": 1,
  "mux-syn-flood": 1,
  "mux-ping-flood": 1,
  "mux-fuzz": 2,
  interruptions: 2
} as const

/** A scenario that repeats in a soak run. */
export type ScenarioId = keyof typeof SCENARIOS

const totalWeight = Object.values(SCENARIOS).reduce((n: number, w: number) => n + w, 0)

/** Milliseconds of the soak run that scenario `id` may spend on rounds (0 in the `ci` profile). */
export const sliceMillis = (id: ScenarioId): number =>
  PROFILE === "soak" ? Math.round((SOAK_MINUTES * 60_000 * SCENARIOS[id]) / totalWeight) : 0

/** `ci` in the `ci` profile, `soak` in the `soak` profile. */
export const sized = <A>(sizes: { readonly ci: A; readonly soak: A }): A => (PROFILE === "soak" ? sizes.soak : sizes.ci)

/** A count under {@link SCALE}: at least 1. */
export const scaled = (n: number): number => Math.max(1, Math.round(n * SCALE))

/**
 * The bound of a test, in seconds: one round's bound in the `ci` profile; in a soak run, its slice plus
 * one more round (the last round starts before the slice ends and runs to its end).
 */
export const boundSeconds = (id: ScenarioId | undefined, round: { readonly ci: number; readonly soak: number }) =>
  PROFILE === "soak" && id !== undefined ? Math.ceil(sliceMillis(id) / 1000) + round.soak : sized(round)

/**
 * Runs `round` once in the `ci` profile; in a soak run, again and again until the scenario's slice is
 * spent (at least once). Returns every round's result.
 */
export const rounds = <A, E, R>(
  id: ScenarioId,
  round: (index: number) => Effect.Effect<A, E, R>
): Effect.Effect<Array<A>, E, R> =>
  Effect.gen(function* () {
    const started = yield* Clock.currentTimeMillis
    const results: Array<A> = []
    do results.push(yield* round(results.length))
    while (PROFILE === "soak" && (yield* Clock.currentTimeMillis) - started < sliceMillis(id))
    return results
  })
