/**
 * The model of a duplex byte connection, and the combinators that use one without deadlock.
 *
 * A {@link Duplex} has a `readable` stream of inbound bytes, a `write` side bounded in bytes, `end`
 * (half-close), `abort` (hard close) and `stats`. Every combinator here follows one rule: **no fiber that
 * reads ever waits on a fiber that writes to the same duplex, and vice versa** — reading and writing run
 * as two concurrent fibers in one scope, and the first failure interrupts both.
 *
 * @module fullduplex/Duplex
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import type * as Option from "effect/Option"
import { dual } from "effect/Function"
import { type Pipeable, pipeArguments } from "effect/Pipeable"
import * as Predicate from "effect/Predicate"
import type * as Scope from "effect/Scope"
import type * as Sink from "effect/Sink"
import type * as Stream from "effect/Stream"
import * as Lazy from "./internal/lazyModules.js"
import type * as stream from "node:stream"
import { DuplexError, InvalidOptions } from "./DuplexError.js"
import { BytePipe, inboundPipeOf, outboundPortOf, withPorts } from "./internal/bytePipe.js"
import { pump, pumpBoth } from "./internal/pump.js"
import { readableAlongside, readableToEnd } from "./internal/through.js"
import * as nodeDuplex from "./internal/nodeDuplex.js"

/**
 * The key that marks a {@link Duplex}: {@link isDuplex} checks for it, and every duplex made by
 * {@link make} carries it.
 *
 * **Example** (Telling a duplex apart by its type id)
 *
 * ```ts
 * import { Duplex } from "fullduplex"
 *
 * const isOurs = (u: object): boolean => Duplex.TypeId in u
 * ```
 *
 * @category type ids
 * @since 0.1.0
 */
export const TypeId = "~fullduplex/Duplex" as const

/**
 * The type of {@link TypeId}.
 *
 * @category type ids
 * @since 0.1.0
 */
export type TypeId = typeof TypeId

