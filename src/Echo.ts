/**
 * The safe echo server: correct and bounded whatever the client does.
 *
 * An echo server that writes back as it reads is the textbook deadlock: a client that sends a large
 * request before reading fills both directions' buffers and both sides wait forever. `Echo` offers three
 * policies, each safe in its own way:
 *
 * | policy | what a client that writes everything before reading gets |
 * | --- | --- |
 * | {@link stream} (default) | cut with `StallDetected` after the stall timeout; other clients are served |
 * | {@link storeAndForward} | its echo, in full, up to `maxRequestBytes`; beyond it, an error line |
 * | {@link spill} | its echo, in full: the backlog beyond `memoryBytes` waits in a temporary file |
 *
 * @module fullduplex/Echo
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import * as fs from "node:fs/promises"
import * as os from "node:os"
import type { Duplex } from "./Duplex.js"
import type { DuplexError } from "./DuplexError.js"
import { inboundPipeOf, outboundPortOf } from "./internal/bytePipe.js"
import { unscoped } from "./internal/tcpOptions.js"
import { checkFinitePositiveDuration, invalidOptions } from "./internal/errors.js"
import { collect } from "./internal/collect.js"
import { pump, pumpUntilWait } from "./internal/pump.js"
import { SpillQueue } from "./internal/spillQueue.js"
import * as Tcp from "./Tcp.js"
import * as Watchdog from "./Watchdog.js"

/**
 * Echo as it reads, with bounded buffers and the stall watchdog on.
 *
 * **Example** (Choosing the policy by its tag)
 *
 * ```ts
 * import { Echo } from "fullduplex"
 *
 * const policy: Echo.StreamPolicy = Echo.stream({ stallTimeout: "3 seconds" })
 * const server = Echo.serve({ port: 0, policy })
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface StreamPolicy {
  readonly _tag: "Stream"
  /** How long a two-way stall may last before the client is cut. Default 10 s (`Watchdog`'s default). */
  readonly stallTimeout?: Duration.Input | undefined
}

/**
 * Read the whole request (until the client half-closes), then echo it.
 *
 * **Example** (A policy value built by hand)
 *
 * ```ts
 * import { Echo } from "fullduplex"
 *
 * const policy: Echo.StoreAndForwardPolicy = { _tag: "StoreAndForward", maxRequestBytes: 64 * 1024 }
 * const server = Echo.serve({ port: 0, policy })
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface StoreAndForwardPolicy {
  readonly _tag: "StoreAndForward"
  readonly maxRequestBytes: number
}

/**
 * Echo as it reads, but read at full speed whatever the client reads: the backlog stays in memory up to
 * `memoryBytes` and goes to a temporary file beyond it.
 *
 * **Example** (Spilling to a directory of one's own, at most 100 MiB per connection)
 *
 * ```ts
 * import { Echo } from "fullduplex"
 *
 * const policy: Echo.SpillPolicy = Echo.spill({
 *   memoryBytes: 1024 * 1024,
 *   directory: "/var/tmp",
 *   maxFileBytes: 100 * 1024 * 1024
 * })
 * const server = Echo.serve({ port: 0, policy })
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface SpillPolicy {
  readonly _tag: "Spill"
  readonly memoryBytes: number
  /** Where temporary files go. Default `os.tmpdir()`. */
  readonly directory?: string | undefined
  /** The most one connection may hold on disk; beyond it reading waits (and the watchdog applies). Default 1 GiB. */
  readonly maxFileBytes?: number | undefined
  readonly stallTimeout?: Duration.Input | undefined
}

/**
 * One of the three echo policies.
 *
 * **Example** (A policy picked from the configuration)
 *
 * ```ts
 * import { Echo } from "fullduplex"
 *
 * const policyFor = (mode: string): Echo.Policy =>
 *   mode === "buffered" ? Echo.storeAndForward({ maxRequestBytes: 1024 * 1024 }) : Echo.stream()
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export type Policy = StreamPolicy | StoreAndForwardPolicy | SpillPolicy

/**
 * The streaming policy, the default: echo as it reads, bounded buffers, watchdog on.
 *
 * **Example** (A streaming echo server that cuts stalled clients after 2 s)
 *
 * ```ts
 * import { Echo } from "fullduplex"
 *
 * const server = Echo.serve({ port: 0, policy: Echo.stream({ stallTimeout: "2 seconds" }) })
 * ```
 *
 * @category policies
 * @since 0.1.0
 */
