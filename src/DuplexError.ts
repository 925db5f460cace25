/**
 * The one error type of fullduplex.
 *
 * Every failure of a duplex is a {@link DuplexError} whose `reason` says whose fault it is and carries the
 * facts a person needs to act on it: which duplex, which direction, how many bytes had moved, which limit
 * was crossed. Match a reason with `Effect.catchReason("DuplexError", "Broken", …)`.
 *
 * | reason | whose fault | typical cause |
 * | --- | --- | --- |
 * | {@link Closed} | yours | a write after `end`, any operation after your own `abort` |
 * | {@link Broken} | the peer's or the OS's | the peer aborted (RST, killed process), a stream error |
 * | {@link Timeout} | nobody's: a limit you set | an operation did not finish within its bound |
 * | {@link StallDetected} | a deadlock or a stalled peer | no byte moved in any direction for too long |
 * | {@link InvalidOptions} | yours | an option out of range when building a duplex |
 * | {@link ConnectFailed} | the peer's, the network's or a limit you set | nothing listens there, the connect timed out |
 * | {@link ListenFailed} | yours or the OS's | the address is in use, or not yours to bind |
 * | {@link SpillFailed} | the local disk's | a temporary file for a backlog could not be written or read |
 * | {@link SpawnFailed} | yours or the OS's | a command that does not exist or may not run |
 * | {@link ProcessFailed} | the child's | a non-zero exit code or a signal where success was expected |
 * | {@link MaxBufferExceeded} | a limit you set | more output than a bounded capture holds |
 * | {@link InputNotConsumed} | the child's, if you say so | the child exited before reading all its input |
 * | {@link FrameTooLarge} | the peer's (inbound) or yours (outbound) | a frame length over `maxFrameBytes` |
 * | {@link FrameTruncated} | the peer's | the stream ended in the middle of a frame |
 * | {@link ProtocolError} | the peer's | bytes that are not the protocol: an unknown frame type, a message out of place |
 * | {@link NotProcessed} | nobody's: the server is going away, or you are closing | a request that was never sent; safe to retry |
 * | {@link StreamRefused} | nobody's: a limit, or the session is going away | a multiplexed stream that was never opened; safe to retry |
 * | {@link SessionEnded} | nobody's: the end of a graceful close | `accept` once no more streams can come |
 *
 * @module fullduplex/DuplexError
 * @since 0.1.0
 */
import * as Data from "effect/Data"
import * as Predicate from "effect/Predicate"

/**
 * Which way bytes flow, seen from the duplex that reports it: `outbound` is what it writes, `inbound`
 * what it reads.
 *
 * **Example** (Naming a direction in a message)
 *
 * ```ts
 * import type { DuplexError } from "fullduplex"
 *
 * const verb = (direction: DuplexError.Direction): string => (direction === "outbound" ? "written" : "read")
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export type Direction = "inbound" | "outbound"

const formatBytes = (n: number): string =>
  n < 1024 ? `${n} B` : n < 1024 * 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 1024 / 1024).toFixed(1)} MiB`

const moved = (direction: Direction, bytes: number): string =>
  `${formatBytes(bytes)} ${direction === "outbound" ? "written" : "read"} before`

const codeMeanings: Record<string, string> = {
  ECONNRESET: "ECONNRESET: reset by the peer",
  EPIPE: "EPIPE: broken pipe, the peer no longer reads",
  ETIMEDOUT: "ETIMEDOUT: the peer stopped acknowledging",
  ECONNREFUSED: "ECONNREFUSED: nothing listens there",
  ENOENT: "ENOENT: no such file or socket",
  ENOSPC: "ENOSPC: no space left on the device",
  EADDRINUSE: "EADDRINUSE: the address is in use",
  EACCES: "EACCES: permission denied"
}

const describeCode = (code: string): string => codeMeanings[code] ?? code

/** A command, and the label it runs under when that says something more. */
const commandAndLabel = (command: string, label: string): string =>
  label === command ? `\`${command}\`` : `\`${command}\` (${label})`

/** The OS code in words, else the cause's message. */
const whyOf = (code: string | undefined, cause: unknown): string =>
  code !== undefined ? describeCode(code) : cause instanceof Error ? cause.message : "failed"