/**
 * What one direction of a duplex has done so far.
 *
 * **Details**
 *
 * - `bytes`: outbound, the bytes accepted from `write`; inbound, the bytes delivered to `readable`.
 * - `buffered` / `peakBuffered`: bytes held in user space for this direction now, and at most so far.
 * - `blocked` / `blockedMillis`: whether a writer in this direction is held back by backpressure right
 *   now, and for how long in total. Outbound, that is your writes waiting for room (the peer's zero
 *   window); inbound, it is the peer held back because you do not read (your zero window).
 *
 * **Example** (How much of a direction is still buffered)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Duplex } from "fullduplex"
 *
 * const backlog = (conn: Duplex.Duplex) =>
 *   Effect.map(conn.stats, ({ outbound }: { outbound: Duplex.DirectionStats }) =>
 *     outbound.blocked ? `${outbound.buffered} bytes waiting for the peer` : "flowing"
 *   )
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface DirectionStats {
  readonly bytes: number
  readonly buffered: number
  readonly peakBuffered: number
  readonly blocked: boolean
  readonly blockedMillis: number
}

/**
 * Both directions of a duplex, as seen from that duplex.
 *
 * **Example** (Logging what a connection moved)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Duplex } from "fullduplex"
 *
 * const report = (conn: Duplex.Duplex) =>
 *   Effect.flatMap(conn.stats, (stats: Duplex.Stats) =>
 *     Effect.log(`${conn.label}: ${stats.outbound.bytes} bytes written, ${stats.inbound.bytes} read`)
 *   )
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface Stats {
  readonly outbound: DirectionStats
  readonly inbound: DirectionStats
}

/**
 * A duplex byte connection: bytes in, bytes out, half-close, abort, bounded buffers, stats.
 *
 * **Details**
 *
 * - `readable`: inbound bytes, one chunk per pull. Ends at the peer's half-close; fails with
 *   `DuplexError` on reset. Each run of the stream continues where the previous one stopped (a run that
 *   stops after any chunk leaves the rest for the next); run it from one fiber at a time.
 * - `read`: the next inbound chunk, or `None` at the peer's half-close: one step of `readable`, without
 *   the Stream machinery (the cheapest way to read a request and answer it). Reads and runs of
 *   `readable` share one position.
 * - `write(chunk)`: completes when the chunk is accepted into a buffer bounded in bytes, so a writer is
 *   held back instead of the process's memory growing. Concurrent writes are served in call order.
 * - `writeAll(chunks)` / `sink`: the same for many chunks. `sink` does not `end`.
 * - `end`: half-close once every accepted byte is flushed. Idempotent. A later write fails `Closed`.
 * - `abort`: hard close (RST for a socket). Idempotent, never blocks; wakes every pending read and write
 *   on both ends.
 * - `stats`: a snapshot of both directions.
 *
 * **Interruption**
 *
 * An interrupted `write` may have had a prefix of its chunk accepted (counted in
 * `stats.outbound.bytes`); the rest is dropped. An interrupted read took nothing.
 *
 * **Closing**
 *
 * After your own `abort` (or the owning scope's close) every operation fails `Closed`; after the peer's
 * abort, reads and writes fail `Broken`; after the peer's `end`, `readable` ends and writes still work.
 *
 * **Gotchas**
 *
 * Do not write everything and then read: against a peer that answers as it reads, both buffers fill
 * and both sides wait forever. Use {@link exchange}, {@link pipeThrough} or {@link splice}.
 *
 * **Example** (Writing and reading concurrently, as every duplex must be used)
 *
 * ```ts
 * import { Effect, Sink, Stream } from "effect"
 * import { Duplex } from "fullduplex"
 *
 * const request = (conn: Duplex.Duplex, body: Uint8Array) =>
 *   Effect.all(
 *     [Effect.andThen(conn.write(body), conn.end), Stream.run(conn.readable, Sink.collect<Uint8Array>())],
 *     { concurrency: 2 }
 *   ).pipe(Effect.map(([, reply]) => reply))
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface Duplex extends Pipeable {
  readonly [TypeId]: TypeId
  /** A name for errors and diagnostics (`"pair.a"`, `"tcp 127.0.0.1:4000"`). */
  readonly label: string
  readonly readable: Stream.Stream<Uint8Array, DuplexError>
  readonly read: Effect.Effect<Option.Option<Uint8Array>, DuplexError>
  /** Completes once `chunk` is accepted into the outbound buffer (see the details). */
  readonly write: (chunk: Uint8Array) => Effect.Effect<void, DuplexError>
  /** `write` for each chunk, in order, as one operation. */
  readonly writeAll: (chunks: Iterable<Uint8Array>) => Effect.Effect<void, DuplexError>
  readonly sink: Sink.Sink<void, Uint8Array, never, DuplexError>
  readonly end: Effect.Effect<void, DuplexError>
  readonly abort: Effect.Effect<void>
  readonly stats: Effect.Effect<Stats>
}

/**
 * Tells whether a value is a {@link Duplex}.
 *
 * **Example** (Accepting a duplex or something else)
 *
 * ```ts
 * import { Duplex } from "fullduplex"
 *
 * const describe = (u: unknown): string => (Duplex.isDuplex(u) ? `duplex ${u.label}` : "not a duplex")
 * ```
 *
 * @category guards
 * @since 0.1.0
 */
export const isDuplex = (u: unknown): u is Duplex => Predicate.hasProperty(u, TypeId)

class DuplexImpl implements Duplex {
  readonly [TypeId]: TypeId = TypeId
  readonly label: string
  readonly readable: Stream.Stream<Uint8Array, DuplexError>
  readonly read: Effect.Effect<Option.Option<Uint8Array>, DuplexError>
  readonly write: (chunk: Uint8Array) => Effect.Effect<void, DuplexError>
  readonly writeAll: (chunks: Iterable<Uint8Array>) => Effect.Effect<void, DuplexError>
  readonly sink: Sink.Sink<void, Uint8Array, never, DuplexError>
  readonly end: Effect.Effect<void, DuplexError>
  readonly abort: Effect.Effect<void>
  readonly stats: Effect.Effect<Stats>

