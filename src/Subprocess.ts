/**
 * Child processes as duplexes that cannot deadlock, whatever the caller reads and in whatever order:
 * stdin is the write side, stdout is `readable`, stderr is a stream of its own (or a tail).
 *
 * The classic hangs: a parent writes a child's stdin while the child writes stdout (or stderr) that
 * nobody reads; or it reads one output to its end while the other fills. Here an output nobody may be
 * reading is never what holds the child back (see {@link Subprocess}); captures are bounded by
 * `maxBuffer` and say so when they are exceeded; a child that fails fails the helper; and closing the
 * scope stops the child's whole process tree.
 *
 * Processes are started with execa 10, each in a process group of its own. Closing the scope terminates
 * the group: stdin is closed, then after `stdinGrace` SIGTERM, then after `killGrace` SIGKILL; the child
 * is always reaped.
 *
 * @module fullduplex/Subprocess
 * @since 0.1.0
 */
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import { dual } from "effect/Function"
import type * as Scope from "effect/Scope"
import * as Sink from "effect/Sink"
import * as Stream from "effect/Stream"
import type { ChildProcess } from "node:child_process"
import * as NodeStream from "node:stream"
import * as Duplex from "./Duplex.js"
import { DuplexError, InputNotConsumed, MaxBufferExceeded, ProcessFailed } from "./DuplexError.js"
import { withPorts } from "./internal/bytePipe.js"
import * as nodeDuplex from "./internal/nodeDuplex.js"
import { invalidOptions } from "./internal/errors.js"
import { type Fed, feed } from "./internal/subprocess/feed.js"
import * as Ladder from "./internal/subprocess/ladder.js"
import { Spill, Tail } from "./internal/subprocess/output.js"
import { start } from "./internal/subprocess/start.js"
import { readableAlongside } from "./internal/through.js"

/**
 * Default size of the stderr tail kept for error messages: 64 KiB.
 *
 * **Example** (Keeping a longer stderr tail for error messages)
 *
 * ```ts
 * import { Subprocess } from "fullduplex"
 *
 * const build = Subprocess.output("make", [], { stderrTailBytes: 4 * Subprocess.DEFAULT_STDERR_TAIL_BYTES })
 * ```
 *
 * @category constants
 * @since 0.1.0
 */
export const DEFAULT_STDERR_TAIL_BYTES = 64 * 1024

/**
 * Default bound of every capture of an output nobody reads (stdout, and stderr in `pipe` mode): 64 MiB.
 *
 * **Example** (Capturing a larger output)
 *
 * ```ts
 * import { Subprocess } from "fullduplex"
 *
 * const dump = Subprocess.output("pg_dump", ["app"], { maxBuffer: 8 * Subprocess.DEFAULT_MAX_BUFFER_BYTES })
 * ```
 *
 * @category constants
 * @since 0.1.0
 */
export const DEFAULT_MAX_BUFFER_BYTES = 64 * 1024 * 1024

/**
 * How long a child gets to exit after its stdin is closed at scope close, by default: 1 s.
 *
 * **Example** (A child that needs longer to finish once its input ends)
 *
 * ```ts
 * import { Duration, Effect } from "effect"
 * import { Subprocess } from "fullduplex"
 *
 * const program = Effect.scoped(
 *   Subprocess.spawn("gzip", ["-9"], { stdinGrace: Duration.toMillis(Subprocess.DEFAULT_STDIN_GRACE) * 10 })
 * )
 * ```
 *
 * @category constants
 * @since 0.1.0
 */
export const DEFAULT_STDIN_GRACE: Duration.Duration = Duration.seconds(1)

/**
 * How long a child gets after SIGTERM before SIGKILL, by default: 5 s (execa's `forceKillAfterDelay`).
 *
 * **Example** (Killing a child that ignores SIGTERM sooner)
 *
 * ```ts
 * import { Duration, Effect } from "effect"
 * import { Subprocess } from "fullduplex"
 *
 * const program = Effect.scoped(
 *   Subprocess.spawn("server", [], { killGrace: Duration.toMillis(Subprocess.DEFAULT_KILL_GRACE) / 5 })
 * )
 * ```
 *
 * @category constants
 * @since 0.1.0
 */
export const DEFAULT_KILL_GRACE: Duration.Duration = Duration.seconds(5)