/**
 * You closed this side: a write after `end`, or any read or write after your own `abort` (or after the
 * scope that owns the duplex closed).
 *
 * **Details**
 *
 * `after` says which of your own actions closed it. `bytes` counts what had moved in `direction` before
 * the failing operation; nothing of the failing operation was accepted.
 *
 * **Example** (A write after one's own `end`)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Duplex } from "fullduplex"
 *
 * const program = Effect.scoped(
 *   Effect.gen(function* () {
 *     const [a] = yield* Duplex.pair()
 *     yield* a.end
 *     return yield* a.write(Uint8Array.of(1)).pipe(
 *       Effect.as("written"),
 *       Effect.catchReason("DuplexError", "Closed", (reason) => Effect.succeed(`closed after ${reason.after}`))
 *     )
 *   })
 * )
 * ```
 *
 * @category reasons
 * @since 0.1.0
 */
export class Closed extends Data.TaggedClass("Closed")<{
  /** Label of the duplex that reports the error. */
  readonly label: string
  readonly direction: Direction
  /** The operation that failed. */
  readonly operation: "read" | "write" | "end"
  /** What closed it: your `end` (half-close) or your `abort` / scope close. */
  readonly after: "end" | "abort"
  /** Bytes moved in `direction` before the failure. */
  readonly bytes: number
}> {
  get message(): string {
    const fix =
      this.after === "end"
        ? "the write side was half-closed with `end`; write everything before calling `end`"
        : "this duplex was aborted (or its scope closed); open a new connection"
    return `${this.operation} on ${this.label} after ${this.after} (${moved(this.direction, this.bytes)}): ${fix}`
  }
}

/**
 * The peer or the OS broke the connection: the peer aborted (RST, a killed process, `abort` on the
 * other end of a pair), or the underlying stream failed.
 *
 * **Details**
 *
 * `cause` holds the underlying error when there is one (for a socket, an `Error` with a `code` such as
 * `ECONNRESET` or `EPIPE`; `code` copies it). Bytes already read stay read. Bytes that had already
 * reached our side (a Node stream's data before its error) are delivered before the failure; bytes still
 * in flight are lost, which is what a reset means (an aborted pair drops what it had buffered).
 *
 * **Example** (Reporting how far a transfer got before the peer went away)
 *
 * ```ts
 * import { Effect, Stream } from "effect"
 * import { Duplex } from "fullduplex"
 *
 * const download = (conn: Duplex.Duplex) =>
 *   Stream.runCollect(conn.readable).pipe(
 *     Effect.catchReason("DuplexError", "Broken", (reason) =>
 *       Effect.fail(`the peer went away after ${reason.bytes} bytes (${reason.code ?? "aborted"})`)
 *     )
 *   )
 * ```
 *
 * @category reasons
 * @since 0.1.0
 */
export class Broken extends Data.TaggedClass("Broken")<{
  readonly label: string
  readonly direction: Direction
  readonly operation: "read" | "write" | "end"
  /** Bytes moved in `direction` before the failure. */
  readonly bytes: number
  /** The OS error code, when the cause has one (`ECONNRESET`, `EPIPE`, …). */
  readonly code?: string | undefined
  readonly cause?: unknown
}> {
  get message(): string {
    const why =
      this.code !== undefined
        ? `the connection broke (${describeCode(this.code)})`
        : this.cause instanceof Error
          ? `the connection broke (${this.cause.message})`
          : "the peer aborted the connection"
    return `${this.operation} on ${this.label} failed: ${why} after ${moved(this.direction, this.bytes)}; the peer is gone, so reconnect or report the partial transfer`
  }
}

/**
 * An operation did not complete within the bound you gave it.
 *
 * **Example** (Aborting a peer that does not finish its half-close in time)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Close, Duplex } from "fullduplex"
 *
 * const finish = (conn: Duplex.Duplex) =>
 *   Close.halfClose(conn, { timeout: "5 seconds" }).pipe(
 *     Effect.asVoid,
 *     Effect.catchReason("DuplexError", "Timeout", (reason) =>
 *       Effect.logWarning(`${reason.label}: ${reason.operation} took over ${reason.timeoutMillis} ms`)
 *     )
 *   )
 * ```
 *
 * @category reasons
 * @since 0.1.0
 */
export class Timeout extends Data.TaggedClass("Timeout")<{
  readonly label: string
  /** What timed out, in words (`"half-close"`, `"read to EOF"`, …). */
  readonly operation: string
  readonly timeoutMillis: number
  readonly direction?: Direction | undefined
  readonly bytes?: number | undefined
}> {
  get message(): string {
    const progress =
      this.direction !== undefined && this.bytes !== undefined
        ? ` (${moved(this.direction, this.bytes)} it expired)`
        : ""
    return `${this.operation} on ${this.label} timed out after ${this.timeoutMillis} ms${progress}; raise the timeout or check that the peer is still reading and writing`
  }
}