  constructor(parts: MakeOptions) {
    this.label = parts.label
    this.readable = parts.readable
    // Any conforming `readable` gives up exactly one chunk to a run that takes one: the generic `read`.
    this.read = parts.read ?? Lazy.Stream().runHead(parts.readable)
    this.write = parts.write
    const write = parts.write
    // A batch of one (what a copy of one `readable` pull hands over) skips `Effect.forEach`.
    this.writeAll =
      parts.writeAll ??
      ((chunks) =>
        Array.isArray(chunks) && chunks.length === 1
          ? write(chunks[0] as Uint8Array)
          : Effect.forEach(chunks, write, { discard: true }))
    this.sink = Lazy.Sink().forEachArray(this.writeAll)
    this.end = parts.end
    this.abort = parts.abort
    this.stats = parts.stats
  }

  pipe() {
    return pipeArguments(this, arguments)
  }
}

/**
 * The parts of a {@link Duplex}, for {@link make}.
 *
 * **Example** (A duplex that counts what is written through it)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Duplex } from "fullduplex"
 *
 * const counted = (d: Duplex.Duplex, onWrite: (bytes: number) => void): Duplex.Duplex => {
 *   const parts: Duplex.MakeOptions = {
 *     label: `${d.label} (counted)`,
 *     readable: d.readable,
 *     write: (chunk) => Effect.andThen(Effect.sync(() => onWrite(chunk.length)), d.write(chunk)),
 *     end: d.end,
 *     abort: d.abort,
 *     stats: d.stats
 *   }
 *   return Duplex.make(parts)
 * }
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface MakeOptions {
  readonly label: string
  readonly readable: Stream.Stream<Uint8Array, DuplexError>
  /** One chunk of `readable`, or `None` at its end. Defaults to `Stream.runHead(readable)`. */
  readonly read?: Effect.Effect<Option.Option<Uint8Array>, DuplexError> | undefined
  /** Accepts one chunk, waiting while the outbound buffer is full: the backpressure of the duplex. */
  readonly write: (chunk: Uint8Array) => Effect.Effect<void, DuplexError>
  /** Defaults to `write` for each chunk in order. */
  readonly writeAll?: ((chunks: Iterable<Uint8Array>) => Effect.Effect<void, DuplexError>) | undefined
  readonly end: Effect.Effect<void, DuplexError>
  readonly abort: Effect.Effect<void>
  readonly stats: Effect.Effect<Stats>
}

/**
 * Builds a {@link Duplex} from its parts, for a transport of your own.
 *
 * **When to use**
 *
 * When you adapt a transport that fullduplex has no adapter for. Run the testkit's `conformance` suite
 * against it: the parts must keep the contract described on {@link Duplex}.
 *
 * **Example** (A duplex that discards what it is sent and never answers)
 *
 * ```ts
 * import { Effect, Stream } from "effect"
 * import { Duplex } from "fullduplex"
 *
 * const zero = { bytes: 0, buffered: 0, peakBuffered: 0, blocked: false, blockedMillis: 0 }
 * const blackHole = Duplex.make({
 *   label: "black-hole",
 *   readable: Stream.never,
 *   write: () => Effect.void,
 *   end: Effect.void,
 *   abort: Effect.void,
 *   stats: Effect.succeed({ outbound: zero, inbound: zero })
 * })
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = (parts: MakeOptions): Duplex => new DuplexImpl(parts)

/**
 * Options of {@link pair}.
 *
 * **Example** (A pair with no buffer, for lockstep tests)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Duplex } from "fullduplex"
 *
 * const options: Duplex.PairOptions = { capacity: 0, label: "lockstep" }
 * const program = Effect.scoped(Effect.flatMap(Duplex.pair(options), ([a, b]) => Effect.succeed([a.label, b.label])))
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface PairOptions {
  /**
   * Bytes each direction can hold, modelling the sender's send buffer and the receiver's receive buffer
   * together. `0` makes every write a lockstep hand-over to a reader. Default 65536 (64 KiB).
   */
  readonly capacity?: number | undefined
  /** Prefix of the two labels (`"<label>.a"`, `"<label>.b"`). Default `"pair"`. */
  readonly label?: string | undefined
}

/**
 * Default capacity of each direction of a {@link pair}, in bytes: 64 KiB, Node's default
 * `highWaterMark` for byte streams since Node 22.
 *
 * **Example** (A pair with four times the default buffering)
 *
 * ```ts
 * import { Duplex } from "fullduplex"
 *
 * const roomy = Duplex.pair({ capacity: 4 * Duplex.DEFAULT_CAPACITY_BYTES })
 * ```
 *
 * @category constants
 * @since 0.1.0
 */
