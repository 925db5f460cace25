/**
 * The testkit's property runner, and its defaults under a consumer's vitest: a deadlock must fail with the
 * testkit's diagnostic and seed inside vitest's default 5 s test timeout, not as "Test timed out".
 * (assertDeadlockFree's own tests are in Duplex.property.test.ts, the conformance runs in
 * Conformance.test.ts.)
 */
import { assert, describe, it } from "@effect/vitest"
import { Clock, Effect, Exit } from "effect"
import { execa } from "execa"
import fc from "fast-check"
import { assertProperty, PropertyFailed } from "fullduplex/testkit"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"

const root = fileURLToPath(new URL("..", import.meta.url))

const failureOf = <A>(exit: Exit.Exit<A, PropertyFailed>): PropertyFailed => {
  assert.isTrue(Exit.isFailure(exit), "expected the property to fail")
  const fail = Exit.isFailure(exit) ? exit.cause.reasons.find((r) => r._tag === "Fail") : undefined
  assert.instanceOf(fail?._tag === "Fail" ? fail.error : undefined, PropertyFailed)
  return (fail as { readonly error: PropertyFailed }).error
}

describe("assertProperty", () => {
  it.live("passes a property that holds, reporting the seed and every run", () =>
    Effect.gen(function* () {
      const report = yield* assertProperty(fc.integer(), (n) => Effect.succeed(n + 0 === n), { seed: 7, numRuns: 20 })
      assert.deepStrictEqual(report, { seed: 7, runs: 20, interrupted: false })
    })
  )

  it.live("fails with the seed, the shrunk counterexample, what the run failed with and how to replay it", () =>
    Effect.gen(function* () {
      const exit = yield* Effect.exit(
        assertProperty(
          fc.integer({ min: 0, max: 1000 }),
          (n) => (n >= 10 ? Effect.fail(`${n} is too big`) : Effect.succeed(true)),
          { seed: 42 }
        )
      )
      const failure = failureOf(exit)
      assert.strictEqual(failure.seed, 42)
      assert.strictEqual(failure.counterexample, "10")
      assert.include(failure.failure ?? "", "10 is too big")
      assert.isFalse(failure.shrinkingCut)
      assert.include(failure.message, "(seed 42, path")
      assert.include(failure.message, `replay with { seed: 42, path: "${failure.path}" }`)

      // The path replays the counterexample in one run.
      const replay = failureOf(
        yield* Effect.exit(
          assertProperty(
            fc.integer({ min: 0, max: 1000 }),
            (n) => (n >= 10 ? Effect.fail(`${n} is too big`) : Effect.succeed(true)),
            { seed: 42, path: failure.path }
          )
        )
      )
      assert.strictEqual(replay.counterexample, "10")
    })
  )

  it.live("counts a run that returns false as a failure", () =>
    Effect.gen(function* () {
      const failure = failureOf(
        yield* Effect.exit(assertProperty(fc.integer({ min: 0, max: 100 }), (n) => Effect.succeed(n < 5), { seed: 1 }))
      )
      assert.strictEqual(failure.counterexample, "5")
    })
  )

  it.live("stops at its budget: the runs that fit pass, and the run in progress is interrupted", () =>
    Effect.gen(function* () {
      let interrupted = 0
      const start = yield* Clock.currentTimeMillis
      const report = yield* assertProperty(
        fc.integer(),
        () => Effect.sleep("100 millis").pipe(Effect.onInterrupt(() => Effect.sync(() => interrupted++))),
        { budget: "350 millis" }
      )
      const took = (yield* Clock.currentTimeMillis) - start
      assert.isTrue(report.interrupted)
      assert.isAtLeast(report.runs, 1)
      assert.isBelow(report.runs, 100)
      assert.isBelow(took, 1000, "the check outlived its budget")
      assert.strictEqual(interrupted, 1, "the run cut by the budget was not interrupted")
    })
  )

  it.live("fails, saying so, when no run finishes within the budget", () =>
    Effect.gen(function* () {
      const failure = failureOf(
        yield* Effect.exit(assertProperty(fc.integer(), () => Effect.sleep("2 seconds"), { budget: "100 millis" }))
      )
      assert.isUndefined(failure.counterexample)
      assert.include(failure.message, "no run finished within its budget of 100 ms")
    })
  )
})

/** The environment without the variables of the vitest running this file, so the nested one starts afresh. */
const cleanEnv = () =>
  Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith("VITEST") && key !== "TEST"))

interface JsonReport {
  readonly testResults: ReadonlyArray<{
    readonly assertionResults: ReadonlyArray<{
      readonly title: string
      readonly status: string
      readonly duration?: number
      readonly failureMessages: ReadonlyArray<string>
    }>
  }>
}

describe("the testkit's defaults under a consumer's vitest", () => {
  it.live(
    "a deadlocking pipe fails with the testkit's diagnostic and seed inside the default 5 s test timeout",
    () =>
      Effect.gen(function* () {
        const dir = mkdtempSync(join(tmpdir(), "fullduplex-consumer-"))
        yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(dir, { recursive: true, force: true })))
        const reportFile = join(dir, "report.json")
        const run = yield* Effect.promise(() =>
          execa(
            process.execPath,
            [
              join(root, "node_modules", "vitest", "vitest.mjs"),
              "run",
              "--config",
              "test/fixtures/vitest.consumer.config.ts",
              "--reporter=json",
              `--outputFile=${reportFile}`,
              "test/fixtures/deadlocking-pipe.consumer.ts"
            ],
            { cwd: root, env: { ...cleanEnv(), FULLDUPLEX_SEED: "4242" }, extendEnv: false, reject: false, all: true }
          )
        )
        assert.strictEqual(run.exitCode, 1, `the consumer's run should fail its three tests:\n${run.all}`)
        const report = JSON.parse(readFileSync(reportFile, "utf8")) as JsonReport
        const results = new Map(
          report.testResults.flatMap((file) => file.assertionResults).map((r) => [r.title, r] as const)
        )
        assert.strictEqual(results.size, 3, run.all)
        for (const [title, result] of results) {
          const failure = result.failureMessages.join("\n")
          assert.strictEqual(result.status, "failed", title)
          assert.notMatch(failure, /timed out in/i, `${title}: hit the runner's timeout`)
          assert.include(failure, "no byte moved for", `${title}: the stall diagnostic is missing:\n${failure}`)
          assert.include(failure, "BLOCKED", `${title}: the blocked directions are missing:\n${failure}`)
          assert.isBelow(result.duration ?? Infinity, 5000, title)
        }
        const property = results.get("assertProperty")!.failureMessages.join("\n")
        assert.include(property, "(seed 4242, path")
        assert.include(property, "counterexample: payload(")
        const conformance = [...results.keys()].find((title) => title.startsWith("conformance"))!
        assert.include(
          results.get(conformance)!.failureMessages.join("\n"),
          "[lossy] preserves byte order both ways (seed 4242)"
        )
      }),
    120_000
  )
})