/**
 * One direction of one duplex, as a stall diagnostic sees it.
 *
 * **Example** (Listing the blocked directions of a stall)
 *
 * ```ts
 * import type { DuplexError } from "fullduplex"
 *
 * const blocked = (directions: ReadonlyArray<DuplexError.StalledDirection>): Array<string> =>
 *   directions.filter((d) => d.blocked).map((d) => `${d.label} ${d.direction}: ${d.buffered} bytes buffered`)
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface StalledDirection {
  readonly label: string
  readonly direction: Direction
  readonly bytes: number
  readonly buffered: number
  readonly blocked: boolean
  /** Total time a writer in this direction has been held back, when the reporter measures it. */
  readonly blockedMillis?: number | undefined
}

/**
 * No byte moved in any watched direction for `stalledMillis`: a deadlock (both sides blocked writing,
 * nobody reading) or a peer that stopped.
 *
 * **Details**
 *
 * `directions` is the snapshot taken when the stall was declared: for every watched direction, the bytes
 * moved so far, the bytes buffered and whether a writer was held back by backpressure. The message
 * spells out which directions were blocked, which is usually enough to see the cycle.
 *
 * **Example** (Reporting a deadlock that the watchdog caught)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { type Duplex, type DuplexError, Watchdog } from "fullduplex"
 *
 * const guarded = (conn: Duplex.Duplex, work: Effect.Effect<void, DuplexError.DuplexError>) =>
 *   work.pipe(
 *     Watchdog.guard(conn, { stallTimeout: "5 seconds" }),
 *     Effect.catchReason("DuplexError", "StallDetected", (reason) =>
 *       Effect.logError(`stalled for ${reason.stalledMillis} ms: ${reason.message}`)
 *     )
 *   )
 * ```
 *
 * @category reasons
 * @since 0.1.0
 */
export class StallDetected extends Data.TaggedClass("StallDetected")<{
  readonly label: string
  readonly stalledMillis: number
  readonly directions: ReadonlyArray<StalledDirection>
}> {
  get message(): string {
    const lines = this.directions.map(
      (d) =>
        `  ${d.label} ${d.direction}: ${d.blocked ? "BLOCKED" : "idle"}${d.blockedMillis !== undefined ? ` (${Math.round(d.blockedMillis)} ms blocked in all)` : ""}, ${formatBytes(d.bytes)} moved, ${formatBytes(d.buffered)} buffered`
    )
    const blocked = this.directions.filter((d) => d.blocked).length
    const hint =
      blocked >= 2
        ? "several writers are held back by full buffers while nobody reads: read and write concurrently (Duplex.exchange)"
        : "check that every peer keeps reading"
    return [`${this.label}: no byte moved for ${this.stalledMillis} ms; ${hint}`, ...lines].join("\n")
  }
}

/**
 * An option given to a constructor is out of range. Nothing was created.
 *
 * **Example** (A pair with a negative capacity is refused)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Duplex } from "fullduplex"
 *
 * const refused = Effect.scoped(Duplex.pair({ capacity: -1 })).pipe(
 *   Effect.as("created"),
 *   Effect.catchReason("DuplexError", "InvalidOptions", (reason) =>
 *     Effect.succeed(`${reason.option}: ${reason.expected}`)
 *   )
 * )
 * ```
 *
 * @category reasons
 * @since 0.1.0
 */
export class InvalidOptions extends Data.TaggedClass("InvalidOptions")<{
  readonly label: string
  readonly option: string
  readonly value: unknown
  /** What the option accepts, in words. */
  readonly expected: string
}> {
  get message(): string {
    return `${this.label}: option ${this.option} is ${String(this.value)}; expected ${this.expected}`
  }
}

/**
 * A connection could not be opened: nothing listens at the address (`ECONNREFUSED`, `ENOENT` for a Unix
 * socket path), the connect did not finish within `timeoutMillis` (`ETIMEDOUT`), or the OS refused it.
 *
 * **Details**
 *
 * `address` is what was dialled (`"127.0.0.1:4000"`, or a socket path). No byte was sent or received.
 *
 * **Example** (Retrying a connect while nothing listens yet)
 *
 * ```ts
 * import { Effect, Schedule } from "effect"
 * import { Tcp } from "fullduplex"
 *
 * const conn = Tcp.connect({ port: 4000 }).pipe(
 *   Effect.retry({
 *     while: (error) => error.reason._tag === "ConnectFailed" && error.reason.code === "ECONNREFUSED",
 *     schedule: Schedule.spaced("200 millis"),
 *     times: 10
 *   })
 * )
 * ```
 *
 * @category reasons
 * @since 0.1.0
 */
