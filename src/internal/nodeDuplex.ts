/**
 * A Node `stream.Duplex` as the parts of a fullduplex `Duplex`.
 *
 * Inbound: `'data'` events go into a {@link BytePipe}; when it is full the stream is paused, and a read
 * that empties the pipe resumes it. Outbound: writes go to the stream in pieces of at most
 * `highWaterMark` bytes, serialised by a one-permit semaphore, waiting for `'drain'` when asked.
 *
 * @internal
 */
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as Scope from "effect/Scope"
import * as Semaphore from "effect/Semaphore"
import * as Stream from "effect/Stream"
import * as net from "node:net"
import { finished } from "node:stream"
import type * as NodeStream from "node:stream"
import type { MakeOptions } from "../Duplex.js"
import { Broken, Closed, DuplexError, InvalidOptions } from "../DuplexError.js"
import { type BrokenCause, BytePipe } from "./bytePipe.js"
import { codeOf } from "./errors.js"

const DEFAULT_HIGH_WATER_MARK_BYTES = 64 * 1024

const ignore = () => {}

const causeOf = (err: unknown): BrokenCause => ({
  code: codeOf(err),
  cause: err
})

/**
 * Sends RST on a connected TCP socket; other streams, sockets still connecting (whose reset Node would
 * only schedule for after the connect) and sockets without a TCP handle are destroyed at once.
 */
