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
import * as Stream from "effect/Stream"
import * as net from "node:net"
import type * as NodeStream from "node:stream"
import type { MakeOptions } from "../Duplex.js"
import { DuplexError, InvalidOptions } from "../DuplexError.js"
import { BytePipe } from "./bytePipe.js"
import { NodeReader } from "./nodeReader.js"
import { NodeWriter } from "./nodeWriter.js"

const DEFAULT_HIGH_WATER_MARK_BYTES = 64 * 1024

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

/** @internal */
export const make = (
  stream: NodeStream.Duplex,
  options: AdapterOptions
): Effect.Effect<
  MakeOptions & { readonly inbound: BytePipe; readonly outbound: NodeWriter },
  DuplexError,
  Scope.Scope
> =>
  makeParts(stream, stream, { ...options, label: options.label ?? defaultLabel(stream) }, (graceful) => {
    if (graceful) stream.destroy()
    else resetOrDestroy(stream)
  })

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
  destroy: (graceful: boolean) => void
): Effect.Effect<
  MakeOptions & { readonly closeLocal: () => void; readonly inbound: BytePipe; readonly outbound: NodeWriter },
  DuplexError,
  Scope.Scope
> =>
  Effect.gen(function* () {
    const label = options.label
    const highWaterMark = options.highWaterMark ?? DEFAULT_HIGH_WATER_MARK_BYTES
    if (!Number.isSafeInteger(highWaterMark) || highWaterMark < 1) {
      return yield* new DuplexError({
        reason: new InvalidOptions({
          label,
          option: "highWaterMark",
          value: highWaterMark,
          expected: "a whole number of bytes ≥ 1"
        })
      })
    }
    const clock = yield* Clock.Clock

    // An 'error' event with no listener crashes the process; errors reach us through `finished` and the
    // write callbacks instead. This listener stays for the stream's life: late errors are harmless.
    input.on("error", ignore)
    if ((output as unknown) !== input) output.on("error", ignore)
    if ("allowHalfOpen" in input) (input as NodeStream.Duplex).allowHalfOpen = true

    // ---- inbound ------------------------------------------------------------------------------------
    const inbound = new BytePipe(highWaterMark, `${label} (peer)`, label, clock)
    const reader = new NodeReader(input, inbound, options.overflow)

    // ---- outbound -----------------------------------------------------------------------------------
    const writer = new NodeWriter(output, highWaterMark, label, clock, options.closedCode)

    /** Our side is closed: pending and later operations fail `Closed`; the streams are left as they are. */
    let closed = false
    const closeLocal = () => {
      if (closed) return
      closed = true
      inbound.closeReader()
      writer.closeLocal()
      // A paused source would hold its writer back for good: let it flow, into a pipe that discards.
      if (!input.destroyed) input.resume()
    }
    let destroyed = false
    const close = (graceful: boolean) => {
      closeLocal()
      if (destroyed) return
      destroyed = true
      destroy(graceful)
    }

    const abort: Effect.Effect<void> = Effect.sync(() => close(false))

    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        close(writer.endedCleanly)
        reader.dispose()
        writer.dispose()
      })
    )

    const stats = Effect.sync(() => ({ outbound: writer.stats(), inbound: inbound.directionStats("reader") }))

    return {
      label,
      readable: Stream.fromPull(Effect.sync(() => inbound.pull)),
      read: inbound.read,
      write: writer.write,
      writeAll: writer.writeAll,
      end: writer.end,
      abort,
      stats,
      closeLocal,
      inbound,
      outbound: writer
    }
  })