export class ConnectFailed extends Data.TaggedClass("ConnectFailed")<{
  readonly label: string
  readonly address: string
  /** The OS error code (`ECONNREFUSED`, `ENOENT`, …), or `ETIMEDOUT` when the connect timeout expired. */
  readonly code?: string | undefined
  /** Set when the connect timeout expired. */
  readonly timeoutMillis?: number | undefined
  readonly cause?: unknown
}> {
  get message(): string {
    const why =
      this.timeoutMillis !== undefined
        ? `no answer within ${this.timeoutMillis} ms; check the address, or raise connectTimeout`
        : this.code === "ECONNRESET"
          ? `${describeCode(this.code)} as the connection was made; the server may be refusing connections (a connection limit, a shutdown)`
          : `${whyOf(this.code, this.cause)}; check that a server listens there`
    return `connect to ${this.address} (${this.label}) failed: ${why}`
  }
}

/**
 * A server could not listen on its address: in use (`EADDRINUSE`; for a Unix socket path, a stale
 * socket file left by a crashed process), or not allowed (`EACCES`).
 *
 * **Example** (Falling back to an ephemeral port when the port is taken)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { type Duplex, Tcp } from "fullduplex"
 *
 * const handler = (conn: Duplex.Duplex) => conn.end
 * const server = Tcp.serve({ port: 8080 }, handler).pipe(
 *   Effect.catchReason("DuplexError", "ListenFailed", (reason, error) =>
 *     reason.code === "EADDRINUSE" ? Tcp.serve({ port: 0 }, handler) : Effect.fail(error)
 *   )
 * )
 * ```
 *
 * @category reasons
 * @since 0.1.0
 */
export class ListenFailed extends Data.TaggedClass("ListenFailed")<{
  readonly label: string
  readonly address: string
  readonly code?: string | undefined
  readonly cause?: unknown
}> {
  get message(): string {
    const why = whyOf(this.code, this.cause)
    return `listen on ${this.address} (${this.label}) failed: ${why}; pick another address (port 0 for an ephemeral one)`
  }
}

/**
 * A temporary file that held a connection's backlog (the echo server's spill policy) failed: it could not
 * be created, written or read (`ENOSPC`, `EACCES`, `ENOENT` for a missing directory, `EIO`). The fault is
 * on our side, not the peer's; the connection was aborted.
 *
 * **Example** (Telling a full disk from other spill failures)
 *
 * ```ts
 * import type { DuplexError } from "fullduplex"
 *
 * const diskFull = (error: DuplexError.DuplexError): boolean =>
 *   error.reason._tag === "SpillFailed" && error.reason.code === "ENOSPC"
 * ```
 *
 * @category reasons
 * @since 0.1.0
 */
export class SpillFailed extends Data.TaggedClass("SpillFailed")<{
  readonly label: string
  readonly operation: "open" | "write" | "read"
  /** The directory the file was (to be) in. */
  readonly directory: string
  /** Bytes written to the file before the failure. */
  readonly bytes: number
  readonly code?: string | undefined
  readonly cause?: unknown
}> {
  get message(): string {
    const why = whyOf(this.code, this.cause)
    return `${this.operation} of the spill file in ${this.directory} for ${this.label} failed (${why}) after ${formatBytes(this.bytes)}; free disk space or point \`directory\` at a writable place`
  }
}

/**
 * What stood in the way of a start, as far as it can be told (see {@link SpawnFailed}).
 *
 * - `CommandNotFound`: no such command on the `PATH` (`ENOENT` for a bare name).
 * - `FileNotFound`: no such file (`ENOENT` for a path with a `/`).
 * - `NotExecutable`: the file is there but may not run (`EACCES`: no execute permission, a directory).
 * - `CwdNotFound`, `CwdNotDirectory`: the `cwd` option does not name a directory.
 * - `Other`: the OS refused (`EAGAIN`, `EMFILE`, …) or the arguments cannot be a command (a NUL byte).
 *
 * **Example** (A hint for each problem)
 *
 * ```ts
 * import type { DuplexError } from "fullduplex"
 *
 * const hint = (problem: DuplexError.SpawnProblem): string =>
 *   problem === "CommandNotFound"
 *     ? "is it installed, and on the PATH?"
 *     : problem === "NotExecutable"
 *       ? "is its execute bit set?"
 *       : problem
 * ```
 *
 * @category reasons
 * @since 0.1.0
 */
export type SpawnProblem =
  "CommandNotFound" | "FileNotFound" | "NotExecutable" | "CwdNotFound" | "CwdNotDirectory" | "Other"