/**
 * Where a child's stdout goes: `pipe` (the default: `readable`), `ignore` (discarded by the OS) or
 * `inherit` (the parent's stdout).
 *
 * **Example** (A child whose output goes straight to ours)
 *
 * ```ts
 * import { Subprocess } from "fullduplex"
 *
 * const stdout: Subprocess.StdoutMode = "inherit"
 * const install = Subprocess.output("npm", ["ci"], { stdout, stderr: "inherit" })
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export type StdoutMode = "pipe" | "ignore" | "inherit"

/**
 * Where a child's stderr goes.
 *
 * - `pipe` (the default of `spawn`, `communicate` and `output`): the `stderr` stream, with backpressure
 *   while you read it; while nobody reads it, it is buffered up to `maxBuffer` (so the child never blocks
 *   on it), and `exit` returns what nobody read. Past `maxBuffer` the rest is dropped and counted, and
 *   `exit` (or the next read of `stderr`) fails `MaxBufferExceeded`.
 * - `tail` (the default of `pipeThrough`, `lines` and `pipeline`): read as it comes; only the last
 *   `stderrTailBytes` are kept, with the count of the bytes before them.
 * - a `Sink` of yours: receives every byte, with backpressure (a sink that stops pulling stops the
 *   child); a sink done early leaves the rest to the tail.
 * - `ignore` or `inherit`.
 *
 * In every mode but `ignore` and `inherit` the last `stderrTailBytes` are kept for `ProcessFailed`.
 *
 * **Example** (Logging a child's stderr as it comes)
 *
 * ```ts
 * import { Effect, Sink } from "effect"
 * import { Subprocess } from "fullduplex"
 *
 * const stderr: Subprocess.StderrMode = Sink.forEach((chunk: Uint8Array) =>
 *   Effect.logDebug(new TextDecoder().decode(chunk))
 * )
 * const run = Subprocess.output("make", [], { stderr })
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export type StderrMode = "pipe" | "tail" | "ignore" | "inherit" | Sink.Sink<unknown, Uint8Array, unknown, never, never>

/**
 * Options of {@link spawn}.
 *
 * **Example** (A child in another directory, with one more variable)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Subprocess } from "fullduplex"
 *
 * const options: Subprocess.SpawnOptions = {
 *   cwd: "/srv/app",
 *   env: { NODE_ENV: "production" },
 *   stderr: "tail",
 *   killGrace: "2 seconds",
 *   label: "app worker"
 * }
 * const program = Effect.scoped(Effect.flatMap(Subprocess.spawn("node", ["worker.js"], options), (proc) => proc.exit))
 * ```
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
  /** See {@link StderrMode}. Default `pipe`. */
  readonly stderr?: StderrMode | undefined
  /** Bytes of stderr kept as its tail. Default {@link DEFAULT_STDERR_TAIL_BYTES} (64 KiB). */
  readonly stderrTailBytes?: number | undefined
  /**
   * The most bytes of an output nobody reads that are kept for later (stdout; stderr in `pipe` mode).
   * Default {@link DEFAULT_MAX_BUFFER_BYTES} (64 MiB).
   */
  readonly maxBuffer?: number | undefined
  /** Bytes of an output held before the child is paused, and the largest piece written to stdin. Default 64 KiB. */
  readonly highWaterMark?: number | undefined
  /** At scope close, how long after closing stdin before SIGTERM. Default 1 s. */
  readonly stdinGrace?: Duration.Input | undefined
  /** At scope close, how long after SIGTERM before SIGKILL. Default 5 s. */
  readonly killGrace?: Duration.Input | undefined
  /**
   * `true` (the default): a non-zero exit code or a signal fails `exit`, `communicate`, `pipeThrough`,
   * `output`, `lines` and `pipeline` with `ProcessFailed`. `false`: it is reported as a status (execa's
   * `reject: false`).
   */
  readonly reject?: boolean | undefined
  /**
   * `true` (the default): the child runs in a process group of its own, and every signal (`kill`, `abort`,
   * the scope's termination, the parent's own exit) goes to the whole group, so no grandchild outlives
   * the scope. `false`: the child alone is signalled, and what it started may outlive us (a daemon).
   */
  readonly killTree?: boolean | undefined
  /** Name for errors. Default the command line. */
  readonly label?: string | undefined
}

/**
 * How a child ended: its exit code, or the signal that killed it.
 *
 * **Example** (Describing how a child ended)
 *
 * ```ts
 * import type { Subprocess } from "fullduplex"
 *
 * const describe = (status: Subprocess.ExitStatus): string =>
 *   status.signal !== undefined ? `killed by ${status.signal}` : `exited with ${status.exitCode}`
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface ExitStatus {
  readonly exitCode?: number | undefined
  readonly signal?: string | undefined
}

/**
 * A bounded capture: the bytes kept, every byte seen, and the bytes not kept (`totalBytes -
 * bytes.length`).
 *
 * **Example** (How much of stderr was kept)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Subprocess } from "fullduplex"
 *
 * const tailOf = (proc: Subprocess.Subprocess) =>
 *   Effect.map(proc.stderrTail, (tail: Subprocess.Capture) => `${tail.bytes.length} of ${tail.totalBytes} bytes kept`)
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface Capture {
  readonly bytes: Uint8Array
  readonly totalBytes: number
  readonly droppedBytes: number
}

/**
 * What {@link Subprocess.exit} returns.
 *
 * **Example** (A child's leftover output and its run time)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Subprocess } from "fullduplex"
 *
 * const timed = Effect.scoped(
 *   Effect.flatMap(Subprocess.spawn("ls", ["-l"]), (proc) =>
 *     Effect.map(proc.exit, (done: Subprocess.Completed) => `${done.stdout.length} bytes in ${done.durationMillis} ms`)
 *   )
 * )
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface Completed extends ExitStatus {
  /** The stdout nobody had read (all of it if you read none). */
  readonly stdout: Uint8Array
  /** In `pipe` mode the stderr nobody had read; in the other modes the tail. */
  readonly stderr: Uint8Array
  /** Bytes of stderr written before `stderr` and not kept (a tail's); 0 in `pipe` mode. */
  readonly stderrDroppedBytes: number
  /** From the spawn to the exit. */
  readonly durationMillis: number
}