export const stream = (options: { readonly stallTimeout?: Duration.Input | undefined } = {}): StreamPolicy => ({
  _tag: "Stream",
  stallTimeout: options.stallTimeout
})

/**
 * The store-and-forward policy: read until the client half-closes, then answer. A request over
 * `maxRequestBytes` gets the line `fullduplex echo: request exceeds <n> bytes; nothing echoed`, then the
 * server's close strategy (a lingering close by default, which discards the rest of the request instead
 * of resetting the line away); memory per connection stays at most `maxRequestBytes`.
 *
 * **Example** (Echo requests of up to 1 MiB)
 *
 * ```ts
 * import { Echo } from "fullduplex"
 *
 * const server = Echo.serve({ port: 0, policy: Echo.storeAndForward({ maxRequestBytes: 1024 * 1024 }) })
 * ```
 *
 * @category policies
 * @since 0.1.0
 */
export const storeAndForward = (options: { readonly maxRequestBytes: number }): StoreAndForwardPolicy => ({
  _tag: "StoreAndForward",
  maxRequestBytes: options.maxRequestBytes
})

/**
 * The spill policy: echo whatever the client does, with memory bounded by `memoryBytes` (plus the
 * connection's own buffers) and the rest of the backlog in a temporary file in `directory`. The file is
 * unlinked as soon as it is created (where the OS allows) and closed with the connection, also on error.
 *
 * **Example** (At most 4 MiB in memory per connection)
 *
 * ```ts
 * import { Echo } from "fullduplex"
 *
 * const server = Echo.serve({ port: 0, policy: Echo.spill({ memoryBytes: 4 * 1024 * 1024 }) })
 * ```
 *
 * @category policies
 * @since 0.1.0
 */
export const spill = (options: Omit<SpillPolicy, "_tag">): SpillPolicy => ({ _tag: "Spill", ...options })

/**
 * What the echo handlers have done, over all connections.
 *
 * - `peakBufferedBytes`: the most one connection held in user space at once (its backlog in memory plus
 *   the bytes its duplex buffered), sampled as chunks arrive.
 * - `spilledBytes`: bytes written to temporary files.
 * - `tooLarge`: requests refused by `storeAndForward` for their size.
 *
 * **Example** (Reporting how much was spilled)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Echo } from "fullduplex"
 *
 * const report = (server: Echo.EchoServer) =>
 *   Effect.flatMap(server.echo, (stats: Echo.EchoStats) =>
 *     Effect.log(`${stats.spilledBytes} bytes spilled, peak ${stats.peakBufferedBytes} in memory per connection`)
 *   )
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface EchoStats {
  readonly peakBufferedBytes: number
  readonly spilledBytes: number
  readonly tooLarge: number
}

/**
 * Options of {@link serve}: those of `Tcp.serve` plus the policy.
 *
 * **Example** (An echo server with a limit on connections)
 *
 * ```ts
 * import { Echo } from "fullduplex"
 *
 * const options: Echo.EchoOptions = { port: 7, maxConnections: 100, policy: Echo.stream() }
 * const server = Echo.serve(options)
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface EchoOptions extends Tcp.ServeOptions {
  /** Default {@link stream}(). */
  readonly policy?: Policy | undefined
}

/**
 * An echo server: a `Tcp.Server` with the echo's own counters.
 *
 * **Example** (Serving until interrupted, with the counters at the end)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Echo } from "fullduplex"
 *
 * const program = Effect.scoped(
 *   Effect.gen(function* () {
 *     const server: Echo.EchoServer = yield* Echo.serve({ port: 0 })
 *     yield* Effect.addFinalizer(() => Effect.flatMap(server.echo, (stats) => Effect.log(stats)))
 *     return yield* Effect.never
 *   })
 * )
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface EchoServer extends Tcp.Server {
  readonly echo: Effect.Effect<EchoStats>
}

const KiB = 1024
const DEFAULT_MAX_FILE_BYTES = 1024 * 1024 * 1024

/** Mutable counters shared by the handlers of one server. */
class Counters {
  peakBufferedBytes = 0
  spilledBytes = 0
  tooLarge = 0
  sample(bytes: number) {
    if (bytes > this.peakBufferedBytes) this.peakBufferedBytes = bytes
  }
  snapshot(): EchoStats {
    return { peakBufferedBytes: this.peakBufferedBytes, spilledBytes: this.spilledBytes, tooLarge: this.tooLarge }
  }
}