export const DEFAULT_CAPACITY_BYTES = 64 * 1024

/**
 * Two connected in-memory duplexes: what `a` writes, `b` reads, and the other way round. Each direction
 * is a one-way pipe bounded by `capacity` bytes.
 *
 * **When to use**
 *
 * To test protocol code without sockets, or to model a connection with a given buffer size: a pair
 * deadlocks exactly where a TCP connection with that much buffering would.
 *
 * **Details**
 *
 * A write that fits in the free room completes at once. A larger one fills the room and waits; as the
 * reader drains the buffer, the next pieces of the waiting write come in, so the write proceeds in
 * pieces of at most `capacity` bytes and completes with its last piece, as over a TCP window. Room is
 * handed to writers only once the buffer is empty or half free (the receiver's silly-window avoidance),
 * so pieces stay large. `stats.*.buffered` never exceeds `capacity`, and no byte is copied. With
 * `capacity: 0` nothing is buffered: every write waits for a reader, which takes it whole (a lockstep
 * rendezvous).
 *
 * **Closing**
 *
 * `end` on one side delivers EOF to the other after the bytes already accepted. `abort` on one side
 * drops what it had buffered for the peer and makes the peer's pending and later reads and writes fail
 * `Broken`; its own fail `Closed`. Closing the scope aborts both sides.
 *
 * **Example** (An echo peer on the other end)
 *
 * ```ts
 * import { Effect, Sink, Stream } from "effect"
 * import { Duplex } from "fullduplex"
 *
 * const program = Effect.scoped(
 *   Effect.gen(function* () {
 *     const [client, server] = yield* Duplex.pair({ capacity: 16 * 1024 })
 *     yield* Effect.forkScoped(Stream.run(server.readable, server.sink).pipe(Effect.andThen(server.end)))
 *     const input = Stream.make(new TextEncoder().encode("hello"))
 *     return yield* Duplex.exchange(client, input, Sink.collect())
 *   })
 * )
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const pair = (options: PairOptions = {}): Effect.Effect<readonly [Duplex, Duplex], DuplexError, Scope.Scope> =>
  Effect.gen(function* () {
    const label = options.label ?? "pair"
    const capacity = options.capacity ?? DEFAULT_CAPACITY_BYTES
    if (!Number.isSafeInteger(capacity) || capacity < 0) {
      return yield* new DuplexError({
        reason: new InvalidOptions({
          label,
          option: "capacity",
          value: capacity,
          expected: "a whole number of bytes ≥ 0"
        })
      })
    }
    const clock = yield* Clock.Clock
    const aLabel = `${label}.a`
    const bLabel = `${label}.b`
    const ab = new BytePipe(capacity, aLabel, bLabel, clock)
    const ba = new BytePipe(capacity, bLabel, aLabel, clock)
    const a = pairSide(aLabel, ab, ba)
    const b = pairSide(bLabel, ba, ab)
    yield* Effect.addFinalizer(() => Effect.andThen(a.abort, b.abort))
    return [a, b] as const
  })

const pairSide = (label: string, outbound: BytePipe, inbound: BytePipe): Duplex =>
  withPorts(
    make({
      label,
      readable: Lazy.Stream().fromPull(Effect.sync(() => inbound.pull)),
      read: inbound.read,
      write: outbound.write,
      writeAll: outbound.writeAll,
      end: Effect.suspend(() => {
        const error = outbound.end()
        return error === undefined ? Exit.void : Exit.fail(error)
      }),
      abort: Effect.sync(() => {
        outbound.abortWriter(true)
        inbound.closeReader()
      }),
      stats: Effect.sync(() => ({
        outbound: outbound.directionStats("writer"),
        inbound: inbound.directionStats("reader")
      }))
    }),
    inbound,
    outbound.port
  )

/**
 * Options of {@link fromNodeDuplex}.
 *
 * **Example** (A PassThrough as a duplex, with a small buffer)
 *
 * ```ts
 * import { Duplex } from "fullduplex"
 * import { PassThrough } from "node:stream"
 *
 * const options: Duplex.FromNodeDuplexOptions = { highWaterMark: 1024, label: "loopback" }
 * const loopback = Duplex.fromNodeDuplex(new PassThrough(), options)
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface FromNodeDuplexOptions {
  /**
   * Bytes of inbound data held in user space before the stream is paused (plus the one chunk that
   * crossed the mark), and the largest piece a write hands to the stream at once. Default 65536.
   */
  readonly highWaterMark?: number | undefined
  /** Name for errors and diagnostics. Default `"socket <address>:<port>"` for a connected socket, else `"node-duplex"`. */
  readonly label?: string | undefined
}

