/**
 * Child processes as duplexes: byte-exact transfers far beyond the pipe buffers, stderr that never blocks,
 * bounded captures, early-exiting readers, and termination that always reaps.
 *
 * The fixtures are tiny Node programs in `test/fixtures/`, run with `process.execPath`; the byte pattern
 * they write is `test/fixtures/pattern.mjs`. The property test's seed is `FC_SEED` if set, else a fresh
 * one; a failure prints `{ seed, path }` (replay with `FC_SEED=<seed>`). `FC_RUNS` overrides its 50 runs.
 */
import { assert, describe, it } from "@effect/vitest"
import { Clock, Deferred, Effect, Exit, Fiber, Option, Scope, Sink, Stream } from "effect"
import fc from "fast-check"
import { Duplex, type DuplexError as DuplexErrors, Subprocess } from "fullduplex"
import {
  assertDeadlockFree,
  chunkedPayload,
  collectBytes,
  concatBytes,
  firstDifference,
  randomBytes,
  randomChunks,
  readAll
} from "fullduplex/testkit"
import { execSync } from "node:child_process"
import { createHash } from "node:crypto"
import { fileURLToPath } from "node:url"
import { patternBytes } from "./fixtures/pattern.mjs"
import { duplexErrorOf, reasonOf, within } from "./helpers.js"

const KiB = 1024
const MiB = 1024 * KiB
/** Linux's default pipe capacity. */
const PIPE_BYTES = 64 * KiB

const text = (s: string) => new TextEncoder().encode(s)
const decode = (b: Uint8Array) => new TextDecoder().decode(b)

/** The absolute path of a fixture program. */
const fixture = (name: string) => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url))

/** Spawns a fixture program with this Node. */
const spawnFixture = (name: string, args: ReadonlyArray<string | number> = [], options?: Subprocess.SpawnOptions) =>
  Subprocess.spawn(process.execPath, [fixture(name), ...args.map(String)], options)

const sameBytes = (got: Uint8Array, want: Uint8Array, what: string) => {
  const at = firstDifference(got, want)
  assert.strictEqual(at, -1, `${what}: got ${got.length} bytes, want ${want.length}, first difference at ${at}`)
}

/** Asserts that no process has `pid` any more: it exited and was reaped (a zombie still answers signal 0). */
const assertReaped = (pid: number | undefined, what: string) => {
  assert.isDefined(pid, `${what}: no pid`)
  let code: string | undefined
  try {
    process.kill(pid!, 0)
    code = "exists"
  } catch (err) {
    code = (err as NodeJS.ErrnoException).code
  }
  assert.strictEqual(code, "ESRCH", `${what}: pid ${pid} still exists (running, or a zombie nobody reaped)`)
}

/** Runs `effect` and returns its value with the milliseconds it took. */
const timed = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function* () {
    const start = yield* Clock.currentTimeMillis
    const value = yield* effect
    return [value, (yield* Clock.currentTimeMillis) - start] as const
  })

/** Reads `proc` until a newline, for a fixture's "ready" line. */
const readLine = (proc: Subprocess.Subprocess) =>
  Effect.gen(function* () {
    let line = ""
    while (!line.includes("\n")) {
      const chunk = yield* proc.read
      if (Option.isNone(chunk)) break
      line += decode(chunk.value)
    }
    return line
  }).pipe(within("5 seconds", `the ready line of ${proc.command}`))

/** The child's exit status, waited for at most 5 s. */
const statusOf = (proc: Subprocess.Subprocess) =>
  exitStatus(proc).pipe(within("5 seconds", `the exit status of ${proc.command}`))

/** The exit status from `exit`, whether it succeeded or failed `ProcessFailed` (the default `reject`). */
const exitStatus = (proc: Subprocess.Subprocess): Effect.Effect<Subprocess.ExitStatus, DuplexErrors.DuplexError> =>
  proc.exit.pipe(
    Effect.map(({ exitCode, signal }) => ({ exitCode, signal })),
    Effect.catchReason("DuplexError", "ProcessFailed", ({ exitCode, signal }) => Effect.succeed({ exitCode, signal }))
  )

/** Whether the child has not exited yet (its status is not available within a few milliseconds). */
const stillRunning = (proc: Subprocess.Subprocess) =>
  Effect.map(Effect.timeoutOption(exitStatus(proc), 20), Option.isNone)

/**
 * Runs `effect` while recording uncaught exceptions and unhandled rejections, then fails if there were any:
 * a child that stopped reading must cost an `EPIPE` handled inside, never a crash of the parent. Late
 * errors of closed pipes surface within a few event-loop turns; 100 ms leaves room for them.
 */