const streamEcho = (duplex: Duplex, policy: StreamPolicy, watched: boolean): Effect.Effect<void, DuplexError> => {
  // Read a chunk, write it back, repeat: while the write waits, nothing is read, so a client that does
  // not read its echo stalls both directions, which is what the watchdog reports. Over a duplex with
  // ports (a socket, a pair) that loop is a pump: each chunk is written back in the step that delivers it.
  const source = inboundPipeOf(duplex)
  const destination = outboundPortOf(duplex)
  const echo: Effect.Effect<void, DuplexError> =
    source !== undefined && destination !== undefined
      ? Effect.asVoid(pump(source, destination, { endOnEof: false }))
      : readWriteLoop(duplex)
  // Under `serve` the server's sweep finds the stall (`stallTimeout`): no watchdog fiber per connection.
  return watched ? echo : echo.pipe(Watchdog.guard(duplex, { stallTimeout: policy.stallTimeout }))
}

const readWriteLoop = (duplex: Duplex): Effect.Effect<void, DuplexError> =>
  Effect.flatMap(duplex.read, (chunk) =>
    Option.isNone(chunk) ? Effect.void : Effect.flatMap(duplex.write(chunk.value), () => readWriteLoop(duplex))
  )

const storeAndForwardEcho = (
  duplex: Duplex,
  policy: StoreAndForwardPolicy,
  counters: Counters
): Effect.Effect<void, DuplexError> =>
  Effect.suspend(() => {
    const chunks: Array<Uint8Array> = []
    let total = 0
    // Takes a chunk of the request; `false` once it would exceed `maxRequestBytes`.
    const take = (chunk: Uint8Array): boolean => {
      if (total + chunk.length > policy.maxRequestBytes) return false
      chunks.push(chunk)
      total += chunk.length
      return true
    }
    // Over a duplex with an inbound pipe (a socket, a pair) the request is gathered as it is delivered, with
    // no read per chunk (nothing is written meanwhile, so what is buffered is the request and what the pipe
    // still holds); elsewhere by reading.
    const source = inboundPipeOf(duplex)
    const gathered =
      source !== undefined
        ? collect(source, (chunk) => {
            const taken = take(chunk)
            if (taken) counters.sample(total + source.buffered)
            return taken
          })
        : readWhile(duplex, take, (b) => counters.sample(total + b))
    return Effect.flatMap(gathered, (complete) => {
      if (complete) return duplex.writeAll(chunks)
      chunks.length = 0
      counters.tooLarge++
      // The client may still be sending: the close strategy (lingering by default) reads and discards it, so
      // that the close does not reset the error line away.
      return duplex.write(
        new TextEncoder().encode(`fullduplex echo: request exceeds ${policy.maxRequestBytes} bytes; nothing echoed\n`)
      )
    })
  })

/** Bytes the duplex holds in its buffers now (both directions). */
const buffered = (duplex: Duplex) => Effect.map(duplex.stats, (s) => s.inbound.buffered + s.outbound.buffered)

/**
 * Reads and hands every chunk to `take` until EOF (`true`) or until `take` answers `false` (`false`),
 * sampling the buffered bytes after each.
 */
const readWhile = (
  duplex: Duplex,
  take: (chunk: Uint8Array) => boolean,
  sample: (buffered: number) => void
): Effect.Effect<boolean, DuplexError> =>
  Effect.flatMap(duplex.read, (chunk) =>
    Option.isNone(chunk)
      ? Effect.succeed(true)
      : take(chunk.value)
        ? Effect.flatMap(buffered(duplex), (b) => {
            sample(b)
            return readWhile(duplex, take, sample)
          })
        : Effect.succeed(false)
  )