/**
 * A child process could not be started; `problem` says why (a missing command, a file that may not run, a
 * `cwd` that is not a directory, or the OS's refusal), `code` is the OS's error code.
 *
 * **Example** (A friendlier message for a missing command)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Subprocess } from "fullduplex"
 *
 * const version = Subprocess.output("ffmpeg", ["-version"]).pipe(
 *   Effect.catchReason("DuplexError", "SpawnFailed", (reason) =>
 *     Effect.fail(reason.problem === "CommandNotFound" ? "install ffmpeg first" : reason.message)
 *   )
 * )
 * ```
 *
 * @category reasons
 * @since 0.1.0
 */
export class SpawnFailed extends Data.TaggedClass("SpawnFailed")<{
  readonly label: string
  /** The command line, as given. */
  readonly command: string
  readonly code?: string | undefined
  /** @since 0.1.0 */
  readonly problem?: SpawnProblem | undefined
  /** The `cwd` option, when one was given. @since 0.1.0 */
  readonly cwd?: string | undefined
  readonly cause?: unknown
}> {
  get message(): string {
    const code = this.code === undefined ? "" : ` (${this.code})`
    const what = commandAndLabel(this.command, this.label)
    switch (this.problem) {
      case "CommandNotFound":
        return `could not start ${what}: no such command on the PATH${code}; check its name and the PATH`
      case "FileNotFound":
        return `could not start ${what}: no such file${code}; check the path`
      case "NotExecutable":
        return `could not start ${what}: the file may not be executed${code}; check that it is a program with execute permission`
      case "CwdNotFound":
        return `could not start ${what}: the working directory ${this.cwd} does not exist${code}; check the cwd option`
      case "CwdNotDirectory":
        return `could not start ${what}: the working directory ${this.cwd} is not a directory${code}; check the cwd option`
      default:
        return `could not start ${what}: ${whyOf(this.code, this.cause)}`
    }
  }
}

/**
 * A child process ended with a non-zero exit code or was killed by a signal, where success was expected:
 * by every `Subprocess` helper unless you opt out with `reject: false`.
 *
 * **Details**
 *
 * `stderrTail` holds the last bytes the child wrote to stderr, usually the explanation;
 * `stderrDroppedBytes` counts the bytes before them that were not kept.
 *
 * **Example** (Showing what a failed command wrote to stderr)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Subprocess } from "fullduplex"
 *
 * const status = Subprocess.output("git", ["status", "--porcelain"]).pipe(
 *   Effect.catchReason("DuplexError", "ProcessFailed", (reason) =>
 *     Effect.fail(`git exited ${reason.exitCode ?? reason.signal}: ${new TextDecoder().decode(reason.stderrTail)}`)
 *   )
 * )
 * ```
 *
 * @category reasons
 * @since 0.1.0
 */
export class ProcessFailed extends Data.TaggedClass("ProcessFailed")<{
  readonly label: string
  readonly command: string
  readonly exitCode?: number | undefined
  readonly signal?: string | undefined
  readonly stderrTail: Uint8Array
  /** @since 0.1.0 */
  readonly stderrDroppedBytes?: number | undefined
}> {
  get message(): string {
    const how = this.signal !== undefined ? `was killed by ${this.signal}` : `exited with code ${this.exitCode}`
    const tail = new TextDecoder().decode(this.stderrTail).trim()
    const dropped = this.stderrDroppedBytes ?? 0
    const ends = dropped > 0 ? `stderr (${formatBytes(dropped)} before these not kept) ends with` : "stderr ends with"
    return `${commandAndLabel(this.command, this.label)} ${how}${tail.length > 0 ? `; ${ends}:\n${tail}` : " and wrote nothing to stderr"}`
  }
}

/**
 * More output arrived than a bounded capture holds (`maxBuffer`).
 *
 * **Details**
 *
 * From `exit`, `communicate` and `output` the child was then stopped and reaped, and `captured` holds the
 * first `limit` bytes. From a read of the output (`readable`, `stderr`) the bytes before were all
 * delivered; the child was not blocked meanwhile, and `droppedBytes` more were read and dropped.
 *
 * **Example** (Keeping the first kilobyte of a long output)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Subprocess } from "fullduplex"
 *
 * const head = Subprocess.output("git", ["log"], { maxBuffer: 1024 }).pipe(
 *   Effect.map(({ stdout }) => stdout),
 *   Effect.catchReason("DuplexError", "MaxBufferExceeded", (reason) => Effect.succeed(reason.captured))
 * )
 * ```
 *
 * @category reasons
 * @since 0.1.0
 */