/**
 * A running child process: a {@link Duplex.Duplex} (stdin is the write side, stdout is `readable`) plus
 * its stderr, its exit and its pid.
 *
 * **No read order hangs**
 *
 * - **stdout** (`readable`) has backpressure: while you read it, a full `highWaterMark` pauses the
 *   child, as a socket would. While you wait on the child elsewhere (reading `stderr`, in `exit`,
 *   `communicate`), stdout may be read by nobody, so it is buffered up to `maxBuffer` instead, for
 *   whoever reads it next; past that the rest is dropped and counted, and the next read of stdout (after
 *   the kept bytes) and `exit` fail `MaxBufferExceeded`.
 * - **stderr** (`pipe` mode): backpressure while you read `stderr`; while you do not, it is buffered up
 *   to `maxBuffer` in the same way. In `tail` mode it is read as it comes and never pauses the child.
 *
 * So reading stdout alone to its end, stderr alone, one after the other, both at once, or neither and
 * then `exit`, all complete.
 *
 * **Details**
 *
 * - `exit` waits for the child to end, and returns the stdout and stderr nobody read. A non-zero exit
 *   code or a signal fails `ProcessFailed` (unless `reject: false`); output past `maxBuffer` stops the
 *   child's tree and fails `MaxBufferExceeded`, whose `captured` holds the first `maxBuffer` bytes.
 *   Bytes of a read still running when `exit` returns may go to either. An interrupted `exit` loses
 *   nothing: what it had not returned stays for the next.
 * - `stderr`: stderr as it arrives, in `pipe` mode; in other modes it fails at once with
 *   `InvalidOptions`. `stderrTail` is the last `stderrTailBytes` with the count of the bytes before.
 * - `kill` signals the child's process group (SIGTERM by default); `abort` SIGKILLs it; `end` closes
 *   stdin. A write after the child has closed its stdin or exited fails `Broken` with code `EPIPE` (or
 *   `ECANCELED`, when the child dies while libuv holds the write).
 *
 * **Example** (Reading a child's stdout and stderr while it runs)
 *
 * ```ts
 * import { Effect, Stream } from "effect"
 * import { Subprocess } from "fullduplex"
 *
 * const program = Effect.scoped(
 *   Effect.gen(function* () {
 *     const proc: Subprocess.Subprocess = yield* Subprocess.spawn("sh", ["-c", "echo out; echo err >&2"])
 *     yield* proc.end
 *     const [out, err] = yield* Effect.all([Stream.runCollect(proc.readable), Stream.runCollect(proc.stderr)], {
 *       concurrency: 2
 *     })
 *     const status = yield* proc.exit
 *     return { out, err, exitCode: status.exitCode }
 *   })
 * )
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface Subprocess extends Duplex.Duplex {
  readonly pid: number | undefined
  /** The command line, for messages. */
  readonly command: string
  readonly exit: Effect.Effect<Completed, DuplexError>
  readonly stderr: Stream.Stream<Uint8Array, DuplexError>
  readonly stderrTail: Effect.Effect<Capture>
  /** Signals the child (its process group, with `killTree`), SIGTERM by default. */
  readonly kill: (signal?: NodeJS.Signals) => Effect.Effect<void>
  /**
   * Stops reading stdout and closes our end of the pipe: the child's next write fails (SIGPIPE, `EPIPE`,
   * or `ECONNRESET`, since Node's child stdio are socket pairs), as the upstream of a shell pipeline's
   * does when its downstream exits.
   */
  readonly closeStdout: Effect.Effect<void>
}

/** How long `exit` waits for stdout and stderr to close after the child has exited. */
const OUTPUTS_AFTER_EXIT_MILLIS = 1000