const withoutUncaughtErrors = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.scoped(
    Effect.gen(function* () {
      const seen: Array<string> = []
      const record = (err: unknown) => void seen.push(String(err))
      yield* Effect.acquireRelease(
        Effect.sync(() => process.on("uncaughtException", record).on("unhandledRejection", record)),
        () => Effect.sync(() => process.off("uncaughtException", record).off("unhandledRejection", record))
      )
      const value = yield* effect
      yield* Effect.sleep("100 millis")
      assert.deepStrictEqual(seen, [], "uncaught exceptions or unhandled rejections")
      return value
    })
  )

/** Every byte of `input` `k` times in a row, as `repeat.mjs k` writes it. */
const repeatBytes = (input: Uint8Array, k: number): Uint8Array => {
  const out = new Uint8Array(input.length * k)
  for (let i = 0, o = 0; i < input.length; i++) for (let j = 0; j < k; j++) out[o++] = input[i]!
  return out
}

/** A 64 MiB payload shared by the bulk tests, generated once. */
let bulk: Uint8Array | undefined
const bulkPayload = () => (bulk ??= randomBytes(64 * MiB, 41))

describe("Subprocess: byte-exact transfers beyond the pipe buffers", () => {
  it.live("cat returns 64 MiB byte-exact through exchange", () =>
    assertDeadlockFree(
      (watch) =>
        Effect.gen(function* () {
          const payload = bulkPayload()
          const cat = yield* Subprocess.spawn("cat")
          watch(cat)
          const got = yield* Duplex.exchange(
            cat,
            Stream.fromIterable(randomChunks(payload, 256 * KiB, 1)),
            collectBytes
          )
          sameBytes(got, payload, "cat")
          const done = yield* cat.exit.pipe(within("5 seconds", "cat's exit"))
          assert.deepStrictEqual([done.exitCode, done.signal, done.stdout.length], [0, undefined, 0])
        }),
      { stallTimeout: "5 seconds", timeout: "30 seconds", label: "cat 64 MiB" }
    )
  )

  it.live("a child reading 64 MiB while writing 64 MiB to stdout and 64 MiB to stderr completes byte-exact", () =>
    assertDeadlockFree(
      (watch) =>
        Effect.gen(function* () {
          const payload = bulkPayload()
          // stderr goes to a sink that hashes it: 64 MiB more in memory would prove nothing more.
          const hash = createHash("sha256")
          let stderrBytes = 0
          const hashing = Sink.forEach((chunk: Uint8Array) =>
            Effect.sync(() => {
              hash.update(chunk)
              stderrBytes += chunk.length
            })
          )
          const tee = yield* spawnFixture("tee-stderr.mjs", [], { stderr: hashing })
          watch(tee)
          const got = yield* Duplex.exchange(
            tee,
            Stream.fromIterable(randomChunks(payload, 256 * KiB, 2)),
            collectBytes
          )
          sameBytes(got, payload, "stdout")
          const done = yield* tee.exit.pipe(within("5 seconds", "the tee's exit"))
          assert.strictEqual(done.exitCode, 0)
          assert.strictEqual(stderrBytes, payload.length, "stderr bytes")
          assert.strictEqual(hash.digest("hex"), createHash("sha256").update(payload).digest("hex"), "stderr sha256")
          // A sink of yours still feeds the tail kept for messages.
          sameBytes(done.stderr, payload.subarray(payload.length - 64 * KiB), "stderr tail with a sink")
        }),
      { stallTimeout: "5 seconds", timeout: "40 seconds", label: "tee 64 MiB" }
    )
  )

  it.live("a child that writes 8 MiB before reading any input, then echoes, completes with exchange", () =>
    assertDeadlockFree(
      (watch) =>
        Effect.gen(function* () {
          const input = randomBytes(4 * MiB, 3)
          const child = yield* spawnFixture("write-then-echo.mjs", [8 * MiB])
          watch(child)
          const got = yield* Duplex.exchange(child, Stream.fromIterable(randomChunks(input, 64 * KiB, 3)), collectBytes)
          sameBytes(got, concatBytes([patternBytes(0, 8 * MiB), input]), "prefix then echo")
          assert.strictEqual((yield* child.exit.pipe(within("5 seconds", "the exit"))).exitCode, 0)
        }),
      { stallTimeout: "5 seconds", timeout: "30 seconds", label: "write-then-echo" }
    )
  )

  it.live("control: writing all the input before reading deadlocks against that child, and is reported", () =>
    Effect.gen(function* () {
      // The fixture really blocks on its output before reading: the naive order is caught as a stall.
      const exit = yield* Effect.exit(
        assertDeadlockFree(
          (watch) =>
            Effect.scoped(
              Effect.gen(function* () {
                const child = yield* spawnFixture("write-then-echo.mjs", [8 * MiB], {
                  stdinGrace: 0,
                  killGrace: "1 second"
                })
                watch(child)
                yield* child.writeAll(randomChunks(randomBytes(4 * MiB, 3), 64 * KiB, 3)) // nobody reads meanwhile
                yield* child.end
                return yield* readAll(child)
              })
            ),
          { stallTimeout: "500 millis", timeout: "10 seconds", label: "naive parent" }
        )
      )
      reasonOf(exit, "StallDetected", "the naive parent")
    })
  )

  it.live("exit drains the stdout nobody read, around the pipe buffer and far beyond it", () =>
    Effect.gen(function* () {
      for (const size of [PIPE_BYTES - 1, PIPE_BYTES, PIPE_BYTES + 1, 16 * MiB]) {
        const done = yield* Effect.scoped(
          Effect.flatMap(spawnFixture("write-bytes.mjs", [size]), (child) => child.exit)
        ).pipe(within("10 seconds", `exit of a child writing ${size} bytes`))
        assert.deepStrictEqual([done.exitCode, done.signal], [0, undefined], `${size} bytes`)
        sameBytes(done.stdout, patternBytes(0, size), `stdout captured by exit, ${size} bytes`)
      }
    })
  )

  it.live("exit captures exactly maxBuffer bytes, and fails MaxBufferExceeded at one byte more", () =>
    Effect.gen(function* () {
      const size = 100_000
      const exact = yield* Effect.scoped(
        Effect.flatMap(spawnFixture("write-bytes.mjs", [size], { maxBuffer: size }), (child) => child.exit)
      ).pipe(within("10 seconds", "exit with maxBuffer = output"))
      sameBytes(exact.stdout, patternBytes(0, size), "output of exactly maxBuffer")
      const over = yield* Effect.exit(
        Effect.scoped(
          Effect.flatMap(spawnFixture("write-bytes.mjs", [size], { maxBuffer: size - 1 }), (child) => child.exit)
        ).pipe(within("10 seconds", "exit with maxBuffer = output − 1"))
      )
      const reason = reasonOf(over, "MaxBufferExceeded", "output of maxBuffer + 1")
      assert.strictEqual(reason.limit, size - 1)
      sameBytes(reason.captured, patternBytes(0, size - 1), "captured")
    })
  )
})

