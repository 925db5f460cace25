/**
 * Issue #13: no read order hangs, nothing is silently cut, failures fail, the whole tree stops, errors say
 * what is wrong, and the one-liners.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Stream } from "effect"
import { Subprocess } from "fullduplex"
import { execSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { reasonOf, within } from "./helpers.js"

const MiB = 1024 * 1024

/** 2 MiB of `a` on stdout and 2 MiB of `b` on stderr, written at once by two writers (interleaved). */
const bothOutputs = `head -c ${2 * MiB} /dev/zero | tr '\\0' a & head -c ${2 * MiB} /dev/zero | tr '\\0' b >&2; wait`

const count = (stream: Stream.Stream<Uint8Array, unknown>) =>
  Stream.runFold(
    stream,
    () => 0,
    (n, chunk) => n + chunk.length
  )

type Order = "stdout" | "stderr" | "stdout-then-stderr" | "stderr-then-stdout" | "both" | "neither"

describe("Subprocess: no read order hangs (2 MiB on each output, interleaved)", () => {
  const orders: ReadonlyArray<Order> = [
    "stdout",
    "stderr",
    "stdout-then-stderr",
    "stderr-then-stdout",
    "both",
    "neither"
  ]
  for (const order of orders) {
    it.live(`reading ${order} to the end, then exit, completes with every byte accounted for`, () =>
      Effect.scoped(
        Effect.gen(function* () {
          const proc = yield* Subprocess.spawn("sh", ["-c", bothOutputs])
          yield* proc.end
          let out = 0
          let err = 0
          const readOut = Effect.map(count(proc.readable), (n) => void (out += n))
          const readErr = Effect.map(count(proc.stderr), (n) => void (err += n))
          const reads =
            order === "stdout"
              ? readOut
              : order === "stderr"
                ? readErr
                : order === "stdout-then-stderr"
                  ? Effect.andThen(readOut, readErr)
                  : order === "stderr-then-stdout"
                    ? Effect.andThen(readErr, readOut)
                    : order === "both"
                      ? Effect.all([readOut, readErr], { concurrency: 2, discard: true })
                      : Effect.void
          yield* reads.pipe(within("20 seconds", `reading ${order}`))
          const done = yield* proc.exit.pipe(within("20 seconds", `the exit after reading ${order}`))
          assert.strictEqual(out + done.stdout.length, 2 * MiB, "stdout bytes, read + left for exit")
          assert.strictEqual(err + done.stderr.length, 2 * MiB, "stderr bytes, read + left for exit")
          assert.strictEqual(done.exitCode, 0)
        })
      )
    )
  }

  it.live("stderr in tail mode never pauses the child: reading stdout alone completes, the tail counts the rest", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const proc = yield* Subprocess.spawn("sh", ["-c", bothOutputs], { stderr: "tail", stderrTailBytes: 1000 })
        const out = yield* count(proc.readable).pipe(within("20 seconds", "stdout"))
        const done = yield* proc.exit.pipe(within("20 seconds", "the exit"))
        assert.strictEqual(out, 2 * MiB)
        assert.strictEqual(done.stderr.length, 1000)
        assert.strictEqual(done.stderrDroppedBytes, 2 * MiB - 1000)
        const tail = yield* proc.stderrTail
        assert.deepStrictEqual([tail.totalBytes, tail.droppedBytes], [2 * MiB, 2 * MiB - 1000])
      })
    )
  )

  it.live(
    "stdout nobody reads past maxBuffer while stderr is read: the child still ends, and the loss is reported",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const proc = yield* Subprocess.spawn("sh", ["-c", bothOutputs], { maxBuffer: 100_000 })
          const err = yield* count(proc.stderr).pipe(within("20 seconds", "stderr"))
          assert.strictEqual(err, 2 * MiB, "stderr read whole while stdout overflowed")
          const exit = yield* Effect.exit(proc.exit.pipe(within("20 seconds", "the exit")))
          const reason = reasonOf(exit, "MaxBufferExceeded", "exit after stdout overflowed")
          assert.strictEqual(reason.stream, "stdout")
          assert.strictEqual(reason.captured.length, 100_000)
          assert.isAbove(reason.droppedBytes ?? 0, 0)
          const read = yield* Effect.exit(count(proc.readable).pipe(within("5 seconds", "stdout after overflow")))
          assert.isTrue(Exit.isFailure(read), "reading past the loss fails instead of looking complete")
        })
      )
  )

  it.live("stderr in pipe mode read by nobody past maxBuffer fails exit with MaxBufferExceeded, not a silent cut", () =>
    Effect.gen(function* () {
      const exit = yield* Effect.exit(
        Subprocess.output("sh", ["-c", `head -c ${MiB} /dev/zero >&2`], { maxBuffer: 4096 }).pipe(
          within("20 seconds", "output")
        )
      )
      const reason = reasonOf(exit, "MaxBufferExceeded", "stderr past maxBuffer")
      assert.strictEqual(reason.stream, "stderr")
      assert.strictEqual(reason.captured.length, 4096)
    })
  )
})

