/**
 * A Node `stream.Duplex` as the parts of a fullduplex `Duplex`.
 *
 * Inbound ({@link NodeReader}): the stream's bytes go into a {@link BytePipe}; when it is full the stream
 * is paused, and a read that empties the pipe resumes it. Outbound ({@link NodeWriter}): writes go to the
 * stream in call order, in pieces of at most `highWaterMark` bytes, waiting for `'drain'` while the
 * stream is at its mark. The pipe and the writer are also the duplex's ports, for pumps.
 *
 * @internal
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type * as Option from "effect/Option"
import { pipeArguments } from "effect/Pipeable"
import type * as Sink from "effect/Sink"
import type * as Stream from "effect/Stream"
import * as Lazy from "./lazyModules.js"
import * as net from "node:net"
import type * as NodeStream from "node:stream"
import type { Duplex, Stats, TypeId as TypeIdType } from "../Duplex.js"
import { DuplexError, InvalidOptions } from "../DuplexError.js"
import { BytePipe, Ports, type PortsOf } from "./bytePipe.js"
import { NodeReader } from "./nodeReader.js"
import { NodeWriter } from "./nodeWriter.js"

/** @internal */
export const DEFAULT_HIGH_WATER_MARK_BYTES = 64 * 1024

/** `Duplex.TypeId`, repeated here: `Duplex` imports this module, so it cannot be imported back at runtime. */
const TypeId: TypeIdType = "~fullduplex/Duplex"
type TypeId = TypeIdType

const ignore = () => {}

/**
 * Sends RST on a connected TCP socket; other streams, sockets still connecting (whose reset Node would
 * only schedule for after the connect), sockets whose `end` has not finished, and sockets without a TCP
 * handle are destroyed at once.
 *
 * A socket whose shutdown is in progress must not be reset: libuv refuses `uv_tcp_close_reset` while a
 * shutdown request is pending (`UV_EINVAL`), and Node then never closes the handle: the socket reads as
 * destroyed while its fd stays open for the life of the process. (A mux session that sent its GoAway and
 * FIN and then aborted leaked one fd a session that way.) Such a socket is destroyed instead; the kernel
 * still resets it if the peer's bytes remain unread.
 */
const resetOrDestroy = (stream: NodeStream.Duplex): void => {
  if (stream.destroyed) return
  if (stream instanceof net.Socket && !stream.connecting && (!stream.writableEnded || stream.writableFinished)) {
    try {
      stream.resetAndDestroy()
      return
    } catch {
      // Not a TCP handle (a Unix domain socket): there is no RST to send.
    }
  }
  stream.destroy()
}

const defaultLabel = (stream: NodeStream.Duplex): string =>
  stream instanceof net.Socket && stream.remoteAddress !== undefined
    ? `socket ${stream.remoteAddress}:${stream.remotePort}`
    : "node-duplex"

/** @internal */
export interface AdapterOptions {
  readonly highWaterMark?: number | undefined
  readonly label?: string | undefined
  /**
   * The OS code to report when the outbound stream is found closed without an error of its own (Node
   * destroys a child's stdin when the child exits: that is a broken pipe all the same).
   */
  readonly closedCode?: (() => string | undefined) | undefined
  /** Asked when the inbound pipe is full: see {@link NodeReader}'s `overflow`. */
  readonly overflow?: (() => ((bytes: number) => void) | undefined) | undefined
}

/**
 * A duplex over a Node stream: the duplex itself, its parts (for `Duplex.make`) and its ports, as one
 * object. Every member is made on first use and then kept, so an idle connection holds this object, its
 * pipe, its reader and its writer, and no closure of its own (see "What one connection holds" in
 * docs/ARCHITECTURE.md). The members are bound: `conn.write` may be handed around as a function.
 *
 * @internal
 */
export class NodeDuplex implements Duplex, PortsOf {
  readonly inbound: BytePipe
  readonly outbound: NodeWriter
  private readonly reader: NodeReader
  /** Our side is closed: pending and later operations fail `Closed`; the streams are left as they are. */
  private closed = false
  private destroyed = false
  private disposed = false

  constructor(
    readonly label: string,
    private readonly input: NodeStream.Readable,
    output: NodeStream.Writable,
    highWaterMark: number,
    clock: Clock.Clock,
    options: AdapterOptions,
    /** Closes the streams at `abort` (false) or at the end (true after a clean `end`); given the input. */
    private readonly destroy: (graceful: boolean, input: NodeStream.Readable) => void
  ) {
    // An 'error' event with no listener crashes the process; errors reach us through the side watches and
    // the write callbacks instead. This listener stays for the stream's life: late errors are harmless.
    input.on("error", ignore)
    if ((output as unknown) !== input) output.on("error", ignore)
    if ("allowHalfOpen" in input) (input as NodeStream.Duplex).allowHalfOpen = true
    this.inbound = new BytePipe(highWaterMark, undefined, label, clock)
    this.reader = new NodeReader(input, this.inbound, options.overflow)
    this.outbound = new NodeWriter(output, highWaterMark, label, clock, options.closedCode)
  }

  get [TypeId](): TypeId {
    return TypeId
  }

  get [Ports](): PortsOf {
    return this
  }

  pipe() {
    return pipeArguments(this, arguments)
  }