const quote = (arg: string) => (/^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`)

const commandLine = (command: string, args: ReadonlyArray<string>) => [command, ...args].map(quote).join(" ")

/** The options of a spawn, checked and with their defaults. */
interface Config {
  readonly line: string
  readonly label: string
  readonly tailBytes: number
  readonly maxBuffer: number
  readonly highWaterMark: number | undefined
  readonly stdinGraceMillis: number
  readonly killGraceMillis: number
  readonly stdout: StdoutMode
  readonly stderr: "pipe" | "tail" | "ignore" | "inherit" | "sink"
  readonly sink: Sink.Sink<unknown, Uint8Array, unknown, never, never> | undefined
  readonly reject: boolean
  readonly killTree: boolean
}

const configOf = (
  command: string,
  args: ReadonlyArray<string>,
  options: SpawnOptions
): Effect.Effect<Config, DuplexError> =>
  Effect.suspend(() => {
    const line = commandLine(command, args)
    const label = options.label ?? line
    const tailBytes = options.stderrTailBytes ?? DEFAULT_STDERR_TAIL_BYTES
    const maxBuffer = options.maxBuffer ?? DEFAULT_MAX_BUFFER_BYTES
    const stdinGraceMillis = Duration.toMillis(options.stdinGrace ?? DEFAULT_STDIN_GRACE)
    const killGraceMillis = Duration.toMillis(options.killGrace ?? DEFAULT_KILL_GRACE)
    const isBoolean = (value: unknown) => value === undefined || typeof value === "boolean"
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
            ? ["pipe", "tail", "ignore", "inherit"].includes(options.stderr)
            : Sink.isSink(options.stderr)),
        "pipe, tail, ignore, inherit or a Sink"
      ],
      ["reject", options.reject, isBoolean(options.reject), "true or false"],
      ["killTree", options.killTree, isBoolean(options.killTree), "true or false"]
    ] as const) {
      if (!ok) return Effect.fail(invalidOptions(label, option, value, expected))
    }
    const stderr = options.stderr ?? "pipe"
    return Effect.succeed({
      line,
      label,
      tailBytes,
      maxBuffer,
      highWaterMark: options.highWaterMark,
      stdinGraceMillis,
      killGraceMillis,
      stdout: options.stdout ?? "pipe",
      stderr: typeof stderr === "string" ? stderr : "sink",
      sink: typeof stderr === "string" ? undefined : stderr,
      reject: options.reject ?? true,
      killTree: options.killTree ?? true
    } satisfies Config)
  })

/** What the helpers use of a child beyond its public face. */
interface Internals {
  /** `exit`, failing `ProcessFailed` or not. */
  readonly exitWith: (reject: boolean) => Effect.Effect<Completed, DuplexError>
  readonly reject: boolean
}

const internals = new WeakMap<object, Internals>()

const maxBufferError = (config: Config, stream: "stdout" | "stderr", captured: Uint8Array, droppedBytes?: number) =>
  new DuplexError({
    reason: new MaxBufferExceeded({
      label: config.label,
      command: config.line,
      stream,
      limit: config.maxBuffer,
      captured,
      ...(droppedBytes === undefined ? {} : { droppedBytes })
    })
  })

const onceDone = (stream: NodeStream.Readable | null): Effect.Effect<void> => {
  if (stream === null) return Effect.void
  const done = Deferred.makeUnsafe<void>()
  NodeStream.finished(stream, { writable: false }, () => Deferred.doneUnsafe(done, Exit.void))
  return Deferred.await(done)
}

// ---- the room of stderr ----------------------------------------------------------------------------

interface StderrRoom {
  readonly tail: Tail
  readonly stream: Stream.Stream<Uint8Array, DuplexError>
  /** stderr has closed (or the sink's fiber has read it all). */
  readonly done: Effect.Effect<void>
  /** `pipe` mode's buffer while nobody reads it. */
  readonly spill: Spill | undefined
  /** Readers of `stream` now; the owner re-decides the spills when this changes. */
  readonly readers: () => number
  readonly closeLocal: () => void
}

const stderrRoom = (
  child: ChildProcess,
  config: Config,
  changed: () => void
): Effect.Effect<StderrRoom, DuplexError, Scope.Scope> =>
  Effect.gen(function* () {
    const tail = new Tail(config.tailBytes)
    const notPiped = Stream.fail(
      invalidOptions(config.label, "stderr", config.stderr, "pipe, to read stderr as a stream")
    )
    const stderr = child.stderr
    if (stderr === null) {
      return { tail, stream: notPiped, done: Effect.void, spill: undefined, readers: () => 0, closeLocal: () => {} }
    }
    if (config.stderr === "tail") {
      stderr.on("data", (chunk: Uint8Array) => tail.append(chunk))
      return {
        tail,
        stream: notPiped,
        done: onceDone(stderr),
        spill: undefined,
        readers: () => 0,
        closeLocal: () => {}
      }
    }
    let spill: Spill | undefined
    const parts = yield* nodeDuplex.makeParts(
      stderr,
      nullWritable(),
      { label: `${config.label} stderr`, highWaterMark: config.highWaterMark, overflow: () => spill?.full() },
      () => stderr.destroy()
    )
    if (config.stderr === "sink") {
      const tapped = Stream.tap(parts.readable, (chunk) => Effect.sync(() => tail.append(chunk)))
      // Whatever the sink does (done early, failed, died), the rest of stderr is still read, into the tail.
      const drained = yield* Effect.forkScoped(
        Effect.exit(Stream.run(tapped, config.sink!)).pipe(Effect.andThen(Stream.runDrain(tapped)), Effect.ignoreCause)
      )
      return {
        tail,
        stream: notPiped,
        done: Effect.asVoid(Fiber.await(drained)),
        spill: undefined,
        readers: () => 0,
        closeLocal: () => parts.closeLocal()
      }
    }
    // `pipe`: every chunk reaches the tail as it arrives, read or not.
    stderr.on("data", (chunk: Uint8Array) => tail.append(chunk))
    spill = new Spill(parts.inbound, config.maxBuffer, () => maxBufferError(config, "stderr", new Uint8Array(0)))
    let readers = 0
    const stream = Stream.suspend(() => {
      readers++
      changed()
      return Stream.ensuring(
        parts.readable,
        Effect.sync(() => {
          readers--
          changed()
        })
      )
    })
    return { tail, stream, done: onceDone(stderr), spill, readers: () => readers, closeLocal: () => parts.closeLocal() }
  })

const emptyReadable = (): NodeStream.Readable => NodeStream.Readable.from([])

const nullWritable = (): NodeStream.Writable =>
  new NodeStream.Writable({ write: (_chunk, _encoding, callback) => callback() })

/** A duplex with more members: the same duplex (its type id and `pipe` included), plus `extra`. */
const extend = <X extends object>(duplex: Duplex.Duplex, extra: X): Duplex.Duplex & X =>
  Object.assign(Object.create(Object.getPrototypeOf(duplex)), duplex, extra)

/**
 * Starts a child process as a {@link Subprocess}, owned by the scope.
 *
 * **When to use**
 *
 * For any child you talk to. Write and read it concurrently (`Duplex.exchange`, {@link communicate}), or
 * use {@link pipeThrough} for a stream, {@link output} to run it to its end, and `exit` for the result.
 *
 * **Details**
 *
 * A command that cannot start fails with reason `SpawnFailed`, whose `problem` tells a missing command,
 * a missing file, a file that may not run, and a `cwd` that is not a directory apart. Writing after the
 * child closed its stdin fails `Broken` with code `EPIPE` (never an uncaught exception). See
 * {@link Subprocess} for what happens to outputs nobody reads.
 *
 * **Interruption**
 *
 * Interrupting `spawn` itself kills the half-started child.
 *
 * **Closing**
 *
 * Closing the scope terminates the child's process group (its grandchildren too, unless `killTree:
 * false`): stdin closed, `stdinGrace` (1 s), SIGTERM, `killGrace` (5 s), SIGKILL; then the same for any
 * member of the group the child left running. It waits until the child is reaped, so no zombie is left.
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
    const config = yield* configOf(command, args, options)

    // ---- start --------------------------------------------------------------------------------------
    const child = yield* start(command, args, {
      label: config.label,
      line: config.line,
      cwd: options.cwd,
      env: options.env,
      extendEnv: options.extendEnv ?? true,
      stdout: config.stdout,
      stderr: config.stderr === "pipe" || config.stderr === "tail" || config.stderr === "sink" ? "pipe" : config.stderr,
      group: config.killTree
    })
    const startedAt = performance.now()
    for (const s of [child.stdin, child.stdout, child.stderr]) s?.on("error", () => {})
    const exited = Deferred.makeUnsafe<ExitStatus>()
    let exitedAt = startedAt
    const onExit = (code: number | null, signal: NodeJS.Signals | null) => {
      exitedAt = performance.now()
      Deferred.doneUnsafe(exited, Exit.succeed({ exitCode: code ?? undefined, signal: signal ?? undefined }))
    }
    if (child.exitCode !== null || child.signalCode !== null) onExit(child.exitCode, child.signalCode)
    else child.once("exit", onExit)
    const exitedStatus = Deferred.await(exited)
    const hasExited = () => Deferred.isDoneUnsafe(exited)
    const tree: Ladder.Tree = { child, group: config.killTree, hasExited, exited: exitedStatus }

    // ---- who may be reading what: an output nobody may be reading is spilled ----------------------------
    let exitWaiters = 0
    let stdoutSpill: Spill | undefined
    const changed = () => {
      const stderrReaders = stderr?.readers() ?? 0
      stdoutSpill?.set(exitWaiters > 0 || stderrReaders > 0)
      stderr?.spill?.set(stderrReaders === 0)
    }
    const stderr: StderrRoom = yield* stderrRoom(child, config, () => changed())

    // ---- stdin and stdout as one duplex -------------------------------------------------------------
    const stdin = child.stdin!
    // Node destroys stdin when the child exits, and a write then finds it closed with no error of its
    // own: that is a broken pipe all the same, as a write into a child that closed its stdin is.
    const closedCode = () => (hasExited() ? "EPIPE" : undefined)
    const adapter = {
      label: config.label,
      highWaterMark: config.highWaterMark,
      closedCode,
      overflow: () => stdoutSpill?.full()
    }
    const parts = yield* nodeDuplex.makeParts(child.stdout ?? emptyReadable(), stdin, adapter, (graceful) => {
      if (!graceful) Ladder.signal(tree, "SIGKILL")
      child.stdout?.destroy()
      stdin.destroy()
    })
    if (child.stdout !== null) {
      stdoutSpill = new Spill(parts.inbound, config.maxBuffer, () =>
        maxBufferError(config, "stdout", new Uint8Array(0))
      )
    }
    changed()
    const duplex = withPorts(Duplex.make(parts), parts.inbound, parts.outbound)

    // ---- termination: registered after the adapters, so that it runs before their own finalizers
    // (finalizers run in reverse order), which would otherwise kill the child at once -----------------
    yield* Effect.addFinalizer(() =>
      Effect.gen(function* () {
        // Our side first: a read or write still pending fails `Closed` (what it was cut short by), before
        // the child's end could pass for a complete output. What the child still writes is discarded.
        parts.closeLocal()
        stderr.closeLocal()
        yield* Ladder.terminate(tree, {
          stdinGraceMillis: config.stdinGraceMillis,
          killGraceMillis: config.killGraceMillis,
          closeStdin: () => child.stdin?.end()
        })
        for (const s of [child.stdin, child.stdout, child.stderr]) s?.destroy()
      })
    )

    // ---- exit ---------------------------------------------------------------------------------------
    const spills = [stdoutSpill, stderr.spill].filter((s): s is Spill => s !== undefined)
    const overflowed = Effect.callback<Spill>((resume) => {
      const offs = spills.map((spill) => spill.whenOverflowed(() => resume(Effect.succeed(spill))))
      return Effect.sync(() => offs.forEach((off) => off()))
    })
    const overflowError = (spill: Spill) => {
      const taken = spill.takeBuffered()
      const captured = taken.subarray(0, config.maxBuffer)
      return maxBufferError(
        config,
        spill === stdoutSpill ? "stdout" : "stderr",
        captured,
        spill.droppedBytes + taken.length - captured.length
      )
    }
    const outputsDone = Effect.all([onceDone(child.stdout), stderr.done], { discard: true })
    const exitWith = (reject: boolean): Effect.Effect<Completed, DuplexError> =>
      Effect.gen(function* () {
        // Wait for the exit; an output overflowing its capture meanwhile stops the tree at once.
        const first = yield* Effect.raceFirst(Effect.as(exitedStatus, undefined), overflowed)
        if (first !== undefined) {
          Ladder.signal(tree, "SIGKILL")
          yield* exitedStatus
          return yield* overflowError(first)
        }
        // Then the outputs get a moment to end; a grandchild that holds one open is not waited for.
        yield* Effect.timeoutOption(outputsDone, OUTPUTS_AFTER_EXIT_MILLIS)
        const late = spills.find((spill) => spill.overflowed)
        if (late !== undefined) return yield* overflowError(late)
        const status = yield* exitedStatus
        if (reject) yield* checkStatus(config, status, stderr.tail)
        const tailBytes = stderr.tail.value
        const piped = stderr.spill !== undefined
        return {
          exitCode: status.exitCode,
          signal: status.signal,
          stdout: stdoutSpill?.takeBuffered() ?? new Uint8Array(0),
          stderr: piped ? stderr.spill!.takeBuffered() : tailBytes,
          stderrDroppedBytes: piped ? 0 : stderr.tail.totalBytes - tailBytes.length,
          durationMillis: exitedAt - startedAt
        } satisfies Completed
      }).pipe(whileWaiting)
    // While an `exit` runs, nobody may be reading stdout: it spills (see `changed`).
    function whileWaiting<A, E>(effect: Effect.Effect<A, E>): Effect.Effect<A, E> {
      return Effect.suspend(() => {
        exitWaiters++
        changed()
        return Effect.ensuring(
          effect,
          Effect.sync(() => {
            exitWaiters--
            changed()
          })
        )
      })
    }

    const subprocess: Subprocess = extend(duplex, {
      pid: child.pid,
      command: config.line,
      exit: exitWith(config.reject),
      stderr: stderr.stream,
      stderrTail: Effect.sync(() => {
        const bytes = stderr.tail.value
        return { bytes, totalBytes: stderr.tail.totalBytes, droppedBytes: stderr.tail.totalBytes - bytes.length }
      }),
      kill: (signal: NodeJS.Signals = "SIGTERM") => Effect.sync(() => Ladder.signal(tree, signal)),
      closeStdout: Effect.sync(() => {
        child.stdout?.destroy()
      })
    })
    internals.set(subprocess, { exitWith, reject: config.reject })
    return subprocess
  })

const checkStatus = (config: Config, status: ExitStatus, tail: Tail): Effect.Effect<void, DuplexError> =>
  Effect.suspend(() => {
    if (status.exitCode === 0) return Effect.void
    const stderrTail = tail.value
    return Effect.fail(
      new DuplexError({
        reason: new ProcessFailed({
          label: config.label,
          command: config.line,
          exitCode: status.exitCode,
          signal: status.signal,
          stderrTail,
          stderrDroppedBytes: tail.totalBytes - stderrTail.length
        })
      })
    )
  })

/** `exit` of a child made by {@link spawn}, failing `ProcessFailed` or not. */
const exitOf = (proc: Subprocess, reject?: boolean | undefined): Effect.Effect<Completed, DuplexError> => {
  const inner = internals.get(proc)
  return inner === undefined ? proc.exit : inner.exitWith(reject ?? inner.reject)
}

/**
 * Options of {@link pipeThrough} and {@link lines}: the spawn's, with stderr defaulting to `tail` (what
 * nobody reads is kept for the error message only; `pipe` is not offered, as the child is not yours to
 * read from).
 *
 * **Example** (A transformer that fails if the child does not read all of its input)
 *
 * ```ts
 * import { Stream } from "effect"
 * import { Subprocess } from "fullduplex"
 *
 * const options: Subprocess.RunOptions = { failOnUnconsumedInput: true, stderr: "ignore" }
 * const gzipped = Stream.make(new TextEncoder().encode("hello")).pipe(Subprocess.pipeThrough("gzip", [], options))
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface RunOptions extends Omit<SpawnOptions, "stderr"> {
  readonly stderr?: Exclude<StderrMode, "pipe"> | undefined
  /**
   * When the child exits without reading all of its input: `false` (the default) drops the rest and
   * reports the count; `true` fails with reason `InputNotConsumed`.
   */
  readonly failOnUnconsumedInput?: boolean | undefined
}

const notConsumed = (proc: Subprocess, fed: Fed) =>
  new DuplexError({
    reason: new InputNotConsumed({ label: proc.label, command: proc.command, unconsumedBytes: fed.unconsumed })
  })

const tailByDefault = (options: RunOptions): Effect.Effect<SpawnOptions, DuplexError> =>
  (options.stderr as unknown) === "pipe"
    ? Effect.fail(invalidOptions(options.label ?? "pipeThrough", "stderr", "pipe", "tail, ignore, inherit or a Sink"))
    : Effect.succeed({ ...options, stderr: options.stderr ?? "tail" })

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
 * fails the stream with reason `ProcessFailed` (exit code, signal, command line, stderr tail), unless
 * `reject: false`. A child that exits without reading all its input (`head`) is not an error unless
 * `failOnUnconsumedInput`. stderr is kept as a tail by default.
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
        const proc = yield* spawn(command, args, yield* tailByDefault(options))
        // Deadlock freedom: stdin is fed by a fiber of its own while the stream reads stdout.
        const feeder = yield* Effect.forkScoped(feed(proc, input, false))
        const outcome = Effect.gen(function* () {
          // The child's stdout has ended; its stdin is fed to the end (or until it stops reading).
          const result = yield* Fiber.join(feeder)
          yield* exitOf(proc)
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
 * What {@link communicate} and {@link output} return.
 *
 * **Example** (Noticing input the child did not read)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Subprocess } from "fullduplex"
 *
 * const firstLine = Subprocess.output("head", ["-n", "1"], { input: "one\ntwo\nthree\n" }).pipe(
 *   Effect.map((result: Subprocess.Communicated) => ({
 *     line: new TextDecoder().decode(result.stdout),
 *     unread: result.unconsumedInputBytes
 *   }))
 * )
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface Communicated extends Completed {
  /**
   * Input bytes not written because the child had stopped reading (`EPIPE`): the rest of the input is
   * still pulled, and counted, but not written. (Bytes the pipe accepted that the child then never read
   * cannot be seen from here and are not counted.) 0 when the child read everything.
   */
  readonly unconsumedInputBytes: number
}

/**
 * Options of {@link communicate}.
 *
 * **Example** (A status instead of a failure on a non-zero exit)
 *
 * ```ts
 * import { Effect, Stream } from "effect"
 * import { Subprocess } from "fullduplex"
 *
 * const options: Subprocess.CommunicateOptions = { reject: false }
 * const matched = Effect.scoped(
 *   Effect.flatMap(Subprocess.spawn("grep", ["-q", "needle"]), (grep) =>
 *     Subprocess.communicate(grep, Stream.make(new TextEncoder().encode("haystack\n")), options)
 *   )
 * ).pipe(Effect.map((result) => result.exitCode === 0))
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface CommunicateOptions {
  readonly failOnUnconsumedInput?: boolean | undefined
  /** Overrides the spawn's `reject` (default `true`: a failed child fails with `ProcessFailed`). */
  readonly reject?: boolean | undefined
}

/**
 * Sends `input` to a child's stdin while its outputs are captured, then waits for it to exit.
 *
 * **When to use**
 *
 * Python's `Popen.communicate`: give a process its whole input and get its whole output, without the
 * deadlock of writing first and reading after.
 *
 * **Details**
 *
 * stdout, and stderr in `pipe` mode (the spawn's default), are captured whole up to `maxBuffer` (64 MiB
 * by default); beyond it the child's tree is stopped and the result fails `MaxBufferExceeded`. With
 * `stderr: "tail"` only the tail is kept, with `stderrDroppedBytes`. A non-zero exit fails
 * `ProcessFailed` unless `reject: false`. A child that exits without reading all of `input` is a success
 * with `unconsumedInputBytes` (or reason `InputNotConsumed` with `failOnUnconsumedInput`); the input is
 * pulled to its end either way, so give `communicate` a finite input.
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
    options?: CommunicateOptions
  ): (proc: Subprocess) => Effect.Effect<Communicated, DuplexError | E, R>
  <E, R>(
    proc: Subprocess,
    input: Stream.Stream<Uint8Array, E, R>,
    options?: CommunicateOptions
  ): Effect.Effect<Communicated, DuplexError | E, R>
} = dual(
  (args) => Duplex.isDuplex(args[0]),
  <E, R>(
    proc: Subprocess,
    input: Stream.Stream<Uint8Array, E, R>,
    options: CommunicateOptions = {}
  ): Effect.Effect<Communicated, DuplexError | E, R> =>
    Effect.gen(function* () {
      // Deadlock freedom: stdin is fed in its own fiber while `exit` waits, with the outputs spilling.
      const writer = yield* Effect.forkChild(feed(proc, input, true), { startImmediately: true })
      // A failing input fails at once (and `feed` has closed stdin); otherwise wait for the exit.
      const completed = yield* Effect.raceFirst(
        exitOf(proc, options.reject),
        Effect.andThen(Fiber.join(writer), Effect.never)
      ).pipe(Effect.onError(() => Effect.andThen(Fiber.interrupt(writer), proc.abort)))
      const fed = yield* Fiber.join(writer)
      if (fed.stopped && options.failOnUnconsumedInput === true) return yield* notConsumed(proc, fed)
      return { ...completed, unconsumedInputBytes: fed.unconsumed } satisfies Communicated
    })
)

/**
 * Options of {@link output}: the spawn's, the input, and {@link communicate}'s.
 *
 * **Example** (A command fed a string, with a bound on its output)
 *
 * ```ts
 * import { Subprocess } from "fullduplex"
 *
 * const options: Subprocess.OutputOptions = { input: "b\na\n", maxBuffer: 1024 * 1024, stderr: "tail" }
 * const sorted = Subprocess.output("sort", [], options)
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface OutputOptions<E = never, R = never> extends SpawnOptions {
  /** The child's stdin: bytes, a string (UTF-8) or a stream. Default none (stdin is closed at once). */
  readonly input?: Uint8Array | string | Stream.Stream<Uint8Array, E, R> | undefined
  readonly failOnUnconsumedInput?: boolean | undefined
}