export class MaxBufferExceeded extends Data.TaggedClass("MaxBufferExceeded")<{
  readonly label: string
  readonly command: string
  readonly stream: "stdout" | "stderr"
  readonly limit: number
  readonly captured: Uint8Array
  /** Bytes read past the limit and dropped. @since 0.1.0 */
  readonly droppedBytes?: number | undefined
}> {
  get message(): string {
    return `${commandAndLabel(this.command, this.label)} wrote more than maxBuffer (${formatBytes(this.limit)}) to ${this.stream} while nobody read it; read ${this.stream} as a stream, raise maxBuffer${this.stream === "stderr" ? ', or keep only its tail (stderr: "tail")' : ""}`
  }
}

/**
 * A child process exited without reading all of its input, and you asked for that to be an error
 * (`failOnUnconsumedInput`). By default it is not: the count is reported instead.
 *
 * **Example** (Asking that a child read all of its input)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Subprocess } from "fullduplex"
 *
 * const options = { input: "more than one byte", failOnUnconsumedInput: true }
 * const checked = Subprocess.output("head", ["-c", "1"], options).pipe(
 *   Effect.catchReason("DuplexError", "InputNotConsumed", (reason) =>
 *     Effect.fail(`${reason.unconsumedBytes} bytes of input were not read`)
 *   )
 * )
 * ```
 *
 * @category reasons
 * @since 0.1.0
 */
export class InputNotConsumed extends Data.TaggedClass("InputNotConsumed")<{
  readonly label: string
  readonly command: string
  /** Input bytes that never reached the child's stdin pipe. */
  readonly unconsumedBytes: number
}> {
  get message(): string {
    return `${commandAndLabel(this.command, this.label)} exited before reading all of its input: ${formatBytes(this.unconsumedBytes)} not consumed`
  }
}

/**
 * A frame's length is over the maximum frame size.
 *
 * **Details**
 *
 * Inbound, the peer announced a frame longer than `limit`: nothing was allocated for it and the stream
 * cannot be resynchronised, so the connection should be closed (frames read before it were delivered).
 * Outbound, you tried to send one: nothing of it was written, and the connection is still usable.
 *
 * **Example** (Refusing to send a message over the limit)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Duplex, Framing } from "fullduplex"
 *
 * const sendSmall = (conn: Duplex.Duplex, payload: Uint8Array) =>
 *   Effect.flatMap(Framing.make(conn, { maxFrameBytes: 1024 }), (framed) =>
 *     framed.send(Framing.data(payload)).pipe(
 *       Effect.catchReason("DuplexError", "FrameTooLarge", (reason) =>
 *         Effect.fail(`${reason.length} bytes is over the ${reason.limit}-byte limit`)
 *       )
 *     )
 *   )
 * ```
 *
 * @category reasons
 * @since 0.1.0
 */
export class FrameTooLarge extends Data.TaggedClass("FrameTooLarge")<{
  readonly label: string
  readonly direction: Direction
  /** The frame's payload length in bytes. */
  readonly length: number
  /** The maximum payload length (`maxFrameBytes`). */
  readonly limit: number
}> {
  get message(): string {
    return this.direction === "inbound"
      ? `${this.label} received a frame header announcing ${formatBytes(this.length)}, over maxFrameBytes (${formatBytes(this.limit)}); nothing was allocated for it. The peer is not speaking this protocol or uses a larger limit: close the connection, or raise maxFrameBytes on both ends`
      : `a frame of ${formatBytes(this.length)} is over maxFrameBytes (${formatBytes(this.limit)}) on ${this.label}; nothing was sent. Split the message, or raise maxFrameBytes on both ends`
  }
}

/**
 * The byte stream ended (the peer half-closed) in the middle of a frame.
 *
 * **Details**
 *
 * `part` says whether the header or the payload was cut; `receivedBytes` of `expectedBytes` of it had
 * arrived. Frames before it were delivered whole; the partial one is dropped.
 *
 * **Example** (Telling a cut message from a clean end)
 *
 * ```ts
 * import { Effect, Stream } from "effect"
 * import { Duplex, Framing } from "fullduplex"
 *
 * const messages = (conn: Duplex.Duplex) =>
 *   Effect.flatMap(Framing.make(conn), (framed) =>
 *     Stream.runCollect(framed.frames).pipe(
 *       Effect.catchReason("DuplexError", "FrameTruncated", (reason) =>
 *         Effect.fail(`cut ${reason.receivedBytes} of ${reason.expectedBytes} bytes into a ${reason.part}`)
 *       )
 *     )
 *   )
 * ```
 *
 * @category reasons
 * @since 0.1.0
 */