  get readable(): Stream.Stream<Uint8Array, DuplexError> {
    return (this.members.readable ??= Lazy.Stream().fromPull(Effect.sync(() => this.inbound.pull)))
  }

  get read(): Effect.Effect<Option.Option<Uint8Array>, DuplexError> {
    return this.inbound.read
  }

  get write(): (chunk: Uint8Array) => Effect.Effect<void, DuplexError> {
    return this.outbound.write
  }

  get writeAll(): (chunks: Iterable<Uint8Array>) => Effect.Effect<void, DuplexError> {
    return this.outbound.writeAll
  }

  get sink(): Sink.Sink<void, Uint8Array, never, DuplexError> {
    return (this.members.sink ??= Lazy.Sink().forEachArray(this.outbound.writeAll))
  }

  get end(): Effect.Effect<void, DuplexError> {
    return this.outbound.end
  }

  get abort(): Effect.Effect<void> {
    return (this.members.abort ??= Effect.sync(() => this.close(false)))
  }

  get stats(): Effect.Effect<Stats> {
    return (this.members.stats ??= Effect.sync(() => this.statsUnsafe()))
  }

  /** The members made so far (one object, made with the first). */
  private get members(): Members {
    return (this.membersMade ??= {})
  }
  private membersMade: Members | undefined = undefined

  statsUnsafe(): Stats {
    return { outbound: this.outbound.stats(), inbound: this.inbound.directionStats("reader") }
  }

  /** Our side is closed: pending and later operations fail `Closed`; the streams are left as they are. */
  closeLocal(): void {
    if (this.closed) return
    this.closed = true
    this.inbound.closeReader()
    this.outbound.closeLocal()
    // A paused source would hold its writer back for good: let it flow, into a pipe that discards.
    if (!this.input.destroyed) this.input.resume()
  }

  /** Closes our side and the streams: gracefully or by reset. */
  close(graceful: boolean): void {
    this.closeLocal()
    if (this.destroyed) return
    this.destroyed = true
    this.destroy(graceful, this.input)
  }

  /** The end of the duplex's life (its scope's close): closes the streams and removes our listeners. */
  dispose(): void {
    if (this.disposed) return
    this.disposed = true
    this.close(this.outbound.endedCleanly)
    this.reader.dispose()
    this.outbound.dispose()
  }
}

interface Members {
  readable?: Stream.Stream<Uint8Array, DuplexError>
  sink?: Sink.Sink<void, Uint8Array, never, DuplexError>
  abort?: Effect.Effect<void>
  stats?: Effect.Effect<Stats>
}

const checkHighWaterMark = (label: string, highWaterMark: number): DuplexError | undefined =>
  Number.isSafeInteger(highWaterMark) && highWaterMark >= 1
    ? undefined
    : new DuplexError({
        reason: new InvalidOptions({
          label,
          option: "highWaterMark",
          value: highWaterMark,
          expected: "a whole number of bytes ≥ 1"
        })
      })

/**
 * A duplex over a socket (or any Node `Duplex`) made without an effect, for a server that owns its
 * connections' lives: nothing is added to a scope, the caller calls {@link NodeDuplex.dispose} at the
 * end. `highWaterMark` must have been checked.
 *
 * @internal
 */
export const makeUnsafe = (
  stream: NodeStream.Duplex,
  label: string,
  highWaterMark: number,
  clock: Clock.Clock
): NodeDuplex => new NodeDuplex(label, stream, stream, highWaterMark, clock, NO_OPTIONS, destroyStream)

const NO_OPTIONS: AdapterOptions = {}

/** How a socket's duplex closes it: FIN after a clean end, RST otherwise. Shared, given the stream. */
const destroyStream = (graceful: boolean, stream: NodeStream.Readable): void => {
  if (graceful) stream.destroy()
  else resetOrDestroy(stream as NodeStream.Duplex)
}

/** @internal */
export const make = (
  stream: NodeStream.Duplex,
  options: AdapterOptions
): Effect.Effect<NodeDuplex, DuplexError, Scope.Scope> =>
  makeParts(stream, stream, { ...options, label: options.label ?? defaultLabel(stream) }, destroyStream)

/**
 * The parts of a `Duplex` over a readable (inbound) and a writable (outbound) Node stream, which may be
 * one and the same object. `destroy(graceful)` closes them at `abort` (false) or scope close (true after
 * a clean `end`).
 *
 * @internal
 */
export const makeParts = (
  input: NodeStream.Readable,
  output: NodeStream.Writable,
  options: AdapterOptions & { readonly label: string },
  destroy: (graceful: boolean, input: NodeStream.Readable) => void
): Effect.Effect<NodeDuplex, DuplexError, Scope.Scope> =>
  Effect.suspend(() => {
    const highWaterMark = options.highWaterMark ?? DEFAULT_HIGH_WATER_MARK_BYTES
    const bad = checkHighWaterMark(options.label, highWaterMark)
    if (bad !== undefined) return Effect.fail(bad)
    return Clock.clockWith((clock) => {
      const duplex = new NodeDuplex(options.label, input, output, highWaterMark, clock, options, destroy)
      return Effect.as(
        Effect.addFinalizer(() => Effect.sync(() => duplex.dispose())),
        duplex
      )
    })
  })