describe("Subprocess: bounded captures and early exits", () => {
  it.live("an infinite writer with a small maxBuffer fails promptly with MaxBufferExceeded, and is reaped", () =>
    Effect.gen(function* () {
      const limit = 100_000
      const yes = yield* Subprocess.spawn("yes", [], { maxBuffer: limit })
      const [exit, millis] = yield* timed(Effect.exit(yes.exit.pipe(within("5 seconds", "yes's exit"))))
      const reason = reasonOf(exit, "MaxBufferExceeded", "yes with maxBuffer")
      assert.isBelow(millis, 2000, "the overflow was not reported promptly")
      assert.deepStrictEqual([reason.stream, reason.limit, reason.command], ["stdout", limit, "yes"])
      sameBytes(reason.captured, text("y\n".repeat(limit / 2)), "captured")
      assert.include(reason.message, "maxBuffer")
      assertReaped(yes.pid, "yes after MaxBufferExceeded")
    })
  )

  const input16 = () => randomBytes(16 * MiB, 6)
  const inputStream = (input: Uint8Array) => Stream.fromIterable(randomChunks(input, 256 * KiB, 6))

  it.live("communicate with head -c 100 and 16 MiB of input succeeds and counts the input it never read", () =>
    withoutUncaughtErrors(
      Effect.gen(function* () {
        const input = input16()
        const head = yield* Subprocess.spawn("head", ["-c", "100"])
        const result = yield* Subprocess.communicate(head, inputStream(input)).pipe(
          within("10 seconds", "communicate with head")
        )
        assert.deepStrictEqual([result.exitCode, result.signal], [0, undefined])
        sameBytes(result.stdout, input.subarray(0, 100), "head's output")
        assert.isAbove(result.unconsumedInputBytes, 0, "unconsumed input")
        assert.isAtMost(result.unconsumedInputBytes, input.length - 100, "unconsumed input")
      })
    )
  )

  it.live("communicate with failOnUnconsumedInput fails InputNotConsumed when head exits early", () =>
    withoutUncaughtErrors(
      Effect.gen(function* () {
        const head = yield* Subprocess.spawn("head", ["-c", "100"])
        const exit = yield* Effect.exit(
          Subprocess.communicate(head, inputStream(input16()), { failOnUnconsumedInput: true }).pipe(
            within("10 seconds", "communicate with head")
          )
        )
        const reason = reasonOf(exit, "InputNotConsumed", "communicate with failOnUnconsumedInput")
        assert.strictEqual(reason.command, "head -c 100")
        assert.isAbove(reason.unconsumedBytes, 0)
      })
    )
  )

  it.live("pipeThrough head -c 100 of 16 MiB gives the first 100 bytes, or InputNotConsumed if asked", () =>
    withoutUncaughtErrors(
      Effect.gen(function* () {
        const input = input16()
        // Three times each: the child's exit races our writes, and either order must give the same answer.
        for (let run = 1; run <= 3; run++) {
          const got = yield* Stream.run(
            inputStream(input).pipe(Subprocess.pipeThrough("head", ["-c", "100"])),
            collectBytes
          ).pipe(within("10 seconds", `pipeThrough head, run ${run}`))
          sameBytes(got, input.subarray(0, 100), `pipeThrough head, run ${run}`)
          const exit = yield* Effect.exit(
            Stream.runDrain(
              inputStream(input).pipe(Subprocess.pipeThrough("head", ["-c", "100"], { failOnUnconsumedInput: true }))
            ).pipe(within("10 seconds", `pipeThrough head failing, run ${run}`))
          )
          assert.isAbove(reasonOf(exit, "InputNotConsumed", `run ${run}`).unconsumedBytes, 0)
        }
      })
    )
  )

  it.live("a write after the child closed its stdin fails Broken with EPIPE, not an uncaught exception", () =>
    withoutUncaughtErrors(
      Effect.gen(function* () {
        const child = yield* spawnFixture("close-stdin.mjs", [], { stdinGrace: 0 })
        assert.strictEqual(yield* readLine(child), "closed\n")
        const chunk = new Uint8Array(64 * KiB)
        const exit = yield* Effect.exit(Effect.forever(child.write(chunk)).pipe(within("5 seconds", "the EPIPE")))
        assert.strictEqual(reasonOf(exit, "Broken", "write after the child closed stdin").code, "EPIPE")
        assert.isTrue(yield* stillRunning(child), "the child was to stay alive")
      })
    )
  )

  it.live("a write after the child exited fails Broken with EPIPE, not an uncaught exception", () =>
    withoutUncaughtErrors(
      Effect.gen(function* () {
        const child = yield* spawnFixture("exit-with.mjs", [0, "bye"])
        yield* exitStatus(child).pipe(within("5 seconds", "the child's exit"))
        const chunk = new Uint8Array(64 * KiB)
        const exit = yield* Effect.exit(Effect.forever(child.write(chunk)).pipe(within("5 seconds", "the EPIPE")))
        const reason = reasonOf(exit, "Broken", "write after the child exited")
        assert.strictEqual(reason.code, "EPIPE", reason.message)
      })
    )
  )
})