describe("Subprocess: a failed command fails", () => {
  it.live("exit, communicate and output fail ProcessFailed on a non-zero exit; reject: false reports it", () =>
    Effect.gen(function* () {
      const script = ["-c", "echo broken >&2; exit 7"]
      const viaOutput = yield* Effect.exit(Subprocess.output("sh", script))
      const failed = reasonOf(viaOutput, "ProcessFailed", "output")
      assert.deepStrictEqual([failed.exitCode, new TextDecoder().decode(failed.stderrTail)], [7, "broken\n"])
      const viaExit = yield* Effect.exit(Effect.scoped(Effect.flatMap(Subprocess.spawn("sh", script), (p) => p.exit)))
      assert.strictEqual(reasonOf(viaExit, "ProcessFailed", "exit").exitCode, 7)
      const viaCommunicate = yield* Effect.exit(
        Effect.scoped(Effect.flatMap(Subprocess.spawn("sh", script), (p) => Subprocess.communicate(p, Stream.empty)))
      )
      assert.strictEqual(reasonOf(viaCommunicate, "ProcessFailed", "communicate").exitCode, 7)
      const reported = yield* Subprocess.output("sh", script, { reject: false })
      assert.deepStrictEqual([reported.exitCode, new TextDecoder().decode(reported.stderr)], [7, "broken\n"])
      const lines = yield* Effect.exit(Stream.runCollect(Subprocess.lines("sh", ["-c", "echo a; exit 2"])))
      assert.strictEqual(reasonOf(lines, "ProcessFailed", "lines").exitCode, 2)
    })
  )
})

describe("Subprocess: the whole tree stops", () => {
  /** Processes whose command line holds `marker`, from `ps`. */
  const survivors = (marker: string): Array<string> =>
    execSync("ps -eo pid=,stat=,args=")
      .toString()
      .split("\n")
      .filter((line) => line.includes(marker) && !/\sZ/.test(line) && !line.includes("ps -eo"))

  const grandchild = (seconds: string) => ["-c", `sleep ${seconds} & sleep ${seconds}; wait`]

  it.live("scope close stops the child and its grandchildren: ps finds none left", () =>
    Effect.gen(function* () {
      const marker = "31.413"
      yield* Effect.scoped(
        Effect.gen(function* () {
          yield* Subprocess.spawn("sh", grandchild(marker), { stdinGrace: 0 })
          yield* Effect.sleep("100 millis")
          assert.isAtLeast(survivors(marker).length, 2, "the grandchildren started")
        })
      ).pipe(within("10 seconds", "the scope close"))
      assert.deepStrictEqual(survivors(marker), [], "processes left after the scope closed")
    })
  )

  it.live(
    "abort stops the grandchildren too; a grandchild left behind by a child that exited goes at scope close",
    () =>
      Effect.gen(function* () {
        const marker = "31.414"
        yield* Effect.scoped(
          Effect.gen(function* () {
            const proc = yield* Subprocess.spawn("sh", grandchild(marker))
            yield* Effect.sleep("100 millis")
            yield* proc.abort
            yield* Effect.sleep("200 millis")
            assert.deepStrictEqual(survivors(marker), [], "after abort")
          })
        )
        const orphan = "31.415"
        yield* Effect.scoped(
          Effect.gen(function* () {
            const proc = yield* Subprocess.spawn("sh", ["-c", `sleep ${orphan} >/dev/null 2>&1 </dev/null & exit 0`])
            yield* proc.exit.pipe(within("5 seconds", "the child's exit"))
            assert.strictEqual(survivors(orphan).length, 1, "the background grandchild outlived its parent")
          })
        ).pipe(within("10 seconds", "the scope close"))
        assert.deepStrictEqual(survivors(orphan), [], "the orphan after the scope closed")
      })
  )

  it.live("killTree: false keeps the old behaviour: a grandchild outlives the scope", () =>
    Effect.gen(function* () {
      const marker = "31.416"
      yield* Effect.scoped(
        Effect.gen(function* () {
          const proc = yield* Subprocess.spawn("sh", ["-c", `sleep ${marker} >/dev/null 2>&1 </dev/null & exit 0`], {
            killTree: false
          })
          yield* proc.exit
        })
      )
      const left = survivors(marker)
      assert.strictEqual(left.length, 1, "the grandchild was kept")
      process.kill(Number(left[0]!.trim().split(/\s+/)[0]), "SIGKILL")
    })
  )
})