export class FrameTruncated extends Data.TaggedClass("FrameTruncated")<{
  readonly label: string
  readonly part: "header" | "payload"
  readonly expectedBytes: number
  readonly receivedBytes: number
}> {
  get message(): string {
    return `${this.label} ended in the middle of a frame: ${this.receivedBytes} of ${this.expectedBytes} bytes of its ${this.part} arrived before EOF. The peer closed its side mid-message (it crashed, or does not speak this framing)`
  }
}

/**
 * The peer sent something the protocol does not allow: an unknown frame type, a message out of place.
 *
 * **Details**
 *
 * `problem` says what was wrong, in words. The connection cannot be trusted after it and should be closed.
 *
 * **Example** (Aborting a connection whose peer broke the protocol)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Duplex, Mux } from "fullduplex"
 *
 * const serveStreams = (conn: Duplex.Duplex) =>
 *   Effect.scoped(Effect.flatMap(Mux.server(conn), (session) => session.closed)).pipe(
 *     Effect.catchReason("DuplexError", "ProtocolError", (reason) =>
 *       Effect.andThen(Effect.logWarning(`${reason.label}: ${reason.problem}`), conn.abort)
 *     )
 *   )
 * ```
 *
 * @category reasons
 * @since 0.1.0
 */
export class ProtocolError extends Data.TaggedClass("ProtocolError")<{
  readonly label: string
  readonly problem: string
}> {
  get message(): string {
    return `protocol error on ${this.label}: ${this.problem}; close the connection (the peer does not speak this protocol, or a different version of it)`
  }
}

/**
 * A request was not processed, and never reached the peer: it is safe to retry, on another connection.
 *
 * **Details**
 *
 * `why` is `goingAway` when the server announced its shutdown before the request could be sent,
 * `closing` when the client was already closing (or closed) by your own call, and `connectionLost` when
 * the connection ended or broke first. In every case the request's bytes were not written, so the server
 * cannot have acted on it.
 *
 * **Example** (Retrying a request that never reached the server)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { DuplexError } from "fullduplex"
 *
 * const retryIfNotSent = <A>(request: Effect.Effect<A, DuplexError.DuplexError>) =>
 *   request.pipe(Effect.retry({ while: (error) => error.reason._tag === "NotProcessed", times: 3 }))
 * ```
 *
 * @category reasons
 * @since 0.1.0
 */
export class NotProcessed extends Data.TaggedClass("NotProcessed")<{
  readonly label: string
  readonly why: "goingAway" | "closing" | "connectionLost"
}> {
  /** Always true: the request never left, so sending it again cannot do it twice. */
  get retryable(): true {
    return true
  }

  get message(): string {
    const why =
      this.why === "goingAway"
        ? "the server announced it is going away before the request was sent"
        : this.why === "closing"
          ? "the client was closing before the request was sent"
          : "the connection ended before the request was sent"
    return `request on ${this.label} not processed: ${why}; it was never sent, so it is safe to retry on a new connection`
  }
}

/**
 * A multiplexed stream was not opened: it is safe to retry (on this session if the cause is a limit, on a
 * new one if the session is going away).
 *
 * **Details**
 *
 * `why` is `goAway` when the peer announced it is going away, `closing` when this session is closing,
 * `limit` when `maxConcurrentStreams` streams are open already (`limit` says how many; or as many as
 * `maxBufferedBytes` leaves room for) and none freed its slot within the session's `openTimeout`
 * (`waitedMillis` says how long the open waited; absent when it did not wait), and `refused` when the peer
 * reset the stream before accepting it (its own limits, or it was going away). Either way the peer has not
 * accepted the stream, so nothing written to it was processed.
 *
 * **Example** (Retrying an open that the peer or a limit refused)
 *
 * ```ts
 * import { Effect, Schedule } from "effect"
 * import type { Mux } from "fullduplex"
 *
 * const openStream = (session: Mux.Session) =>
 *   session.open.pipe(
 *     Effect.retry({
 *       while: (error) => error.reason._tag === "StreamRefused" && error.reason.why === "limit",
 *       schedule: Schedule.exponential("10 millis"),
 *       times: 5
 *     })
 *   )
 * ```
 *
 * @category reasons
 * @since 0.1.0
 */
export class StreamRefused extends Data.TaggedClass("StreamRefused")<{
  readonly label: string
  readonly why: "goAway" | "closing" | "limit" | "refused"
  readonly limit?: number | undefined
  /** How long the open waited for a slot before it was refused (`openTimeout`); absent if it did not wait. */
  readonly waitedMillis?: number | undefined
}> {
  /** Always true: the stream was never accepted. */
  get retryable(): true {
    return true
  }

  get message(): string {
    const why =
      this.why === "goAway"
        ? "the peer is going away"
        : this.why === "closing"
          ? "this session is closing"
          : this.why === "limit"
            ? `${this.limit} streams are open already (maxConcurrentStreams)` +
              (this.waitedMillis === undefined
                ? ""
                : ` and none closed in the ${this.waitedMillis} ms it waited (openTimeout)`)
            : "the peer refused it (its stream limit, or it is going away)"
    return `stream on ${this.label} not opened: ${why}; nothing on it was processed, so it is safe to retry`
  }
}