/**
 * Any Node `stream.Duplex` (a `net.Socket`, a `PassThrough`, a child's stdio pair) as a {@link Duplex}.
 *
 * **When to use**
 *
 * To bring an existing Node stream under fullduplex's rules. For TCP connections prefer the `Tcp` module,
 * which owns the socket from connect to close.
 *
 * **Details**
 *
 * Inbound data flows from `'data'` events into a buffer of `highWaterMark` bytes; when it is full the
 * stream is paused, so the kernel's flow control holds the peer back. Outbound, a write is handed to the
 * stream in pieces of at most `highWaterMark` bytes and waits for `'drain'` whenever the stream asks it
 * to, so user-space buffering stays below `writableHighWaterMark + highWaterMark`. `end` calls
 * `stream.end()` and waits for `'finish'`. `abort` resets a `net.Socket` (RST) and destroys any other
 * stream. The stream's `allowHalfOpen` is set to `true`, so the peer's half-close does not end our side.
 * A no-op `'error'` listener stays on the stream: errors surface as `Broken` instead of crashing.
 *
 * **Closing**
 *
 * Closing the scope destroys the stream: plainly if it was `end`ed, by `abort` otherwise. Pending reads
 * and writes then fail `Closed`.
 *
 * **Gotchas**
 *
 * The stream must carry bytes (no object mode, no `setEncoding`). Node keeps a buffer of its own
 * (`readableHighWaterMark`) behind ours while paused.
 *
 * **Example** (A socket as a duplex)
 *
 * ```ts
 * import { Effect } from "effect"
 * import * as net from "node:net"
 * import { Duplex } from "fullduplex"
 *
 * const connect = (port: number) =>
 *   Effect.gen(function* () {
 *     const socket = net.connect({ host: "127.0.0.1", port })
 *     return yield* Duplex.fromNodeDuplex(socket, { highWaterMark: 256 * 1024 })
 *   })
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const fromNodeDuplex = (
  stream: stream.Duplex,
  options: FromNodeDuplexOptions = {}
): Effect.Effect<Duplex, DuplexError, Scope.Scope> => nodeDuplex.make(stream, options)

/**
 * Writes `input` (then half-closes) while reading `readable` into `sink`, concurrently; returns what the
 * sink returns.
 *
 * **When to use**
 *
 * For a request/response over one connection: the request goes out while the response comes in, so a
 * request larger than both buffers cannot deadlock against a peer that answers as it reads.
 *
 * **Details**
 *
 * The writer and the reader are two fibers in one scope. When `input` ends, the duplex is `end`ed. The
 * exchange completes when both are done: the sink has completed (usually at the peer's EOF) and every
 * byte of `input` was accepted and the duplex half-closed. The peer's EOF does not stop the writer: a
 * half-closed peer may still be reading. If the sink completes before the writer, the inbound bytes that
 * follow are read and discarded until the writer is done, so that a peer which answers as it reads is
 * never held back by us. The first failure on either side interrupts the other.
 *
 * **Interruption**
 *
 * Interrupting the exchange interrupts both fibers; bytes already accepted by the duplex stay sent.
 *
 * **Gotchas**
 *
 * A peer that stops reading before it has taken all of `input` holds the writer back (or, for a process
 * or socket that closed, fails it `Broken`); put a bound on it with a timeout or the testkit's
 * `assertDeadlockFree`.
 *
 * **Example** (Upload and read back through an echo peer)
 *
 * ```ts
 * import { Effect, Sink, Stream } from "effect"
 * import { Duplex } from "fullduplex"
 *
 * const roundTrip = (conn: Duplex.Duplex, payload: Uint8Array) =>
 *   Duplex.exchange(conn, Stream.make(payload), Sink.collect())
 * // or, data-last:
 * const roundTrip2 = (conn: Duplex.Duplex, payload: Uint8Array) =>
 *   conn.pipe(Duplex.exchange(Stream.make(payload), Sink.collect()))
 * ```
 *
 * @category combinators
 * @since 0.1.0
 */