describe("Subprocess: termination", () => {
  it.live("closing the scope SIGKILLs a child that ignores stdin and SIGTERM after killGrace, and reaps it", () =>
    Effect.gen(function* () {
      const scope = yield* Scope.make()
      const child = yield* spawnFixture("ignore-sigterm.mjs", [], {
        stdinGrace: "100 millis",
        killGrace: "300 millis"
      }).pipe(Scope.provide(scope))
      assert.strictEqual(yield* readLine(child), "ready\n") // the SIGTERM handler is installed
      const [, millis] = yield* timed(Scope.close(scope, Exit.void).pipe(within("5 seconds", "the scope's close")))
      assert.deepStrictEqual(yield* statusOf(child), { exitCode: undefined, signal: "SIGKILL" })
      assert.isAtLeast(millis, 350, "killed before stdinGrace + killGrace (400 ms)")
      assert.isBelow(millis, 3000, "the close took far longer than stdinGrace + killGrace")
      assertReaped(child.pid, "the SIGKILLed child")
    })
  )

  it.live("closing the scope fails a pending read with Closed, so a killed child's output never looks complete", () =>
    Effect.gen(function* () {
      const scope = yield* Scope.make()
      const child = yield* spawnFixture("ignore-sigterm.mjs", [], {
        stdinGrace: "50 millis",
        killGrace: "50 millis"
      }).pipe(Scope.provide(scope))
      assert.strictEqual(yield* readLine(child), "ready\n")
      const reader = yield* Effect.forkChild(readAll(child), { startImmediately: true })
      yield* Scope.close(scope, Exit.void).pipe(within("5 seconds", "the scope's close"))
      assert.deepStrictEqual(yield* statusOf(child), { exitCode: undefined, signal: "SIGKILL" })
      // The Duplex contract: after the owning scope's close every operation fails Closed. A clean EOF here
      // would pass off the output of a child killed half-way as complete.
      const exit = yield* Fiber.await(reader).pipe(within("5 seconds", "the pending read"))
      reasonOf(exit, "Closed", "a read pending at the scope's close")
    })
  )

  it.live("closing the scope lets a child that exits at stdin EOF exit within stdinGrace, without a signal", () =>
    Effect.gen(function* () {
      const scope = yield* Scope.make()
      const cat = yield* Subprocess.spawn("cat", [], { stdinGrace: "5 seconds", killGrace: "5 seconds" }).pipe(
        Scope.provide(scope)
      )
      assert.isTrue(yield* stillRunning(cat))
      const [, millis] = yield* timed(Scope.close(scope, Exit.void).pipe(within("5 seconds", "the scope's close")))
      assert.deepStrictEqual(yield* statusOf(cat), { exitCode: 0, signal: undefined })
      assert.isBelow(millis, 2000, "the close waited for the grace period instead of cat's exit")
      assertReaped(cat.pid, "cat")
    })
  )

  it.live("interrupting a fiber waiting on a child's exit terminates the child and reaps it", () =>
    Effect.gen(function* () {
      const started = yield* Deferred.make<Subprocess.Subprocess>()
      const fiber = yield* Effect.forkChild(
        Effect.scoped(
          Effect.gen(function* () {
            const sleeper = yield* Subprocess.spawn("sleep", ["30"], { stdinGrace: "100 millis" })
            yield* Deferred.succeed(started, sleeper)
            return yield* sleeper.exit
          })
        ),
        { startImmediately: true }
      )
      const sleeper = yield* Deferred.await(started).pipe(within("5 seconds", "the spawn"))
      assert.isTrue(yield* stillRunning(sleeper))
      yield* Fiber.interrupt(fiber).pipe(within("5 seconds", "the interruption"))
      // sleep does not read stdin: closing it changes nothing, SIGTERM after stdinGrace ends it.
      assert.deepStrictEqual(yield* statusOf(sleeper), { exitCode: undefined, signal: "SIGTERM" })
      assertReaped(sleeper.pid, "sleep after the interruption")
    })
  )

  it.live("abort kills the child with SIGKILL at once", () =>
    Effect.gen(function* () {
      const sleeper = yield* Subprocess.spawn("sleep", ["30"])
      yield* sleeper.abort
      const status = yield* exitStatus(sleeper).pipe(within("2 seconds", "the exit after abort"))
      assert.deepStrictEqual(status, { exitCode: undefined, signal: "SIGKILL" })
      assertReaped(sleeper.pid, "sleep after abort")
    })
  )
})