const inputStream = <E, R>(input: OutputOptions<E, R>["input"]): Stream.Stream<Uint8Array, E, R> =>
  input === undefined
    ? Stream.empty
    : typeof input === "string"
      ? Stream.make(new TextEncoder().encode(input))
      : input instanceof Uint8Array
        ? Stream.make(input)
        : input

/**
 * Runs a command to its end and captures its outputs: execa's `await execa(command, args, { input,
 * maxBuffer })`, as one effect that owns the child.
 *
 * **Details**
 *
 * `spawn` + {@link communicate} in a scope of their own: stdout and stderr whole up to `maxBuffer`
 * (`MaxBufferExceeded` beyond), the exit code, and the time it ran. A non-zero exit fails
 * `ProcessFailed` (with the stderr tail) unless `reject: false`.
 *
 * **Example** (Capturing `git rev-parse HEAD`)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Subprocess } from "fullduplex"
 *
 * const head = Subprocess.output("git", ["rev-parse", "HEAD"], { maxBuffer: 1024 }).pipe(
 *   Effect.map(({ stdout }) => new TextDecoder().decode(stdout).trim())
 * )
 * ```
 *
 * @category combinators
 * @since 0.1.0
 */
export const output = <E = never, R = never>(
  command: string,
  args: ReadonlyArray<string> = [],
  options: OutputOptions<E, R> = {}
): Effect.Effect<Communicated, DuplexError | E, R> =>
  Effect.scoped(
    Effect.flatMap(spawn(command, args, options), (proc) =>
      communicate(proc, inputStream(options.input), { failOnUnconsumedInput: options.failOnUnconsumedInput })
    )
  )