const resetOrDestroy = (stream: NodeStream.Duplex): void => {
  if (stream.destroyed) return
  if (stream instanceof net.Socket && !stream.connecting) {
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
}

/** @internal */
export const make = (
  stream: NodeStream.Duplex,
  options: AdapterOptions
): Effect.Effect<MakeOptions & { readonly inbound: BytePipe }, DuplexError, Scope.Scope> =>
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
  MakeOptions & { readonly closeLocal: () => void; readonly inbound: BytePipe },
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
    const now = () => clock.monotonicTimeNanosUnsafe()

    // An 'error' event with no listener crashes the process; errors reach us through `finished` and the
    // write callbacks instead. This listener stays for the stream's life: late errors are harmless.
    input.on("error", ignore)
    if ((output as unknown) !== input) output.on("error", ignore)
    if ("allowHalfOpen" in input) (input as NodeStream.Duplex).allowHalfOpen = true

    // ---- inbound ------------------------------------------------------------------------------------
    const inbound = new BytePipe(highWaterMark, `${label} (peer)`, label, clock)
    const onData = (chunk: Uint8Array | string) => {
      if (!inbound.offerUnsafe(typeof chunk === "string" ? Buffer.from(chunk) : chunk)) input.pause()
    }
    inbound.onRoom = () => {
      if (!input.destroyed) input.resume()
    }
    const stopWatchingRead = finished(input, { writable: false }, (err) => {
      if (err) inbound.abortWriter(false, causeOf(err))
      else inbound.end()
    })
    input.on("data", onData)
    input.resume() // a stream handed over paused (say, `pauseOnConnect`) would never flow otherwise

    // ---- outbound -----------------------------------------------------------------------------------
    const lock = Semaphore.makeUnsafe(1)
    let closed = false // our abort or scope close
    /** Operations waiting on the stream's events; `close` fails them itself, whatever the stream emits. */
    const waiters = new Set<() => void>()
    let endResult: Deferred.Deferred<void, DuplexError> | undefined
    let bytesWritten = 0
    let peakBuffered = 0
    let blockedSince: bigint | undefined
    let blockedNanos = 0n

    const closedError = (operation: "write" | "end", after: "end" | "abort") =>
      new DuplexError({ reason: new Closed({ label, direction: "outbound", operation, after, bytes: bytesWritten }) })
    const brokenError = (operation: "write" | "end", err: unknown) => {
      const c = causeOf(err)
      return new DuplexError({
        reason: new Broken({
          label,
          direction: "outbound",
          operation,
          bytes: bytesWritten,
          code: c.code ?? options.closedCode?.(),
          cause: c.cause
        })
      })
    }
    /** Why a write or end cannot go ahead now, if it cannot. */
    const writeError = (operation: "write" | "end"): DuplexError | undefined => {
      if (closed) return closedError(operation, "abort")
      if (endResult !== undefined && operation === "write") return closedError(operation, "end")
      if (output.destroyed || output.writableEnded || output.errored != null) {
        return brokenError(operation, output.errored ?? "stream closed")
      }
      return undefined
    }
    /** The error of an operation cut short by `'close'` or `'error'`. */
    const cutShort = (operation: "write" | "end", err: unknown): DuplexError =>
      closed ? closedError(operation, "abort") : brokenError(operation, err)

    const waitDrain: Effect.Effect<void, DuplexError> = Effect.callback<void, DuplexError>((resume) => {
      if (closed) return resume(Exit.fail(closedError("write", "abort")))
      if (!output.writableNeedDrain) return resume(Exit.void)
      blockedSince = now()
      const off = () => {
        output.off("drain", onDrain).off("close", onClose).off("error", onError)
        waiters.delete(onAbort)
        if (blockedSince !== undefined) blockedNanos += now() - blockedSince
        blockedSince = undefined
      }
      const onDrain = () => {
        off()
        resume(Exit.void)
      }
      const onClose = () => {
        off()
        resume(Exit.fail(cutShort("write", output.errored ?? "closed before drain")))
      }
      const onError = (err: Error) => {
        off()
        resume(Exit.fail(cutShort("write", err)))
      }
      const onAbort = () => {
        off()
        resume(Exit.fail(closedError("write", "abort")))
      }
      output.on("drain", onDrain).on("close", onClose).on("error", onError)
      waiters.add(onAbort)
      return Effect.sync(off)
    })

    const writePiece = (piece: Uint8Array): Effect.Effect<void, DuplexError> => {
      const error = writeError("write")
      if (error !== undefined) return Exit.fail(error)
      const ok = output.write(piece)
      bytesWritten += piece.length
      if (output.writableLength > peakBuffered) peakBuffered = output.writableLength
      return ok ? Exit.void : waitDrain
    }

    const writeFrom = (chunk: Uint8Array, offset: number): Effect.Effect<void, DuplexError> => {
      const end = offset + highWaterMark
      if (end >= chunk.length) return writePiece(offset === 0 ? chunk : chunk.subarray(offset))
      return Effect.flatMap(writePiece(chunk.subarray(offset, end)), () => writeFrom(chunk, end))
    }

    /** Writes holding or waiting for the lock. While there are none, a write may skip the lock (below). */
    let queuedWrites = 0

    /** Runs `effect` holding the write lock, counted in `queuedWrites` from the call until it is done. */
    const locked = (effect: Effect.Effect<void, DuplexError>): Effect.Effect<void, DuplexError> =>
      Effect.suspend(() => {
        queuedWrites++
        return lock
          .withPermits(1)(effect)
          .pipe(
            Effect.ensuring(
              Effect.sync(() => {
                queuedWrites--
              })
            )
          )
      })

    const lockedWrite = (chunk: Uint8Array): Effect.Effect<void, DuplexError> =>
      locked(
        Effect.suspend(() => {
          const error = writeError("write")
          if (error !== undefined) return Exit.fail(error)
          return chunk.length === 0 ? Exit.void : writeFrom(chunk, 0)
        })
      )

    const write = (chunk: Uint8Array): Effect.Effect<void, DuplexError> =>
      Effect.suspend(() => {
        // Fast path, one synchronous step: nobody else is writing, the stream has room and the chunk is one
        // piece. Order is kept: with no write queued or in progress, this one is next in line anyway.
        if (queuedWrites > 0 || chunk.length > highWaterMark || output.writableNeedDrain) return lockedWrite(chunk)
        const error = writeError("write")
        if (error !== undefined) return Exit.fail(error)
        if (chunk.length === 0) return Exit.void
        const ok = output.write(chunk)
        bytesWritten += chunk.length
        if (output.writableLength > peakBuffered) peakBuffered = output.writableLength
        // The chunk is accepted; wait for room under the lock, so that later writes queue behind this wait.
        return ok ? Exit.void : locked(waitDrain)
      })

    /**
     * Several pieces in one go: while nobody else writes and the stream has room, they are corked and
     * written together (one `writev`), so a frame's header and payload leave in one system call. The
     * stream may then hold up to `4 × highWaterMark` beyond its mark, once; otherwise piece by piece.
     */
    const writeAll = (chunks: Iterable<Uint8Array>): Effect.Effect<void, DuplexError> =>
      Effect.suspend(() => {
        const list = Array.isArray(chunks) ? (chunks as ReadonlyArray<Uint8Array>) : [...chunks]
        if (list.length === 1) return write(list[0]!)
        let total = 0
        for (const chunk of list) total += chunk.length
        if (queuedWrites > 0 || output.writableNeedDrain || total > 4 * highWaterMark) {
          return Effect.forEach(list, write, { discard: true })
        }
        const error = writeError("write")
        if (error !== undefined) return Exit.fail(error)
        let ok = true
        output.cork()
        for (const chunk of list) if (chunk.length > 0) ok = output.write(chunk)
        output.uncork()
        bytesWritten += total
        if (output.writableLength > peakBuffered) peakBuffered = output.writableLength
        return ok ? Exit.void : locked(waitDrain)
      })

    const end: Effect.Effect<void, DuplexError> = Effect.suspend(() => {
      if (closed) return Exit.fail(closedError("end", "abort"))
      if (endResult !== undefined) return Deferred.await(endResult)
      return lock.withPermits(1)(
        Effect.suspend(() => {
          if (endResult !== undefined) return Deferred.await(endResult)
          const error = writeError("end")
          if (error !== undefined) return Exit.fail(error)
          const result = Deferred.makeUnsafe<void, DuplexError>()
          endResult = result
          const onAbort = () => {
            cleanup()
            Deferred.doneUnsafe(result, Exit.fail(closedError("end", "abort")))
          }
          const cleanup = finished(output, { readable: false }, (err) => {
            cleanup()
            waiters.delete(onAbort)
            Deferred.doneUnsafe(result, err ? Exit.fail(cutShort("end", err)) : Exit.void)
          })
          waiters.add(onAbort)
          output.end()
          return Deferred.await(result)
        })
      )
    })

    /** Our side is closed: pending and later operations fail `Closed`; the streams are left as they are. */
    const closeLocal = () => {
      if (closed) return
      closed = true
      inbound.closeReader()
      for (const wake of [...waiters]) wake()
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
        const endedCleanly = endResult !== undefined && output.writableFinished
        close(endedCleanly)
        input.off("data", onData)
        stopWatchingRead()
      })
    )

    const stats = Effect.sync(() => ({
      outbound: {
        bytes: bytesWritten,
        buffered: output.writableLength,
        peakBuffered,
        blocked: blockedSince !== undefined,
        blockedMillis: Number(blockedNanos + (blockedSince === undefined ? 0n : now() - blockedSince)) / 1e6
      },
      inbound: inbound.directionStats("reader")
    }))

    return {
      label,
      readable: Stream.fromPull(Effect.succeed(inbound.pull)),
      read: inbound.read,
      write,
      writeAll,
      end,
      abort,
      stats,
      closeLocal,
      inbound
    }
  })
