/**
 * Child processes as duplexes that cannot deadlock: stdin is the write side, stdout is `readable`, and
 * stderr is always drained, so the child never blocks on a pipe nobody reads.
 *
 * The classic hang: a parent writes a child's stdin while the child writes stdout (or stderr) that nobody
 * reads; both pipes fill and both processes wait forever. Here stdout is read concurrently by
 * `exchange`, `pipeThrough` and `communicate`; stderr goes to a bounded tail (or your sink) from the
 * start; and `exit` drains what is left of stdout into a bounded capture while it waits.
 *
 * Processes are started with execa 10. Closing the scope terminates a child still running: stdin is
 * closed, then after `stdinGrace` SIGTERM, then after `killGrace` SIGKILL; the child is always reaped.
 *
 * @since 0.1.0
 */
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import { dual } from "effect/Function"
import * as Option from "effect/Option"
import type * as Cause from "effect/Cause"
import * as Queue from "effect/Queue"
import type * as Scope from "effect/Scope"
import * as Sink from "effect/Sink"
import * as Stream from "effect/Stream"
import type { execa as Execa } from "execa"
import type { ChildProcess } from "node:child_process"
import * as NodeStream from "node:stream"
import * as Duplex from "./Duplex.js"
import {
  DuplexError,
  InputNotConsumed,
  isDuplexError,
  MaxBufferExceeded,
  ProcessFailed,
  SpawnFailed
} from "./DuplexError.js"
import { withPorts } from "./internal/bytePipe.js"
import * as nodeDuplex from "./internal/nodeDuplex.js"
import { readableAlongside } from "./internal/through.js"
import { codeOf, invalidOptions } from "./internal/errors.js"

/**
 * Default size of the stderr tail kept for error messages: 64 KiB.
 *
 * @category constants
 * @since 0.1.0
 */
export const DEFAULT_STDERR_TAIL_BYTES = 64 * 1024

/**
 * Default bound of the stdout captured by `exit` and `communicate`: 64 MiB.
 *
 * @category constants
 * @since 0.1.0
 */
export const DEFAULT_MAX_BUFFER_BYTES = 64 * 1024 * 1024

/**
 * How long a child gets to exit after its stdin is closed at scope close, by default: 1 s.
 *
 * @category constants
 * @since 0.1.0
 */
export const DEFAULT_STDIN_GRACE: Duration.Duration = Duration.seconds(1)

/**
 * How long a child gets after SIGTERM before SIGKILL, by default: 5 s (execa's `forceKillAfterDelay`).
 *
 * @category constants
 * @since 0.1.0
 */
export const DEFAULT_KILL_GRACE: Duration.Duration = Duration.seconds(5)

/**
 * Where a child's stdout goes: `pipe` (the default: `readable`), `ignore` (discarded by the OS) or
 * `inherit` (the parent's stdout).
 *
 * @category models
 * @since 0.1.0
 */
export type StdoutMode = "pipe" | "ignore" | "inherit"

/**
 * Where a child's stderr goes: `tail` (the default: read as it comes, the last `stderrTailBytes` kept
 * for error messages, also readable live from `stderr`), a `Sink` of yours (which receives every byte,
 * with backpressure: a sink that stops stops the child), `ignore` or `inherit`.
 *
 * @category models
 * @since 0.1.0
 */
export type StderrMode = "tail" | "ignore" | "inherit" | Sink.Sink<unknown, Uint8Array, unknown, never, never>

/**
 * Options of {@link spawn}.
 *
 * @category models
 * @since 0.1.0
 */
export interface SpawnOptions {
  readonly cwd?: string | undefined
  /** Variables added to (or, with `extendEnv: false`, replacing) the parent's environment. */
  readonly env?: Readonly<Record<string, string | undefined>> | undefined
  readonly extendEnv?: boolean | undefined
  readonly stdout?: StdoutMode | undefined
  readonly stderr?: StderrMode | undefined
  /** Bytes of stderr kept by the `tail` mode. Default {@link DEFAULT_STDERR_TAIL_BYTES} (64 KiB). */
  readonly stderrTailBytes?: number | undefined
  /** The most stdout `exit` captures. Default {@link DEFAULT_MAX_BUFFER_BYTES} (64 MiB). */
  readonly maxBuffer?: number | undefined
  /** Bytes of stdout held before the pipe is paused, and the largest piece written to stdin. Default 64 KiB. */
  readonly highWaterMark?: number | undefined
  /** At scope close, how long after closing stdin before SIGTERM. Default 1 s. */
  readonly stdinGrace?: Duration.Input | undefined
  /** At scope close, how long after SIGTERM before SIGKILL. Default 5 s. */
  readonly killGrace?: Duration.Input | undefined
  /** Name for errors. Default the command line. */
  readonly label?: string | undefined
}