describe("Subprocess: errors say what is wrong", () => {
  it.live("a missing cwd, a cwd that is a file, a file that may not run, a missing file and a missing command", () =>
    Effect.gen(function* () {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "fullduplex-spawn-"))
      const file = path.join(dir, "not-executable.sh")
      fs.writeFileSync(file, "#!/bin/sh\necho hi\n", { mode: 0o644 })
      const problem = (command: string, cwd?: string) =>
        Effect.map(Effect.exit(Subprocess.output(command, [], cwd === undefined ? {} : { cwd })), (exit) => {
          const reason = reasonOf(exit, "SpawnFailed", command)
          return [reason.problem, reason.message] as const
        })
      const cases = [
        yield* problem("ls", path.join(dir, "missing")),
        yield* problem("ls", file),
        yield* problem(file),
        yield* problem(path.join(dir, "missing-program")),
        yield* problem("no-such-command-fullduplex")
      ]
      fs.rmSync(dir, { recursive: true })
      assert.deepStrictEqual(
        cases.map(([p]) => p),
        ["CwdNotFound", "CwdNotDirectory", "NotExecutable", "FileNotFound", "CommandNotFound"]
      )
      assert.strictEqual(new Set(cases.map(([, m]) => m.replace(/`[^`]*`/, ""))).size, 5, "five distinct messages")
      assert.include(cases[0]![1], "working directory")
      assert.include(cases[4]![1], "PATH")
    })
  )
})

describe("Subprocess: one-liners", () => {
  it.live("output captures stdout and stderr whole with the exit code and the duration; lines splits stdout", () =>
    Effect.gen(function* () {
      const done = yield* Subprocess.output("sh", ["-c", "cat; echo err >&2"], { input: "hello\n" })
      assert.deepStrictEqual(
        [new TextDecoder().decode(done.stdout), new TextDecoder().decode(done.stderr), done.exitCode],
        ["hello\n", "err\n", 0]
      )
      assert.isAtLeast(done.durationMillis, 0)
      const lines = yield* Stream.runCollect(Subprocess.lines("printf", ["a\\nb\\r\\nc"]))
      assert.deepStrictEqual(lines, ["a", "b", "c"])
    })
  )

  it.live("an interrupted output stops its child", () =>
    Effect.gen(function* () {
      const fiber = yield* Effect.forkChild(Subprocess.output("sleep", ["31.417"]))
      yield* Effect.sleep("100 millis")
      yield* Fiber.interrupt(fiber).pipe(within("10 seconds", "the interruption"))
      const left = execSync("ps -eo stat=,args=")
        .toString()
        .split("\n")
        .filter((l) => l.includes("31.417") && !l.startsWith("Z"))
      assert.deepStrictEqual(left, [])
    })
  )
})