export const exchange: {
  <E, R, A, L, E2, R2>(
    input: Stream.Stream<Uint8Array, E, R>,
    sink: Sink.Sink<A, Uint8Array, L, E2, R2>
  ): (self: Duplex) => Effect.Effect<A, DuplexError | E | E2, R | R2>
  <E, R, A, L, E2, R2>(
    self: Duplex,
    input: Stream.Stream<Uint8Array, E, R>,
    sink: Sink.Sink<A, Uint8Array, L, E2, R2>
  ): Effect.Effect<A, DuplexError | E | E2, R | R2>
} = dual(
  3,
  <E, R, A, L, E2, R2>(
    self: Duplex,
    input: Stream.Stream<Uint8Array, E, R>,
    sink: Sink.Sink<A, Uint8Array, L, E2, R2>
  ): Effect.Effect<A, DuplexError | E | E2, R | R2> =>
    Effect.scoped(
      Effect.gen(function* () {
        // Scoped: however the exchange ends, a writer still running is interrupted with it.
        const writer = yield* Effect.forkScoped(writeThenEnd(self, input), { startImmediately: true })
        // Deadlock freedom: the reader never waits on the writer. A writer failure still ends the read at
        // once, through the race; a writer success leaves the reader alone.
        const result = yield* Effect.raceFirst(
          Lazy.Stream().run(readableToEnd(self), sink),
          Effect.andThen(Fiber.join(writer), Effect.never)
        )
        if (writer.pollUnsafe() === undefined) {
          // The sink is done before the writer: keep the inbound side moving until the writer is done.
          yield* Effect.raceFirst(
            Fiber.join(writer),
            Effect.andThen(Lazy.Stream().runDrain(readableToEnd(self)), Fiber.join(writer))
          )
        } else {
          yield* Fiber.join(writer)
        }
        return result
      })
    )
)

const writeThenEnd = <E, R>(self: Duplex, input: Stream.Stream<Uint8Array, E, R>) =>
  Effect.andThen(Lazy.Stream().run(input, self.sink), self.end)

/**
 * A duplex as a stream transformer: `input` is written (then the duplex is half-closed) while the
 * duplex's inbound bytes are emitted.
 *
 * **When to use**
 *
 * To put a byte-transforming peer (a compressor process, an echo server, a protocol endpoint) in the
 * middle of a stream pipeline.
 *
 * **Details**
 *
 * The writer runs in its own fiber while the output is pulled, so backpressure holds end to end: a slow
 * consumer of the output slows the reads, the duplex's buffers fill, and the writer is held back. The
 * output ends at the duplex's EOF (a writer still running is then interrupted); the first failure on
 * either side fails the output.
 *
 * **Example** (Through an echo peer, both ways of calling it)
 *
 * ```ts
 * import { Stream } from "effect"
 * import { Duplex } from "fullduplex"
 *
 * const viaPeer = (conn: Duplex.Duplex, input: Stream.Stream<Uint8Array>) => Duplex.pipeThrough(input, conn)
 * const viaPeer2 = (conn: Duplex.Duplex, input: Stream.Stream<Uint8Array>) =>
 *   input.pipe(Duplex.pipeThrough(conn))
 * ```
 *
 * @category combinators
 * @since 0.1.0
 */
export const pipeThrough: {
  (duplex: Duplex): <E, R>(input: Stream.Stream<Uint8Array, E, R>) => Stream.Stream<Uint8Array, DuplexError | E, R>
  <E, R>(input: Stream.Stream<Uint8Array, E, R>, duplex: Duplex): Stream.Stream<Uint8Array, DuplexError | E, R>
} = dual(
  2,
  <E, R>(input: Stream.Stream<Uint8Array, E, R>, duplex: Duplex): Stream.Stream<Uint8Array, DuplexError | E, R> =>
    Lazy.Stream().unwrap(
      Effect.map(
        // The writer lives as long as the output: it is interrupted when the output ends or is dropped.
        Effect.forkScoped(writeThenEnd(duplex, input), { startImmediately: true }),
        (writer) => readableAlongside(duplex, writer)
      )
    )
)