/**
 * Options of {@link lines}.
 *
 * **Example** (The lines of a command fed its input)
 *
 * ```ts
 * import { Stream } from "effect"
 * import { Subprocess } from "fullduplex"
 *
 * const options: Subprocess.LinesOptions = { input: "b\na\nc\n" }
 * const sorted = Subprocess.lines("sort", [], options).pipe(Stream.runCollect)
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface LinesOptions<E = never, R = never> extends RunOptions {
  /** The child's stdin. Default none (stdin is closed at once). */
  readonly input?: Uint8Array | string | Stream.Stream<Uint8Array, E, R> | undefined
}

/**
 * A command's stdout as a stream of lines (UTF-8, without their `\n` or `\r\n`), read as the child writes
 * them, with backpressure.
 *
 * **Details**
 *
 * {@link pipeThrough} of `input` (none by default), decoded and split: the stream fails `ProcessFailed`
 * after the last line when the child fails (unless `reject: false`).
 *
 * **Example** (The files git tracks)
 *
 * ```ts
 * import { Stream } from "effect"
 * import { Subprocess } from "fullduplex"
 *
 * const files = Subprocess.lines("git", ["ls-files"]).pipe(Stream.take(10), Stream.runCollect)
 * ```
 *
 * @category combinators
 * @since 0.1.0
 */