describe("Subprocess: failures and pipelines", () => {
  it.live("pipeThrough fails ProcessFailed with the exit code, the command line and the stderr tail", () =>
    Effect.gen(function* () {
      const args = [fixture("exit-with.mjs"), "3", "no such widget"]
      const exit = yield* Effect.exit(
        Stream.runDrain(Stream.make(text("x")).pipe(Subprocess.pipeThrough(process.execPath, args))).pipe(
          within("5 seconds", "pipeThrough")
        )
      )
      const reason = reasonOf(exit, "ProcessFailed", "a child exiting with 3")
      assert.deepStrictEqual([reason.exitCode, reason.signal], [3, undefined])
      assert.strictEqual(reason.command, `${process.execPath} ${fixture("exit-with.mjs")} 3 'no such widget'`)
      assert.strictEqual(decode(reason.stderrTail), "no such widget\n")
      assert.include(reason.message, "exited with code 3")
      assert.include(reason.message, "no such widget")
    })
  )

  it.live("pipeThrough fails ProcessFailed with the signal of a child killed by one", () =>
    Effect.gen(function* () {
      const exit = yield* Effect.exit(
        Stream.runDrain(
          Stream.make(text("x")).pipe(Subprocess.pipeThrough(process.execPath, [fixture("kill-self.mjs"), "SIGTERM"]))
        ).pipe(within("5 seconds", "pipeThrough"))
      )
      const reason = reasonOf(exit, "ProcessFailed", "a child killing itself")
      assert.deepStrictEqual([reason.exitCode, reason.signal], [undefined, "SIGTERM"])
      assert.strictEqual(decode(reason.stderrTail), "dying\n")
      assert.include(reason.message, "killed by SIGTERM")
    })
  )

  it.live("spawn of a missing command fails SpawnFailed with ENOENT", () =>
    Effect.gen(function* () {
      const exit = yield* Effect.exit(
        Effect.scoped(Subprocess.spawn("fullduplex-no-such-command", ["x"])).pipe(within("5 seconds", "the spawn"))
      )
      const reason = reasonOf(exit, "SpawnFailed", "a missing command")
      assert.deepStrictEqual([reason.code, reason.command], ["ENOENT", "fullduplex-no-such-command x"])
      assert.include(reason.message, "ENOENT")
    })
  )

  it.live("pipeline yes | head -n 3 gives three lines, stops yes at once and reports both exits", () =>
    Effect.gen(function* () {
      const p = yield* Subprocess.pipeline([{ command: "yes" }, { command: "head", args: ["-n", "3"] }])
      yield* p.end
      assert.strictEqual(decode(yield* readAll(p).pipe(within("5 seconds", "the pipeline's output"))), "y\ny\ny\n")
      const [yes, head] = yield* p.exit.pipe(within("5 seconds", "the pipeline's exit"))
      assert.deepStrictEqual(head, { exitCode: 0, signal: undefined })
      // As documented: the upstream's next write fails (SIGPIPE, or EPIPE / ECONNRESET: Node's child stdio
      // are socket pairs, so closing our end with unread data resets it) and it stops with an error.
      const yesStderr = decode((yield* p.stages[0]!.stderrTail).bytes)
      assert.isTrue(
        yes!.signal === "SIGPIPE" || (yes!.exitCode !== 0 && /Broken pipe|Connection reset/.test(yesStderr)),
        `yes stopped with ${JSON.stringify(yes)}, stderr: ${JSON.stringify(yesStderr)}`
      )
      for (const stage of p.stages) assertReaped(stage.pid, stage.command)
    })
  )

  it.live("pipeline drains every stage's stderr: stages writing 1 MiB to stderr do not block it", () =>
    Effect.gen(function* () {
      const stage = { command: process.execPath, args: [fixture("stderr-flood.mjs"), String(MiB)] }
      const p = yield* Subprocess.pipeline([stage, stage, stage])
      const input = randomBytes(256 * KiB, 9)
      const got = yield* Duplex.exchange(p, Stream.fromIterable(randomChunks(input, 16 * KiB, 9)), collectBytes).pipe(
        within("10 seconds", "the pipeline's output")
      )
      sameBytes(got, input, "through three stages")
      const statuses = yield* p.exit.pipe(within("5 seconds", "the pipeline's exit"))
      assert.deepStrictEqual(
        statuses.map((s) => s.exitCode),
        [0, 0, 0]
      )
      for (const [i, proc] of p.stages.entries()) {
        sameBytes((yield* proc.stderrTail).bytes, patternBytes(MiB - 64 * KiB, 64 * KiB), `stage ${i}'s stderr tail`)
      }
    })
  )

  it.live("pipeline exit fails ProcessFailed for the last stage, and for any stage with pipefail", () =>
    Effect.gen(function* () {
      const failing = (code: number, message: string) => ({
        command: process.execPath,
        args: [fixture("exit-with.mjs"), String(code), message]
      })
      const run = (stages: ReadonlyArray<Subprocess.Stage>, pipefail: boolean) =>
        Effect.scoped(
          Effect.gen(function* () {
            const p = yield* Subprocess.pipeline(stages, { pipefail })
            yield* p.end
            yield* readAll(p)
            return yield* p.exit
          })
        ).pipe(within("5 seconds", `a pipeline, pipefail ${pipefail}`), Effect.exit)

      const last = reasonOf(yield* run([{ command: "cat" }, failing(5, "last failed")], false), "ProcessFailed", "last")
      assert.deepStrictEqual([last.exitCode, decode(last.stderrTail)], [5, "last failed\n"])

      const firstOnly = yield* run([failing(4, "first failed"), { command: "cat" }], false)
      assert.isTrue(Exit.isSuccess(firstOnly), "without pipefail only the last stage decides")
      if (Exit.isSuccess(firstOnly))
        assert.deepStrictEqual(
          firstOnly.value.map((s) => s.exitCode),
          [4, 0]
        )

      const first = reasonOf(
        yield* run([failing(4, "first failed"), { command: "cat" }], true),
        "ProcessFailed",
        "first"
      )
      assert.deepStrictEqual([first.exitCode, decode(first.stderrTail)], [4, "first failed\n"])
    })
  )

  it.live("a child writing 16 MiB to stderr and nothing to stdout completes, keeping the exact stderr tail", () =>
    Effect.gen(function* () {
      const size = 16 * MiB
      for (const tailBytes of [undefined, 1000]) {
        const done = yield* Effect.scoped(
          Effect.gen(function* () {
            const child = yield* spawnFixture("stderr-flood.mjs", [size], {
              stderrTailBytes: tailBytes,
              stderr: "tail"
            })
            yield* child.end
            return yield* child.exit
          })
        ).pipe(within("15 seconds", `exit of the stderr flood (tail ${tailBytes ?? "default"})`))
        const keep = tailBytes ?? Subprocess.DEFAULT_STDERR_TAIL_BYTES
        assert.deepStrictEqual([done.exitCode, done.stdout.length], [0, 0])
        sameBytes(done.stderr, patternBytes(size - keep, keep), `the last ${keep} bytes of stderr`)
      }
    })
  )

  it.live("a stderr sink that completes early leaves the child unblocked: exit still completes", () =>
    Effect.gen(function* () {
      // The module's promise: stderr is always drained, so the child never blocks on a pipe nobody reads.
      // `Sink.head()` is done after the first chunk; the other 1 MiB must still go somewhere.
      const child = yield* spawnFixture("stderr-flood.mjs", [MiB], { stderr: Sink.head(), stdinGrace: 0 })
      yield* child.end
      const done = yield* child.exit.pipe(within("5 seconds", "exit of a child whose stderr sink completed early"))
      assert.strictEqual(done.exitCode, 0)
    })
  )

  it.live("the stderr stream delivers what the child writes to stderr", () =>
    Effect.gen(function* () {
      const child = yield* spawnFixture("exit-with.mjs", [0, "to stderr"])
      const got = yield* Stream.run(child.stderr, collectBytes).pipe(within("5 seconds", "the stderr stream"))
      assert.strictEqual(decode(got), "to stderr\n")
      assert.strictEqual((yield* child.exit.pipe(within("5 seconds", "the exit"))).exitCode, 0)
    })
  )
})