/**
 * A multiplexed session ended gracefully, so no more streams will come: `accept` ends here. Not a fault:
 * the peer closed its session (GoAway, then the end of the connection), or this one is going away (our
 * `goAway` or `close`), and every stream already opened was accepted before it.
 *
 * **Details**
 *
 * `by` says whose ending it was: `local` (our `goAway` or `close`) or `peer` (its end of the connection
 * with no stream left). A server handler that accepts in a loop ends on this reason; catch it with
 * `Effect.catchReason("DuplexError", "SessionEnded", …)` and the connection counts as completed.
 *
 * **Example** (Accepting streams until the session ends)
 *
 * ```ts
 * import { Effect } from "effect"
 * import type { Duplex, Mux } from "fullduplex"
 *
 * const acceptAll = (session: Mux.Session, handle: (stream: Duplex.Duplex) => Effect.Effect<void>) =>
 *   session.accept.pipe(
 *     Effect.flatMap((stream) => Effect.forkScoped(handle(stream))),
 *     Effect.forever,
 *     Effect.catchReason("DuplexError", "SessionEnded", (reason) => Effect.log(`session ended by ${reason.by}`))
 *   )
 * ```
 *
 * @category reasons
 * @since 0.1.0
 */
export class SessionEnded extends Data.TaggedClass("SessionEnded")<{
  readonly label: string
  readonly by: "local" | "peer"
}> {
  get message(): string {
    const whose = this.by === "local" ? "this side is going away (goAway or close)" : "the peer closed its session"
    return `no more streams on ${this.label}: ${whose}; the session ended gracefully`
  }
}

/**
 * Every reason a {@link DuplexError} can carry.
 *
 * **Example** (Whose fault a failure was)
 *
 * ```ts
 * import type { DuplexError } from "fullduplex"
 *
 * const whose = (reason: DuplexError.DuplexErrorReason): "yours" | "the peer's" | "nobody's" => {
 *   switch (reason._tag) {
 *     case "Closed":
 *     case "InvalidOptions":
 *       return "yours"
 *     case "Broken":
 *     case "ProtocolError":
 *     case "FrameTruncated":
 *       return "the peer's"
 *     default:
 *       return "nobody's"
 *   }
 * }
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export type DuplexErrorReason =
  | Closed
  | Broken
  | Timeout
  | StallDetected
  | InvalidOptions
  | ConnectFailed
  | ListenFailed
  | SpillFailed
  | SpawnFailed
  | ProcessFailed
  | MaxBufferExceeded
  | InputNotConsumed
  | FrameTooLarge
  | FrameTruncated
  | ProtocolError
  | NotProcessed
  | StreamRefused
  | SessionEnded

const TypeId = "~fullduplex/DuplexError" as const

/**
 * The error of every fullduplex operation: one tagged error whose `reason` says what happened.
 *
 * **When to use**
 *
 * Match on `reason._tag`, or use `Effect.catchReason("DuplexError", "Broken", f)` to handle one reason
 * and keep the others.
 *
 * **Example** (Treating a reset as the end of input)
 *
 * ```ts
 * import { Effect, Stream } from "effect"
 * import { Duplex } from "fullduplex"
 *
 * const readAll = (d: Duplex.Duplex) =>
 *   Stream.runCollect(d.readable).pipe(
 *     Effect.catchReason("DuplexError", "Broken", () => Effect.succeed([] as Array<Uint8Array>))
 *   )
 * ```
 *
 * @category errors
 * @since 0.1.0
 */
export class DuplexError extends Data.TaggedError("DuplexError")<{ readonly reason: DuplexErrorReason }> {
  readonly [TypeId]: typeof TypeId = TypeId

  override get message(): string {
    return this.reason.message
  }
}

/**
 * Tells whether a value is a {@link DuplexError}.
 *
 * **Example** (Telling a duplex failure from any other)
 *
 * ```ts
 * import { DuplexError } from "fullduplex"
 *
 * const kind = (u: unknown): string => (DuplexError.isDuplexError(u) ? u.reason._tag : "other")
 * ```
 *
 * @category guards
 * @since 0.1.0
 */
export const isDuplexError = (u: unknown): u is DuplexError => Predicate.hasProperty(u, TypeId)