/**
 * How a child ended: its exit code, or the signal that killed it.
 *
 * @category models
 * @since 0.1.0
 */
export interface ExitStatus {
  readonly exitCode?: number | undefined
  readonly signal?: string | undefined
}

/**
 * What {@link Subprocess.exit} returns: the status, the stdout nobody had read (captured up to
 * `maxBuffer`), and the stderr tail.
 *
 * @category models
 * @since 0.1.0
 */
export interface Completed extends ExitStatus {
  readonly stdout: Uint8Array
  readonly stderrTail: Uint8Array
}

/**
 * A running child process: a {@link Duplex.Duplex} (stdin is the write side, stdout is `readable`) plus
 * its stderr, its exit and its pid.
 *
 * **Details**
 *
 * - `exit`: waits for the child to end. Meanwhile it reads whatever stdout is still unread into a
 *   capture of at most `maxBuffer` bytes (so a child whose stdout nobody reads cannot block); beyond the
 *   limit the child is killed and reaped, and `exit` fails with `MaxBufferExceeded`, whose `captured`
 *   holds the bytes read so far. A non-zero exit code is a status, not an error, here.
 * - `stderr`: stderr as it arrives (the `tail` mode). It is read whether or not you consume it; a
 *   consumer that falls behind by more than 64 chunks loses the oldest. `stderrTail` is the last
 *   `stderrTailBytes`.
 * - `abort` kills the child (SIGKILL); `end` closes its stdin. A write after the child has closed its stdin
 *   or exited fails `Broken` with code `EPIPE`.
 *
 * **Gotchas**
 *
 * `exit` reads from the same stdout as `readable`: read stdout first, or instead; do not run both at
 * once.
 *
 * @category models
 * @since 0.1.0
 */
export interface Subprocess extends Duplex.Duplex {
  readonly pid: number | undefined
  /** The command line, for messages. */
  readonly command: string
  readonly exit: Effect.Effect<Completed, DuplexError>
  /** The exit status alone, without touching stdout (once stderr has closed too, at most 1 s later). */
  readonly status: Effect.Effect<ExitStatus>
  readonly stderr: Stream.Stream<Uint8Array>
  readonly stderrTail: Effect.Effect<Uint8Array>
  readonly kill: (signal?: NodeJS.Signals) => Effect.Effect<void>
  /**
   * Stops reading stdout and closes our end of the pipe: the child's next write fails (SIGPIPE, `EPIPE`,
   * or `ECONNRESET`, since Node's child stdio are socket pairs), as the upstream of a shell pipeline's
   * does when its downstream exits.
   */
  readonly closeStdout: Effect.Effect<void>
}

/** How long `exit` waits for stderr to close after the child has exited. */
const STDERR_AFTER_EXIT_MILLIS = 1000

/**
 * execa, loaded at the first spawn: a program that never starts a child (a TCP server importing the root
 * module) does not pay its start-up (about 80 ms of CPU and 6 MiB of RSS on the development machine, Node 24).
 */
let execaModule: Promise<typeof Execa> | undefined
const loadExeca: Effect.Effect<typeof Execa> = Effect.promise(() => {
  execaModule ??= import("execa").then((m) => m.execa)
  return execaModule
})