describe("Subprocess: stdout modes", () => {
  for (const mode of ["ignore", "inherit"] as const) {
    it.live(`with stdout "${mode}", readable ends at once while the child runs, and exit works`, () =>
      Effect.gen(function* () {
        const cat = yield* Subprocess.spawn("cat", [], { stdout: mode })
        const got = yield* readAll(cat).pipe(within("1 second", "the end of readable"))
        assert.strictEqual(got.length, 0)
        assert.isTrue(yield* stillRunning(cat), "readable ended only because cat exited")
        // cat echoes to the parent's stdout in "inherit" mode: keep the test's output clean.
        if (mode === "ignore") yield* cat.write(text("into the void\n"))
        yield* cat.end
        const done = yield* cat.exit.pipe(within("5 seconds", "cat's exit"))
        assert.deepStrictEqual([done.exitCode, done.signal, done.stdout.length], [0, undefined, 0])
      })
    )
  }
})

describe("Subprocess properties", () => {
  const seed = Number(process.env["FC_SEED"] ?? Math.floor(Math.random() * 2 ** 31))
  // Every run starts a Node child and moves up to 16 MiB in and 48 MiB out (about 0.1 s per run on a 2-core
  // machine, a few seconds for the largest): 50 runs keep this file well inside its 60 s budget even when
  // other test files share the cores, and every run of the suite draws a new seed.
  const numRuns = Number(process.env["FC_RUNS"] ?? 50)

  it.live(
    `a child writing k copies of its input as it reads returns them byte-exact, never hanging (seed ${seed}, ${numRuns} runs)`,
    () =>
      Effect.promise(() =>
        fc.assert(
          fc.asyncProperty(chunkedPayload({ maxBytes: 16 * MiB }), fc.integer({ min: 0, max: 3 }), (input, k) =>
            Effect.runPromise(
              assertDeadlockFree(
                (watch) =>
                  Effect.scoped(
                    Effect.gen(function* () {
                      const child = yield* spawnFixture("repeat.mjs", [k])
                      watch(child)
                      const got = yield* Duplex.exchange(child, Stream.fromIterable(input.chunks), collectBytes)
                      sameBytes(got, repeatBytes(input.payload, k), `k = ${k}, ${input.payload.length} bytes`)
                      assert.strictEqual((yield* child.exit).exitCode, 0)
                    })
                  ),
                { stallTimeout: "5 seconds", timeout: "30 seconds", label: `repeat.mjs ${k}` }
              )
            )
          ),
          { seed, numRuns }
        )
      ),
    120_000
  )
})