export const lines = <E = never, R = never>(
  command: string,
  args: ReadonlyArray<string> = [],
  options: LinesOptions<E, R> = {}
): Stream.Stream<string, DuplexError | E, R> =>
  inputStream(options.input).pipe(pipeThrough(command, args, options), Stream.decodeText(), Stream.splitLines)

/**
 * One stage of a {@link pipeline}.
 *
 * **Example** (The stages of `ls | sort -r | head -n 3`)
 *
 * ```ts
 * import { Subprocess } from "fullduplex"
 *
 * const stages: ReadonlyArray<Subprocess.Stage> = [
 *   { command: "ls" },
 *   { command: "sort", args: ["-r"] },
 *   { command: "head", args: ["-n", "3"], options: { stderr: "ignore" } }
 * ]
 * const pipeline = Subprocess.pipeline(stages)
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface Stage {
  readonly command: string
  readonly args?: ReadonlyArray<string> | undefined
  /** The spawn's options; stderr defaults to `tail` here. */
  readonly options?: SpawnOptions | undefined
}

/**
 * A running pipeline: a duplex (the first stage's stdin, the last stage's stdout) and every stage.
 *
 * **Example** (Waiting for every stage of a pipeline)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Subprocess } from "fullduplex"
 *
 * const program = Effect.scoped(
 *   Effect.gen(function* () {
 *     const pipeline: Subprocess.Pipeline = yield* Subprocess.pipeline([{ command: "yes" }, { command: "head" }])
 *     const statuses = yield* pipeline.exit
 *     return statuses.map((status, i) => `${pipeline.stages[i]?.command}: ${status.exitCode ?? status.signal}`)
 *   })
 * )
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface Pipeline extends Duplex.Duplex {
  readonly stages: ReadonlyArray<Subprocess>
  /**
   * Waits for every stage, reading what is left of the last stage's stdout as `Subprocess.exit` does
   * (bounded by its `maxBuffer`); fails `ProcessFailed` for the last stage (every stage with `pipefail`)
   * when it failed, unless that stage has `reject: false`.
   */
  readonly exit: Effect.Effect<ReadonlyArray<ExitStatus>, DuplexError>
}

