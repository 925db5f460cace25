/**
 * Stress 4: two hundred `cat` children at once, each fed 1 MiB through `Subprocess.spawn` +
 * `Duplex.exchange` and read back byte-exact; then children killed mid-stream (SIGKILL from outside, or
 * the fiber that owns them interrupted) end in typed errors (`Broken` on the stdin write, `ProcessFailed`
 * with the signal from `exit`), or in an interruption. Afterwards this process has no child left, zombie
 * or alive (`/proc/*\/stat`), and holds the fds and handles it held before.
 */
import { assert, describe } from "@effect/vitest"
import { Cause, Effect, Exit, Fiber, Sink, Stream } from "effect"
import { Duplex, DuplexError, Subprocess } from "fullduplex"
import { assertNoLeaks, randomBytes, resources } from "fullduplex/testkit"
import { within } from "../helpers.js"
import { rounds, scaled, SEED, sized } from "./profile.js"
import {
  addCounts,
  between,
  comparing,
  failureKey,
  Gauge,
  isTyped,
  live,
  MiB,
  mib,
  noChildrenLeft,
  openFds,
  pieces,
  report,
  rssSampler,
  slice,
  tally,
  unit
} from "./support.js"

/** Children at once per round. */
const CHILDREN = scaled(sized({ ci: 200, soak: 400 }))
const BYTES = sized({ ci: 1 * MiB, soak: 2 * MiB })
/** Children killed mid-stream per round. */
const KILLED = scaled(sized({ ci: 200, soak: 400 }))
/** What each child to be killed is fed: more than it can take before it is killed. */
const KILLED_BYTES = 8 * MiB

const block = randomBytes(KILLED_BYTES + 4 * MiB, SEED)

/** A cat run once before the baseline: whatever execa and Node open lazily on a first spawn is open by then. */
const warmUp = Effect.scoped(
  Effect.gen(function* () {
    const cat = yield* Subprocess.spawn("cat")
    yield* cat.end
    yield* cat.exit
  })
)

describe(`Stress: cat children through Subprocess (seed ${SEED})`, () => {
  live(
    `${CHILDREN} concurrent cat × ${mib(BYTES)} MiB through spawn + exchange come back byte-exact, and leave no child, zombie or fd`,
    { id: "cat-fanout", seconds: { ci: 90, soak: 150 } },
    () =>
      Effect.gen(function* () {
        const rss = yield* rssSampler
        yield* warmUp
        const before = resources()
        const started = Date.now()
        const gauge = new Gauge()
        const endings: Record<string, number> = {}
        const done = yield* rounds("cat-fanout", (round) =>
          Effect.gen(function* () {
            const results = yield* Effect.forEach(
              Array.from({ length: CHILDREN }, (_, i) => i),
              (i) =>
                Effect.scoped(
                  Effect.gen(function* () {
                    const payload = slice(block, BYTES, round * CHILDREN + i)
                    const cat = yield* Subprocess.spawn("cat", [], { stderr: "tail" })
                    gauge.up()
                    const check = comparing(payload)
                    yield* Duplex.exchange(cat, Stream.fromIterable(pieces(payload)), check.sink)
                    const exit = yield* cat.exit
                    gauge.down()
                    const exact = check.state.received === payload.length && check.state.mismatchAt === undefined
                    assert.isTrue(
                      exact,
                      `cat #${i} (pid ${cat.pid}): ${check.state.received} of ${payload.length} bytes back, first difference at ${check.state.mismatchAt ?? "none"}`
                    )
                    assert.strictEqual(exit.exitCode, 0, `cat #${i} exit`)
                    return "exact"
                  })
                ).pipe(within("60 seconds", `cat #${i}`)),
              { concurrency: "unbounded" }
            )
            addCounts(endings, tally(results))
            yield* noChildrenLeft()
            yield* assertNoLeaks(before, { timeout: "2 seconds", label: `cat fan-out, round ${round}` })
            return results.length
          })
        )
        yield* report({
          scenario: "cat-fanout",
          rounds: done.length,
          connections: done.reduce((n, k) => n + k, 0),
          peakConcurrent: gauge.peak,
          bytes: 2 * BYTES * CHILDREN * done.length,
          endings,
          peakRssMiB: mib(rss.peakBytes()),
          fdsBefore: before.fds ?? -1,
          fdsAfter: openFds(),
          millis: Date.now() - started,
          extra: { children: CHILDREN, bytesPerChild: BYTES }
        })
      })
  )

  live(
    `${KILLED} cat children killed mid-stream (SIGKILL, or their fiber interrupted) end typed, and leave no child, zombie or fd`,
    { id: "cat-kill", seconds: { ci: 60, soak: 120 } },
    () =>
      Effect.gen(function* () {
        const rss = yield* rssSampler
        yield* warmUp
        const before = resources()
        const started = Date.now()
        const endings: Record<string, number> = {}
        const gauge = new Gauge()
        let bytes = 0
        const done = yield* rounds("cat-kill", (round) =>
          Effect.gen(function* () {
            const random = unit(SEED + round)
            const plans = Array.from({ length: KILLED }, (_, i) => ({
              how: i % 2 === 0 ? ("SIGKILL" as const) : ("interrupt" as const),
              // SIGKILL once this much has come back; an interruption after this many milliseconds.
              afterBytes: between(random, 0, 4 * MiB),
              afterMillis: random() * 30
            }))
            const outcomes = yield* Effect.forEach(
              plans,
              (plan, i) =>
                Effect.acquireUseRelease(
                  Effect.sync(() => gauge.up()),
                  () =>
                    plan.how === "SIGKILL"
                      ? killed(i, plan.afterBytes, round)
                      : interrupted(plan.afterMillis, round * KILLED + i),
                  () => Effect.sync(() => gauge.down())
                ),
              { concurrency: 50 }
            )
            for (const o of outcomes) bytes += o.bytes
            addCounts(endings, tally(outcomes.map((o) => o.key)))
            const untyped = outcomes.filter((o) => !isTyped(o.key))
            assert.deepStrictEqual(untyped.slice(0, 3), [], `children killed mid-stream ended untyped`)
            yield* noChildrenLeft()
            yield* assertNoLeaks(before, { timeout: "2 seconds", label: `killed cats, round ${round}` })
            return outcomes.length
          })
        )
        yield* report({
          scenario: "cat-kill",
          rounds: done.length,
          connections: done.reduce((n, k) => n + k, 0),
          peakConcurrent: gauge.peak,
          bytes,
          endings,
          peakRssMiB: mib(rss.peakBytes()),
          fdsBefore: before.fds ?? -1,
          fdsAfter: openFds(),
          millis: Date.now() - started
        })
        // Every SIGKILLed child's exit says so.
        for (const key of Object.keys(endings)) {
          if (key.startsWith("SIGKILL")) assert.include(key, "exit ProcessFailed SIGKILL", `a SIGKILLed cat: ${key}`)
        }
      })
  )
})