describe("Subprocess never hangs, whatever the child or the input does", () => {
  class InputFailed extends Error {}

  it.live("pipeThrough finishes when the child's stdout ends before its input (stdout ignored)", () =>
    Effect.gen(function* () {
      const out = yield* Stream.runCollect(
        Stream.make(text("hello\n")).pipe(Subprocess.pipeThrough("cat", [], { stdout: "ignore" }))
      ).pipe(within("5 seconds", "pipeThrough with stdout ignored"))
      assert.strictEqual(out.length, 0)
    })
  )

  it.live("pipeThrough fails InputNotConsumed when a child that never reads closes stdout first", () =>
    Effect.gen(function* () {
      const input = Stream.fromIterable(Array.from({ length: 64 }, () => new Uint8Array(256 * KiB)))
      const exit = yield* Effect.exit(
        Stream.runDrain(
          input.pipe(Subprocess.pipeThrough("sh", ["-c", "exec 1>&- 0<&-; sleep 0.3"], { failOnUnconsumedInput: true }))
        ).pipe(within("10 seconds", "pipeThrough into a child that reads nothing"))
      )
      assert.strictEqual(duplexErrorOf(exit).reason._tag, "InputNotConsumed")
    })
  )

  it.live("communicate fails with the input's error, and does not wait for the child, when the input fails", () =>
    Effect.gen(function* () {
      const cat = yield* Subprocess.spawn("cat")
      const input = Stream.concat(Stream.make(text("x")), Stream.fail(new InputFailed("the input broke")))
      const exit = yield* Effect.exit(Subprocess.communicate(cat, input).pipe(within("5 seconds", "communicate")))
      assert.isTrue(Exit.isFailure(exit))
      const error = Exit.isFailure(exit) ? exit.cause.reasons.find((r) => r._tag === "Fail") : undefined
      assert.instanceOf(error?._tag === "Fail" ? error.error : undefined, InputFailed)
    })
  )

  it.live("exit returns once the child has exited, even while a grandchild holds its stdout open", () =>
    Effect.gen(function* () {
      const sh = yield* Subprocess.spawn("sh", ["-c", "sleep 3 & echo hi; exit 0"])
      const completed = yield* sh.exit.pipe(within("2500 millis", "exit with a grandchild holding stdout"))
      assert.strictEqual(completed.exitCode, 0)
      assert.strictEqual(decode(completed.stdout), "hi\n")
    })
  )

  it.live("pipeline exit reads the last stage's output nobody read, so the pipeline can finish", () =>
    Effect.gen(function* () {
      const p = yield* Subprocess.pipeline([
        { command: process.execPath, args: [fixture("write-bytes.mjs"), String(MiB)] },
        { command: "cat" }
      ])
      const statuses = yield* p.exit.pipe(within("10 seconds", "the pipeline's exit"))
      assert.deepStrictEqual(
        statuses.map((s) => s.exitCode),
        [0, 0]
      )
    })
  )

  it.live("scope close drains a child blocked on a full stdout, so it ends by itself at stdin EOF", () =>
    Effect.gen(function* () {
      const started = yield* Clock.currentTimeMillis
      const child = yield* Effect.scoped(
        Effect.gen(function* () {
          const child = yield* Subprocess.spawn(process.execPath, [fixture("write-bytes.mjs"), String(MiB)], {
            stdinGrace: "3 seconds"
          })
          yield* Effect.sleep("100 millis") // the child fills its stdout pipe and blocks
          return child
        })
      )
      const took = (yield* Clock.currentTimeMillis) - started
      assert.deepStrictEqual(yield* exitStatus(child), { exitCode: 0, signal: undefined })
      assert.isBelow(took, 2500, "the child was not drained: it waited out stdinGrace and got SIGTERM")
    })
  )

  it.live("an exit interrupted and retried still returns every byte of stdout", () =>
    Effect.gen(function* () {
      const child = yield* Subprocess.spawn("sh", ["-c", `head -c ${4 * MiB} /dev/zero; sleep 0.5`])
      yield* Effect.timeoutOption(child.exit, "200 millis") // interrupted while the child still runs
      const completed = yield* child.exit.pipe(within("5 seconds", "the retried exit"))
      assert.strictEqual(completed.stdout.length, 4 * MiB)
    })
  )

  it.live("bad options and impossible commands fail typed, and leave no child behind", () =>
    Effect.gen(function* () {
      const badHighWaterMark = yield* Effect.exit(Subprocess.spawn("sleep", ["31"], { highWaterMark: 0 }))
      assert.strictEqual(duplexErrorOf(badHighWaterMark).reason._tag, "InvalidOptions")
      const infiniteGrace = yield* Effect.exit(Subprocess.spawn("sleep", ["31"], { killGrace: Infinity }))
      assert.strictEqual(duplexErrorOf(infiniteGrace).reason._tag, "InvalidOptions")
      const nulByte = yield* Effect.exit(Subprocess.spawn("echo", ["a\u0000b"]))
      assert.strictEqual(duplexErrorOf(nulByte).reason._tag, "SpawnFailed")
      const running = execSync("pgrep -x sleep -a || true").toString()
      assert.notInclude(running, "sleep 31", "a child was started before its options were checked")
    })
  )

  it.live("a stderr sink that dies does not stop stderr from being read", () =>
    Effect.gen(function* () {
      const dying = Sink.forEach((_: Uint8Array) => Effect.die(new Error("the sink died")))
      const child = yield* Subprocess.spawn(process.execPath, [fixture("stderr-flood.mjs"), String(4 * MiB)], {
        stderr: dying
      })
      yield* child.end // the fixture copies its stdin to stdout once stderr is written
      const completed = yield* child.exit.pipe(within("10 seconds", "exit with a dying stderr sink"))
      assert.strictEqual(completed.exitCode, 0)
    })
  )
})