/**
 * A shell-like pipeline, `a | b | c`: each stage's stdout is copied to the next stage's stdin by a fiber
 * of its own; every stderr is kept as a tail (by default).
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
    for (const stage of stages) {
      const stageOptions = { ...stage.options, stderr: stage.options?.stderr ?? "tail" }
      procs.push(yield* spawn(stage.command, stage.args ?? [], stageOptions))
    }
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
      // The last stage's stdout is taken as `Subprocess.exit` takes it, while the copies finish; only
      // then are the other stages' exits taken (their stdout has been copied by then).
      const [lastCompleted] = yield* Effect.all([exitOf(last, false), Fiber.awaitAll(copies)], {
        concurrency: 2
      })
      const completed: Array<Completed> = []
      for (const proc of procs.slice(0, -1)) completed.push(yield* exitOf(proc, false))
      completed.push(lastCompleted)
      const checked = options.pipefail === true ? procs : [last]
      for (const proc of checked) {
        const inner = internals.get(proc)
        if (inner?.reject === false) continue
        const done = completed[procs.indexOf(proc)]!
        if (done.exitCode !== 0) yield* exitOf(proc, true) // the same exit again, now as `ProcessFailed`
      }
      return completed.map(({ exitCode, signal }) => ({ exitCode, signal }) satisfies ExitStatus)
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