/**
 * Bytes copied by {@link splice}.
 *
 * **Example** (Failing a relay that moved nothing)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Duplex } from "fullduplex"
 *
 * const relayed = (a: Duplex.Duplex, b: Duplex.Duplex) =>
 *   Duplex.splice(a, b).pipe(
 *     Effect.filterOrFail(
 *       (result: Duplex.SpliceResult) => result.aToB + result.bToA > 0,
 *       () => "nothing was relayed"
 *     )
 *   )
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface SpliceResult {
  /** Bytes read from `a` and written to `b`. */
  readonly aToB: number
  /** Bytes read from `b` and written to `a`. */
  readonly bToA: number
}

/**
 * Copies both ways between two duplexes, concurrently, until both directions are done.
 *
 * **When to use**
 *
 * For a proxy or a relay: each side's bytes reach the other, and a half-close on one side is passed on
 * while the other direction keeps flowing.
 *
 * **Details**
 *
 * Two fibers: `a → b` and `b → a`. When one side's `readable` ends, the other side is `end`ed (half-close
 * propagation) and the reverse copy goes on. The result counts the bytes each way. Backpressure holds
 * per direction: a slow reader on `b` holds back reads from `a`, never the `b → a` direction.
 *
 * **Closing**
 *
 * A failure in either direction, or interruption of the splice, aborts both duplexes, so neither peer
 * waits on a half-dead relay.
 *
 * **Example** (Relay between two connections)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Duplex } from "fullduplex"
 *
 * const relay = (client: Duplex.Duplex, upstream: Duplex.Duplex) =>
 *   Duplex.splice(client, upstream).pipe(
 *     Effect.tap(({ aToB, bToA }) => Effect.log(`relayed ${aToB} bytes up, ${bToA} down`))
 *   )
 * ```
 *
 * @category combinators
 * @since 0.1.0
 */
export const splice: {
  (b: Duplex): (a: Duplex) => Effect.Effect<SpliceResult, DuplexError>
  (a: Duplex, b: Duplex): Effect.Effect<SpliceResult, DuplexError>
} = dual(2, (a: Duplex, b: Duplex): Effect.Effect<SpliceResult, DuplexError> =>
  Effect.suspend(() => {
    const aIn = inboundPipeOf(a)
    const bIn = inboundPipeOf(b)
    const aOut = outboundPortOf(a)
    const bOut = outboundPortOf(b)
    // Both sides with ports (sockets, pairs): the two pumps in one callback, no fiber per direction, which
    // aborts both sides itself when it fails or is interrupted (no frame of its own waits on it).
    if (aIn !== undefined && bIn !== undefined && aOut !== undefined && bOut !== undefined) {
      return pumpBoth(aIn, bOut, bIn, aOut, () => Effect.andThen(a.abort, b.abort))
    }
    return Effect.all([copy(a, b), copy(b, a)], { concurrency: 2 }).pipe(
      Effect.map(([aToB, bToA]) => ({ aToB, bToA })),
      Effect.onError(() => Effect.andThen(a.abort, b.abort))
    )
  })
)

/** One direction of a splice: a pump where both sides have ports (no fiber per chunk), else a fiber's copy. */
const copy = (from: Duplex, to: Duplex): Effect.Effect<number, DuplexError> => {
  const source = inboundPipeOf(from)
  const destination = outboundPortOf(to)
  return source !== undefined && destination !== undefined
    ? pump(source, destination, { endOnEof: true })
    : copyByFiber(from, to)
}

const copyByFiber = (from: Duplex, to: Duplex): Effect.Effect<number, DuplexError> =>
  Effect.suspend(() => {
    let bytes = 0
    return Lazy.Stream()
      .runForEachArray(from.readable, (chunks) => {
        for (const chunk of chunks) bytes += chunk.length
        return to.writeAll(chunks)
      })
      .pipe(
        Effect.andThen(to.end),
        Effect.map(() => bytes)
      )
  })