/**
 * The spill echo. While the client takes its echo as it comes, over a duplex with ports, it is a pump (one
 * object per connection, no fiber); at the first write the client's side cannot take at once, the queue
 * takes over for the rest of the connection, and reading goes on into memory, then the file.
 *
 * `watched`: the server watches for the two-way stall itself (no watchdog fiber per connection).
 */
const spillEcho = (
  duplex: Duplex,
  policy: SpillPolicy,
  counters: Counters,
  watched: boolean
): Effect.Effect<void, DuplexError> => {
  const source = inboundPipeOf(duplex)
  const destination = outboundPortOf(duplex)
  if (source === undefined || destination === undefined)
    return spillQueued(duplex, policy, counters, watched, Effect.void)
  return Effect.flatMap(pumpUntilWait(source, destination), (outcome) =>
    outcome._tag === "End" ? Effect.void : spillQueued(duplex, policy, counters, watched, outcome.room)
  )
}

/** Reader → `SpillQueue` → writer, the writer first waiting for `room` (the hand-over the pump left waiting). */
const spillQueued = (
  duplex: Duplex,
  policy: SpillPolicy,
  counters: Counters,
  watched: boolean,
  room: Effect.Effect<void, DuplexError>
): Effect.Effect<void, DuplexError> =>
  Effect.acquireUseRelease(
    Effect.sync(
      () =>
        new SpillQueue({
          memoryBytes: policy.memoryBytes,
          maxFileBytes: policy.maxFileBytes ?? DEFAULT_MAX_FILE_BYTES,
          directory: policy.directory ?? os.tmpdir(),
          label: duplex.label
        })
    ),
    (queue) => {
      // Deadlock freedom: reading never waits on the client reading; only disk (or a full file) slows it.
      const inbound: Effect.Effect<void, DuplexError> = Effect.flatMap(duplex.read, (chunk) =>
        Option.isNone(chunk)
          ? Effect.void
          : Effect.flatMap(queue.push(chunk.value), () =>
              Effect.flatMap(buffered(duplex), (b) => {
                counters.sample(queue.memoryBytes + b)
                return inbound
              })
            )
      )
      const outbound: Effect.Effect<void, DuplexError> = Effect.flatMap(queue.take, (chunk) =>
        chunk === undefined ? Effect.void : Effect.flatMap(duplex.write(chunk), () => outbound)
      )
      const before = queue.spilledBytes
      const reading = Effect.ensuring(
        inbound,
        Effect.sync(() => queue.end())
      )
      const both = Effect.all([reading, Effect.andThen(room, outbound)], { concurrency: 2, discard: true })
      return (watched ? both : both.pipe(Watchdog.guard(duplex, { stallTimeout: policy.stallTimeout }))).pipe(
        Effect.ensuring(
          Effect.sync(() => {
            counters.spilledBytes += queue.spilledBytes - before
          })
        )
      )
    },
    (queue) => queue.close
  )

const checkPolicy = (label: string, policy: Policy): DuplexError | undefined => {
  const bad = (option: string, value: unknown, expected: string) => invalidOptions(label, option, value, expected)
  const stall = (timeout: Duration.Input | undefined) => checkFinitePositiveDuration(label, "stallTimeout", timeout)
  switch (policy._tag) {
    case "Stream":
      return stall(policy.stallTimeout)
    case "StoreAndForward":
      return Number.isSafeInteger(policy.maxRequestBytes) && policy.maxRequestBytes >= 0
        ? undefined
        : bad("maxRequestBytes", policy.maxRequestBytes, "a whole number of bytes ≥ 0")
    case "Spill":
      if (!Number.isSafeInteger(policy.memoryBytes) || policy.memoryBytes < 0) {
        return bad("memoryBytes", policy.memoryBytes, "a whole number of bytes ≥ 0")
      }
      if (
        policy.maxFileBytes !== undefined &&
        !(Number.isSafeInteger(policy.maxFileBytes) && policy.maxFileBytes >= 64 * KiB)
      ) {
        return bad("maxFileBytes", policy.maxFileBytes, "a whole number of bytes ≥ 65536")
      }
      return stall(policy.stallTimeout)
  }
}