const quote = (arg: string) => (/^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`)

const commandLine = (command: string, args: ReadonlyArray<string>) => [command, ...args].map(quote).join(" ")

/** The last `limit` bytes of what was appended. */
class Tail {
  private chunks: Array<Uint8Array> = []
  private bytes = 0
  constructor(private readonly limit: number) {}
  append(chunk: Uint8Array) {
    if (this.limit === 0) return
    this.chunks.push(chunk)
    this.bytes += chunk.length
    while (this.chunks.length > 1 && this.bytes - this.chunks[0]!.length >= this.limit) {
      this.bytes -= this.chunks.shift()!.length
    }
  }
  get value(): Uint8Array {
    const all = Buffer.concat(this.chunks)
    return all.length > this.limit ? all.subarray(all.length - this.limit) : all
  }
}

/**
 * Starts a child process as a {@link Subprocess}, owned by the scope.
 *
 * **When to use**
 *
 * For any child you talk to. Write and read it concurrently (`Duplex.exchange`, {@link communicate}), or
 * use {@link pipeThrough} for a stream, and `exit` for the result.
 *
 * **Details**
 *
 * A command that cannot start fails with reason `SpawnFailed`. Writing after the child closed its stdin
 * fails `Broken` with code `EPIPE` (never an uncaught exception). stderr is read from the start (see
 * {@link StderrMode}).
 *
 * **Interruption**
 *
 * Interrupting `spawn` itself kills the half-started child.
 *
 * **Closing**
 *
 * Closing the scope terminates a child still running: stdin closed, `stdinGrace` (1 s), SIGTERM,
 * `killGrace` (5 s), SIGKILL; it waits until the child is reaped, so no zombie is left.
 *
 * **Example** (Upper-casing through `tr`)
 *
 * ```ts
 * import { Effect, Sink, Stream } from "effect"
 * import { Duplex, Subprocess } from "fullduplex"
 *
 * const program = Effect.scoped(
 *   Effect.gen(function* () {
 *     const tr = yield* Subprocess.spawn("tr", ["a-z", "A-Z"])
 *     const out = yield* Duplex.exchange(tr, Stream.make(new TextEncoder().encode("hello\n")), Sink.collect())
 *     const { exitCode } = yield* tr.exit
 *     return { out, exitCode }
 *   })
 * )
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const spawn = (
  command: string,
  args: ReadonlyArray<string> = [],
  options: SpawnOptions = {}
): Effect.Effect<Subprocess, DuplexError, Scope.Scope> =>
  Effect.gen(function* () {
    const line = commandLine(command, args)
    const label = options.label ?? line
    const tailBytes = options.stderrTailBytes ?? DEFAULT_STDERR_TAIL_BYTES
    const maxBuffer = options.maxBuffer ?? DEFAULT_MAX_BUFFER_BYTES
    const stdinGraceMillis = Duration.toMillis(options.stdinGrace ?? DEFAULT_STDIN_GRACE)
    const killGraceMillis = Duration.toMillis(options.killGrace ?? DEFAULT_KILL_GRACE)
    for (const [option, value, ok, expected] of [
      ["stderrTailBytes", tailBytes, Number.isSafeInteger(tailBytes) && tailBytes >= 0, "a whole number ≥ 0"],
      ["maxBuffer", maxBuffer, Number.isSafeInteger(maxBuffer) && maxBuffer >= 0, "a whole number ≥ 0"],
      [
        "stdinGrace",
        options.stdinGrace,
        stdinGraceMillis >= 0 && Number.isFinite(stdinGraceMillis),
        "a finite duration ≥ 0"
      ],
      [
        "killGrace",
        options.killGrace,
        killGraceMillis >= 0 && Number.isFinite(killGraceMillis),
        "a finite duration ≥ 0"
      ],
      [
        "highWaterMark",
        options.highWaterMark,
        options.highWaterMark === undefined ||
          (Number.isSafeInteger(options.highWaterMark) && options.highWaterMark >= 1),
        "a whole number of bytes ≥ 1"
      ],
      [
        "stdout",
        options.stdout,
        ["pipe", "ignore", "inherit", undefined].includes(options.stdout),
        "pipe, ignore or inherit"
      ],
      [
        "stderr",
        typeof options.stderr === "string" ? options.stderr : "a sink",
        options.stderr === undefined ||
          (typeof options.stderr === "string"
            ? ["tail", "ignore", "inherit"].includes(options.stderr)
            : Sink.isSink(options.stderr)),
        "tail, ignore, inherit or a Sink"
      ]
    ] as const) {
      if (!ok) return yield* invalidOptions(label, option, value, expected)
    }
    const stdoutMode = options.stdout ?? "pipe"
    const stderrOption = options.stderr ?? "tail"
    const stderrMode = typeof stderrOption === "string" ? stderrOption : "sink"

    // ---- start --------------------------------------------------------------------------------------
    const execa = yield* loadExeca
    const child = yield* Effect.callback<ChildProcess, DuplexError>((resume) => {
      const start = () =>
        execa(command, [...args], {
          stdin: "pipe",
          stdout: stdoutMode,
          stderr: stderrMode === "tail" || stderrMode === "sink" ? "pipe" : stderrMode,
          buffer: false,
          reject: false,
          encoding: "buffer",
          stripFinalNewline: false,
          cleanup: true,
          extendEnv: options.extendEnv ?? true,
          ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
          ...(options.env === undefined ? {} : { env: options.env })
        })
      let settled = false
      const failed = (err: unknown) => {
        if (settled) return
        settled = true
        resume(
          Exit.fail(
            new DuplexError({ reason: new SpawnFailed({ label, command: line, code: codeOf(err), cause: err }) })
          )
        )
      }
      let started: ReturnType<typeof start>
      try {
        started = start()
      } catch (err) {
        // execa throws at once for what cannot be a command at all (a NUL byte in an argument, …).
        return failed(err)
      }
      const child: ChildProcess | undefined = started.nodeChildProcess
      // execa's own result is used only to learn of a spawn that failed before Node could report it; with
      // `reject: false` it never rejects, but it must never be left to reject unhandled either.
      Promise.resolve(started).then((result) => {
        if (result.failed && child?.pid === undefined) failed(result.cause ?? result)
      }, failed)
      if (child === undefined) return
      child.once("spawn", () => {
        if (settled) return
        settled = true
        resume(Effect.succeed(child))
      })
      child.once("error", failed)
      return Effect.sync(() => {
        child.kill("SIGKILL")
      })
    })
    for (const s of [child.stdin, child.stdout, child.stderr]) s?.on("error", () => {})

    const exited = Deferred.makeUnsafe<ExitStatus>()
    const onExit = (code: number | null, signal: NodeJS.Signals | null) =>
      Deferred.doneUnsafe(
        exited,
        Exit.succeed({ exitCode: code ?? undefined, signal: signal ?? undefined } satisfies ExitStatus)
      )
    if (child.exitCode !== null || child.signalCode !== null) onExit(child.exitCode, child.signalCode)
    else child.once("exit", onExit)
    const exitedStatus = Deferred.await(exited)
    const hasExited = () => Deferred.isDoneUnsafe(exited)

    // ---- stderr -------------------------------------------------------------------------------------
    const tail = new Tail(tailBytes)
    const live = yield* Queue.sliding<Uint8Array, Cause.Done>(64)
    let stderrDone: Effect.Effect<void> = Effect.void
    if (stderrMode === "tail" && child.stderr !== null) {
      const stderr = child.stderr
      const ended = Deferred.makeUnsafe<void>()
      stderr.on("data", (chunk: Uint8Array) => {
        tail.append(chunk)
        Queue.offerUnsafe(live, chunk)
      })
      stderr.once("close", () => {
        Queue.endUnsafe(live)
        Deferred.doneUnsafe(ended, Exit.void)
      })
      stderrDone = Deferred.await(ended)
    } else if (stderrMode === "sink" && child.stderr !== null) {
      Queue.endUnsafe(live)
      const parts = yield* nodeDuplex.makeParts(child.stderr, nullWritable(), { label: `${label} stderr` }, () => {})
      const sink = stderrOption as Sink.Sink<unknown, Uint8Array, unknown, never, never>
      const tapped = Stream.tap(parts.readable, (chunk) => Effect.sync(() => tail.append(chunk)))
      // A sink that is done early (`Sink.head`) must not leave stderr unread: the rest goes to the tail.
      const drained = yield* Effect.forkScoped(
        // Whatever the sink does (done early, failed, died), the rest of stderr is still read.
        Effect.exit(Stream.run(tapped, sink)).pipe(Effect.andThen(Stream.runDrain(tapped)), Effect.ignoreCause)
      )
      stderrDone = Effect.asVoid(Fiber.await(drained))
    } else {
      Queue.endUnsafe(live)
    }

    // The status once stderr is closed too (so that the tail is complete), unless a grandchild holds
    // stderr open: that is not waited for longer than a moment.
    const status = Effect.tap(exitedStatus, () => Effect.timeoutOption(stderrDone, STDERR_AFTER_EXIT_MILLIS))

    // ---- stdin and stdout as one duplex -------------------------------------------------------------
    const kill = (signal: NodeJS.Signals = "SIGTERM") =>
      Effect.sync(() => {
        if (!hasExited()) child.kill(signal)
      })
    const stdin = child.stdin!
    // Node destroys stdin when the child exits, and a write then finds it closed with no error of its
    // own: that is a broken pipe all the same, as a write into a child that closed its stdin is.
    const closedCode = () => (hasExited() ? "EPIPE" : undefined)
    const parts =
      child.stdout !== null
        ? yield* nodeDuplex.makeParts(
            child.stdout,
            stdin,
            { label, highWaterMark: options.highWaterMark, closedCode },
            (graceful) => {
              if (!graceful && !hasExited()) child.kill("SIGKILL")
              child.stdout?.destroy()
              stdin.destroy()
            }
          )
        : yield* nodeDuplex.makeParts(
            emptyReadable(),
            stdin,
            { label, highWaterMark: options.highWaterMark, closedCode },
            (graceful) => {
              if (!graceful && !hasExited()) child.kill("SIGKILL")
              stdin.destroy()
            }
          )
    const duplex = withPorts(Duplex.make(parts), parts.inbound, parts.outbound)

    // ---- termination: registered after the adapter, so that it runs before the adapter's own finalizer
    // (finalizers run in reverse order), which would otherwise kill the child at once -----------------
    const waitExit = (millis: number) => Effect.timeoutOption(exitedStatus, millis)
    yield* Effect.addFinalizer(() =>
      Effect.gen(function* () {
        // Our side first: a read or write still pending fails `Closed` (what it was cut short by), before
        // the child's end could pass for a complete output. What the child still writes is discarded.
        parts.closeLocal()
        if (!hasExited()) {
          child.stdin?.end()
          if (Option.isNone(yield* waitExit(stdinGraceMillis))) {
            child.kill("SIGTERM")
            if (Option.isNone(yield* waitExit(killGraceMillis))) {
              child.kill("SIGKILL")
              yield* exitedStatus // SIGKILL cannot be ignored: the exit comes, and Node reaps the child
            }
          }
        }
        for (const s of [child.stdin, child.stdout, child.stderr]) s?.destroy()
      })
    )

    // What `exit` has read of stdout, kept across calls: an interrupted `exit` loses nothing it had read.
    const capture = { chunks: [] as Array<Uint8Array>, bytes: 0, overflow: false }
    let stdoutClosedByUs = false
    const drainStdout = Stream.runForEachWhile(duplex.readable, (chunk) =>
      Effect.sync(() => {
        if (capture.bytes + chunk.length > maxBuffer) {
          capture.chunks.push(chunk.subarray(0, maxBuffer - capture.bytes))
          capture.bytes = maxBuffer
          capture.overflow = true
          return false
        }
        capture.chunks.push(chunk)
        capture.bytes += chunk.length
        return true
      })
    ).pipe(
      Effect.catchReason("DuplexError", "Closed", () => Effect.void),
      // Our own `closeStdout` ends stdout early: that is the end of what there is to read.
      Effect.catchReason("DuplexError", "Broken", (reason) =>
        stdoutClosedByUs ? Effect.void : Effect.fail(new DuplexError({ reason }))
      )
    )
    const exit: Effect.Effect<Completed, DuplexError> = Effect.gen(function* () {
      // Read what is left of stdout while the child runs, so that it cannot block on a full pipe. Once the
      // child has exited, stdout gets a moment to end; a grandchild that holds it open is not waited for.
      yield* Effect.raceFirst(drainStdout, Effect.andThen(exitedStatus, Effect.sleep(STDERR_AFTER_EXIT_MILLIS)))
      if (capture.overflow) {
        if (!hasExited()) child.kill("SIGKILL")
        yield* exitedStatus
        return yield* new DuplexError({
          reason: new MaxBufferExceeded({
            label,
            command: line,
            stream: "stdout",
            limit: maxBuffer,
            captured: Buffer.concat(capture.chunks)
          })
        })
      }
      const done = yield* status
      return { ...done, stdout: Buffer.concat(capture.chunks), stderrTail: tail.value }
    })

    const subprocess: Subprocess = extend(duplex, {
      pid: child.pid,
      command: line,
      exit,
      status,
      stderr: Stream.fromQueue(live),
      stderrTail: Effect.sync(() => tail.value),
      kill,
      closeStdout: Effect.sync(() => {
        stdoutClosedByUs = true
        child.stdout?.destroy()
      })
    })
    return subprocess
  })

/** A duplex with more members: the same duplex (its type id and `pipe` included), plus `extra`. */
const extend = <X extends object>(duplex: Duplex.Duplex, extra: X): Duplex.Duplex & X =>
  Object.assign(Object.create(Object.getPrototypeOf(duplex)), duplex, extra)

const emptyReadable = (): NodeStream.Readable => NodeStream.Readable.from([])

const nullWritable = (): NodeStream.Writable =>
  new NodeStream.Writable({ write: (_chunk, _encoding, callback) => callback() })

/**
 * Options of {@link pipeThrough} and {@link communicate}.
 *
 * @category models
 * @since 0.1.0
 */
export interface RunOptions extends SpawnOptions {
  /**
   * When the child exits without reading all of its input: `false` (the default) drops the rest and
   * reports the count; `true` fails with reason `InputNotConsumed`.
   */
  readonly failOnUnconsumedInput?: boolean | undefined
}

/** What feeding a child's stdin came to. */
interface Fed {
  /** Whether the child stopped reading (EPIPE) before the input ended. */
  readonly stopped: boolean
  /** Input bytes not written because of that. */
  readonly unconsumed: number
}

/**
 * Writes `input` to the child's stdin, then ends it. When the child stops reading (EPIPE) the writing
 * stops; with `countRest` the rest of the input is still pulled and counted (one pass: a stream can be
 * re-run from its start, so a second run could not count it). If the input fails, or this is
 * interrupted, stdin is closed all the same, so the child is never left waiting for an EOF.
 */
const feed = <E, R>(
  proc: Subprocess,
  input: Stream.Stream<Uint8Array, E, R>,
  countRest: boolean
): Effect.Effect<Fed, DuplexError | E, R> =>
  Effect.suspend(() => {
    let unconsumed = 0
    let stopped = false
    const isBrokenPipe = (error: unknown): error is DuplexError =>
      isDuplexError(error) && error.reason._tag === "Broken"
    const endQuietly = Effect.ignore(proc.end)
    return Effect.gen(function* () {
      const before = (yield* proc.stats).outbound.bytes
      let offered = 0
      // Each batch of the input is one `writeAll` (no effect per chunk); a broken pipe stops the writing.
      yield* Stream.runForEachArray(input, (chunks) => {
        let bytes = 0
        for (const chunk of chunks) bytes += chunk.length
        if (stopped) {
          unconsumed += bytes
          return Effect.void
        }
        offered += bytes
        return proc.writeAll(chunks).pipe(
          Effect.catchIf(isBrokenPipe, () =>
            Effect.flatMap(proc.stats, (stats) => {
              stopped = true
              unconsumed += offered - (stats.outbound.bytes - before)
              return countRest ? Effect.void : Effect.fail(stopFeeding)
            })
          )
        )
      }).pipe(
        Effect.catchIf(
          (error): error is typeof stopFeeding => error === stopFeeding,
          () => Effect.void
        )
      )
      if (!stopped) yield* proc.end.pipe(Effect.catchIf(isBrokenPipe, () => Effect.void))
      return { stopped, unconsumed } satisfies Fed
    }).pipe(Effect.onExit((exit) => (Exit.isSuccess(exit) ? Effect.void : endQuietly)))
  })

/** The feeding stops pulling its input (the child stopped reading and the rest is not counted). */
const stopFeeding: unique symbol = Symbol("fullduplex/Subprocess/stopFeeding")

const notConsumed = (proc: Subprocess, fed: Fed) =>
  new DuplexError({
    reason: new InputNotConsumed({ label: proc.label, command: proc.command, unconsumedBytes: fed.unconsumed })
  })

const checkStatus = (proc: Subprocess, status: ExitStatus): Effect.Effect<void, DuplexError> =>
  status.exitCode === 0
    ? Effect.void
    : Effect.flatMap(proc.stderrTail, (stderrTail) =>
        Effect.fail(
          new DuplexError({
            reason: new ProcessFailed({
              label: proc.label,
              command: proc.command,
              exitCode: status.exitCode,
              signal: status.signal,
              stderrTail
            })
          })
        )
      )

/**
 * A child process as a stream transformer: `input` goes to its stdin while its stdout is read, at once.
 *
 * **When to use**
 *
 * To filter a stream through a command (`gzip`, `jq`, `sort`) with backpressure end to end.
 *
 * **Details**
 *
 * The output ends when the child's stdout does; then the exit is checked: a non-zero code or a signal
 * fails the stream with reason `ProcessFailed` (exit code, signal, command line, stderr tail). A child
 * that exits without reading all its input (`head`) is not an error unless `failOnUnconsumedInput`.
 *
 * **Example** (Compressing a stream with gzip)
 *
 * ```ts
 * import { Stream } from "effect"
 * import { Subprocess } from "fullduplex"
 *
 * const gzipped = Stream.make(new TextEncoder().encode("hello")).pipe(Subprocess.pipeThrough("gzip", ["-c"]))
 * ```
 *
 * @category combinators
 * @since 0.1.0
 */
export const pipeThrough: {
  (
    command: string,
    args?: ReadonlyArray<string>,
    options?: RunOptions
  ): <E, R>(input: Stream.Stream<Uint8Array, E, R>) => Stream.Stream<Uint8Array, DuplexError | E, R>
  <E, R>(
    input: Stream.Stream<Uint8Array, E, R>,
    command: string,
    args?: ReadonlyArray<string>,
    options?: RunOptions
  ): Stream.Stream<Uint8Array, DuplexError | E, R>
} = dual(
  (args) => Stream.isStream(args[0]),
  <E, R>(
    input: Stream.Stream<Uint8Array, E, R>,
    command: string,
    args: ReadonlyArray<string> = [],
    options: RunOptions = {}
  ): Stream.Stream<Uint8Array, DuplexError | E, R> =>
    Stream.unwrap(
      Effect.gen(function* () {
        const proc = yield* spawn(command, args, options)
        // Deadlock freedom: stdin is fed by a fiber of its own while the stream reads stdout.
        const feeder = yield* Effect.forkScoped(feed(proc, input, false))
        const fed = Fiber.join(feeder)
        const outcome = Effect.gen(function* () {
          // The child's stdout has ended; its stdin is fed to the end (or until it stops reading).
          const result = yield* fed
          yield* checkStatus(proc, yield* proc.status)
          if (result.stopped && options.failOnUnconsumedInput === true) return yield* notConsumed(proc, result)
        })
        return Stream.concat(
          // A failing input fails the output at once, instead of leaving the child waiting for more.
          readableAlongside(proc, feeder),
          Stream.drain(Stream.fromEffect(outcome))
        )
      })
    )
)

/**
 * What {@link communicate} returns.
 *
 * @category models
 * @since 0.1.0
 */
export interface Communicated extends ExitStatus {
  readonly stdout: Uint8Array
  /** The stderr tail (the last `stderrTailBytes`, 64 KiB by default). */
  readonly stderr: Uint8Array
  /**
   * Input bytes not written because the child had stopped reading (`EPIPE`): the rest of the input is
   * still pulled, and counted, but not written. (Bytes the pipe accepted that the child then never read
   * cannot be seen from here and are not counted.) 0 when the child read everything.
   */
  readonly unconsumedInputBytes: number
}

/**
 * Sends `input` to a child's stdin while reading its stdout, then waits for it to exit.
 *
 * **When to use**
 *
 * Python's `Popen.communicate`: give a process its whole input and get its whole output, without the
 * deadlock of writing first and reading after.
 *
 * **Details**
 *
 * stdout is captured up to `maxBuffer` (of the spawn options; 64 MiB by default); beyond it the child is
 * killed and the result fails `MaxBufferExceeded`. A non-zero exit is reported in `exitCode`, not as an
 * error. A child that exits without reading all of `input` is a success with `unconsumedInputBytes`
 * (or reason `InputNotConsumed` with `failOnUnconsumedInput`); the input is pulled to its end either way,
 * so give `communicate` a finite input.
 *
 * **Example** (Sorting lines)
 *
 * ```ts
 * import { Effect, Stream } from "effect"
 * import { Subprocess } from "fullduplex"
 *
 * const sorted = Effect.scoped(
 *   Effect.flatMap(Subprocess.spawn("sort"), (sort) =>
 *     Subprocess.communicate(sort, Stream.make(new TextEncoder().encode("b\na\n")))
 *   )
 * )
 * ```
 *
 * @category combinators
 * @since 0.1.0
 */
export const communicate: {
  <E, R>(
    input: Stream.Stream<Uint8Array, E, R>,
    options?: { readonly failOnUnconsumedInput?: boolean | undefined }
  ): (proc: Subprocess) => Effect.Effect<Communicated, DuplexError | E, R>
  <E, R>(
    proc: Subprocess,
    input: Stream.Stream<Uint8Array, E, R>,
    options?: { readonly failOnUnconsumedInput?: boolean | undefined }
  ): Effect.Effect<Communicated, DuplexError | E, R>
} = dual(
  (args) => Duplex.isDuplex(args[0]),
  <E, R>(
    proc: Subprocess,
    input: Stream.Stream<Uint8Array, E, R>,
    options: { readonly failOnUnconsumedInput?: boolean | undefined } = {}
  ): Effect.Effect<Communicated, DuplexError | E, R> =>
    Effect.gen(function* () {
      // Deadlock freedom: stdin is fed in its own fiber while `exit` reads stdout (bounded) here.
      const writer = yield* Effect.forkChild(feed(proc, input, true), { startImmediately: true })
      // A failing input fails at once (and `feed` has closed stdin); otherwise wait for the exit.
      const completed = yield* Effect.raceFirst(proc.exit, Effect.andThen(Fiber.join(writer), Effect.never)).pipe(
        Effect.onError(() => Effect.andThen(Fiber.interrupt(writer), proc.abort))
      )
      const fed = yield* Fiber.join(writer)
      if (fed.stopped && options.failOnUnconsumedInput === true) return yield* notConsumed(proc, fed)
      return {
        exitCode: completed.exitCode,
        signal: completed.signal,
        stdout: completed.stdout,
        stderr: completed.stderrTail,
        unconsumedInputBytes: fed.unconsumed
      }
    })
)

/**
 * One stage of a {@link pipeline}.
 *
 * @category models
 * @since 0.1.0
 */
export interface Stage {
  readonly command: string
  readonly args?: ReadonlyArray<string> | undefined
  readonly options?: SpawnOptions | undefined
}

/**
 * A running pipeline: a duplex (the first stage's stdin, the last stage's stdout) and every stage.
 *
 * @category models
 * @since 0.1.0
 */
export interface Pipeline extends Duplex.Duplex {
  readonly stages: ReadonlyArray<Subprocess>
  /**
   * Waits for every stage, reading what is left of the last stage's stdout as `Subprocess.exit` does
   * (bounded by its `maxBuffer`, then discarded); fails `ProcessFailed` for the last stage (every stage
   * with `pipefail`) when it failed.
   */
  readonly exit: Effect.Effect<ReadonlyArray<ExitStatus>, DuplexError>
}

/**
 * A shell-like pipeline, `a | b | c`: each stage's stdout is copied to the next stage's stdin by a fiber
 * of its own; every stderr is drained into its tail.
 *
 * **Details**
 *
 * A stage that exits early (`head`) makes the copy into it fail with `EPIPE`: the copy stops and closes
 * its end of the upstream's stdout, so the upstream's next write fails and it stops, as in a shell. Node's
 * child stdio are socket pairs, not pipes, so the upstream may see `ECONNRESET` (and exit non-zero) where
 * a shell pipeline would give it SIGPIPE. Only the last stage's status decides the outcome, as with
 * `set +o pipefail`, unless `pipefail: true` (then such an upstream fails with `ProcessFailed`).
 *
 * **Example** (Counting the first ten lines of a large output)
 *
 * ```ts
 * import { Effect, Stream } from "effect"
 * import { Subprocess } from "fullduplex"
 * import { readAll } from "fullduplex/testkit"
 *
 * const program = Effect.scoped(
 *   Effect.gen(function* () {
 *     const p = yield* Subprocess.pipeline([{ command: "yes" }, { command: "head", args: ["-n", "10"] }])
 *     yield* p.end
 *     const out = yield* readAll(p)
 *     yield* p.exit
 *     return out.length
 *   })
 * )
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const pipeline = (
  stages: ReadonlyArray<Stage>,
  options: { readonly pipefail?: boolean | undefined } = {}
): Effect.Effect<Pipeline, DuplexError, Scope.Scope> =>
  Effect.gen(function* () {
    if (stages.length === 0) return yield* invalidOptions("pipeline", "stages", stages, "at least one stage")
    const procs: Array<Subprocess> = []
    for (const stage of stages) procs.push(yield* spawn(stage.command, stage.args ?? [], stage.options))
    const copies: Array<Fiber.Fiber<void, DuplexError>> = []
    for (let i = 0; i + 1 < procs.length; i++) {
      const from = procs[i]!
      const to = procs[i + 1]!
      const copy = Stream.runForEach(from.readable, (chunk) => to.write(chunk)).pipe(
        Effect.andThen(to.end),
        Effect.catchReason("DuplexError", "Broken", () =>
          // The downstream stopped reading (or the upstream's stdout broke): close our end of the
          // upstream's stdout, as a shell would, and the downstream's stdin, so neither waits on the other.
          Effect.andThen(from.closeStdout, Effect.ignore(to.end))
        ),
        Effect.catchReason("DuplexError", "Closed", () => Effect.void)
      )
      copies.push(yield* Effect.forkScoped(copy))
    }
    const first = procs[0]!
    const last = procs[procs.length - 1]!
    const exit = Effect.gen(function* () {
      // The last stage's stdout is read as `Subprocess.exit` reads it (bounded by its maxBuffer), so
      // that a pipeline nobody reads cannot block on it.
      const lastCompleted = yield* last.exit
      const statuses: Array<ExitStatus> = []
      for (const proc of procs.slice(0, -1)) statuses.push(yield* proc.status)
      statuses.push({ exitCode: lastCompleted.exitCode, signal: lastCompleted.signal })
      yield* Fiber.awaitAll(copies)
      const checked = options.pipefail === true ? procs : [last]
      for (const proc of checked) yield* checkStatus(proc, statuses[procs.indexOf(proc)]!)
      return statuses
    })
    const pipelineDuplex = Duplex.make({
      label: procs.map((p) => p.command).join(" | "),
      readable: last.readable,
      read: last.read,
      write: first.write,
      writeAll: first.writeAll,
      end: first.end,
      abort: Effect.forEach(procs, (p) => p.abort, { discard: true }),
      stats: Effect.zipWith(first.stats, last.stats, (a, b) => ({ outbound: a.outbound, inbound: b.inbound }))
    })
    return extend(pipelineDuplex, { stages: procs, exit }) satisfies Pipeline
  })