/** What a killed child's exchange and exit came to, as one key, and the bytes that came back. */
interface KillOutcome {
  readonly key: string
  readonly bytes: number
}

const exitKey = (exit: Exit.Exit<unknown, DuplexError.DuplexError>): string =>
  Exit.isSuccess(exit) ? "ok" : failureKey(exit.cause)

/**
 * A cat SIGKILLed from outside (`process.kill`) once `afterBytes` have come back: the exchange fails
 * `Broken` (stdin's EPIPE) or ends at stdout's EOF, and `exit` fails `ProcessFailed` with the signal.
 */
const killed = (i: number, afterBytes: number, round: number): Effect.Effect<KillOutcome, Error> =>
  Effect.scoped(
    Effect.gen(function* () {
      const cat = yield* Subprocess.spawn("cat", [], { stderr: "tail" })
      const payload = slice(block, KILLED_BYTES, round * KILLED + i)
      let received = 0
      let signalled = false
      const signal = () => {
        if (signalled) return
        signalled = true
        try {
          process.kill(cat.pid!, "SIGKILL")
        } catch {
          // Gone already (ESRCH): its exit says how it ended.
        }
      }
      if (afterBytes === 0) signal()
      const exchanged = yield* Effect.exit(
        Duplex.exchange(
          cat,
          Stream.fromIterable(pieces(payload)),
          counting((chunk) => {
            received += chunk.length
            if (received >= afterBytes) signal()
          })
        )
      )
      const exited = yield* Effect.exit(cat.exit)
      const error = Exit.isFailure(exited) ? Cause.squash(exited.cause) : undefined
      const signalName =
        DuplexError.isDuplexError(error) && error.reason._tag === "ProcessFailed"
          ? ` ${error.reason.signal ?? `no signal, exit code ${error.reason.exitCode}`}`
          : ""
      return {
        key: `SIGKILL: exchange ${exitKey(exchanged)}, exit ${exitKey(exited)}${signalName}`,
        bytes: received
      }
    })
  ).pipe(within("20 seconds", `killed cat #${i}`))

/**
 * A cat whose fiber is interrupted `afterMillis` into its exchange: the interruption closes its scope,
 * which closes stdin (cat then exits at EOF) and reaps it.
 */
const interrupted = (afterMillis: number, index: number): Effect.Effect<KillOutcome, Error> =>
  Effect.gen(function* () {
    let received = 0
    const fiber = yield* Effect.forkChild(
      Effect.scoped(
        Effect.gen(function* () {
          const cat = yield* Subprocess.spawn("cat", [], { stderr: "tail" })
          const payload = slice(block, KILLED_BYTES, index)
          yield* Duplex.exchange(
            cat,
            Stream.fromIterable(pieces(payload)),
            counting((chunk) => {
              received += chunk.length
            })
          )
          return yield* cat.exit
        })
      ),
      { startImmediately: true }
    )
    yield* Effect.sleep(afterMillis)
    yield* Fiber.interrupt(fiber).pipe(within("10 seconds", "interrupting a cat's fiber"))
    const exit = yield* Fiber.await(fiber)
    return { key: `interrupt: ${Exit.isSuccess(exit) ? "finished first" : failureKey(exit.cause)}`, bytes: received }
  })

/** A sink calling `f` on every chunk. */
const counting = (f: (chunk: Uint8Array) => void) => Sink.forEach((chunk: Uint8Array) => Effect.sync(() => f(chunk)))