/** Fails with `InvalidOptions` unless `directory` is a directory this process can write to. */
const checkDirectory = (label: string, directory: string): Effect.Effect<void, DuplexError> =>
  Effect.tryPromise({
    try: async () => {
      if (!(await fs.stat(directory)).isDirectory()) throw new Error("not a directory")
      await fs.access(directory, fs.constants.W_OK)
    },
    catch: (err) =>
      invalidOptions(
        label,
        "directory",
        directory,
        `a writable directory (${err instanceof Error ? err.message : String(err)})`
      )
  })

/** `watched`: the server watches for the stream policy's two-way stall itself. */
const handlerWith =
  (policy: Policy, counters: Counters, watched = false) =>
  (duplex: Duplex): Effect.Effect<void, DuplexError> => {
    switch (policy._tag) {
      case "Stream":
        return streamEcho(duplex, policy, watched)
      case "StoreAndForward":
        return storeAndForwardEcho(duplex, policy, counters)
      case "Spill":
        return spillEcho(duplex, policy, counters, watched)
    }
  }

/**
 * The echo of one duplex under a policy, for any transport: returns when the peer has half-closed and
 * everything was echoed (it does not `end` the duplex: the caller's close strategy does).
 *
 * **When to use**
 *
 * To run the echo over something other than `Echo.serve`'s TCP server: an in-memory pair in a test, a
 * Unix socket you accepted yourself, a mux stream.
 *
 * **Example** (Echo over an in-memory pair)
 *
 * ```ts
 * import { Effect, Sink, Stream } from "effect"
 * import { Close, Duplex, Echo } from "fullduplex"
 *
 * const program = Effect.scoped(
 *   Effect.gen(function* () {
 *     const [client, server] = yield* Duplex.pair()
 *     yield* Effect.forkScoped(Effect.andThen(Echo.handler(Echo.spill({ memoryBytes: 1024 }))(server), Close.lingering(server)))
 *     return yield* Duplex.exchange(client, Stream.make(new Uint8Array(4096)), Sink.collect<Uint8Array>())
 *   })
 * )
 * ```
 *
 * @category handlers
 * @since 0.1.0
 */
export const handler = (policy: Policy = stream()): ((duplex: Duplex) => Effect.Effect<void, DuplexError>) => {
  const counters = new Counters()
  return (duplex) => {
    const bad = checkPolicy(duplex.label, policy)
    return bad !== undefined ? Effect.fail(bad) : handlerWith(policy, counters)(duplex)
  }
}

/**
 * Serves the echo over TCP (or a Unix socket with `path`) with `Tcp.serve`: every connection in its own
 * fiber, the chosen policy, a lingering close, graceful shutdown with the scope.
 *
 * **Details**
 *
 * A client cut by the stream policy's watchdog is reported as a `ConnectionClosed` event with `ending:
 * "failed"` and a `StallDetected` cause (and counted in `stats.failed`); the server goes on.
 *
 * **Example** (An echo server that spills beyond 1 MiB per connection)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Echo } from "fullduplex"
 *
 * const program = Effect.scoped(
 *   Effect.gen(function* () {
 *     const server = yield* Echo.serve({ port: 0, policy: Echo.spill({ memoryBytes: 1024 * 1024 }) })
 *     yield* Effect.log(`echo on ${JSON.stringify(server.address)}`)
 *     return yield* Effect.never
 *   })
 * )
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const serve = (options: EchoOptions = {}): Effect.Effect<EchoServer, DuplexError, Scope.Scope> =>
  Effect.gen(function* () {
    const policy = options.policy ?? stream()
    const label = options.label ?? "echo server"
    const bad = checkPolicy(label, policy)
    if (bad !== undefined) return yield* bad
    if (policy._tag === "Spill") yield* checkDirectory(label, policy.directory ?? os.tmpdir())
    const counters = new Counters()
    // The stream and spill policies' stall is found by the server's sweep, as cheap per connection as its
    // idle limit: no watchdog fiber per connection.
    const watched = policy._tag === "Stream" || policy._tag === "Spill"
    const server = yield* Tcp.serve(
      watched ? { ...options, stallTimeout: policy.stallTimeout ?? Watchdog.DEFAULT_STALL_TIMEOUT } : options,
      unscoped(handlerWith(policy, counters, watched))
    )
    return { ...server, echo: Effect.sync(() => counters.snapshot()) }
  })
