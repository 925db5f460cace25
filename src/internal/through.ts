/**
 * A duplex's inbound bytes read alongside a writer fiber of the reader's own (`pipeThrough`).
 *
 * @internal
 */
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import type * as Pull from "effect/Pull"
import type * as Stream from "effect/Stream"
import * as Lazy from "./lazyModules.js"
import type { Duplex } from "../Duplex.js"
import type { DuplexError } from "../DuplexError.js"
import { type Batch, inboundPipeOf } from "./bytePipe.js"

/**
 * Every inbound byte of `duplex` to its EOF, failing at once if `writer` fails. Over an inbound pipe the
 * output takes every buffered chunk per pull and the writer's failure is a plain callback; over any other
 * duplex it is `Stream.merge` (a hand-over per chunk). The consumer reads to the end: one that stops
 * early loses the rest of a batch.
 *
 * @internal
 */
export const readableAlongside = <E>(
  duplex: Duplex,
  writer: Fiber.Fiber<unknown, E>
): Stream.Stream<Uint8Array, DuplexError | E> => {
  const pipe = inboundPipeOf(duplex)
  if (pipe === undefined) {
    const S = Lazy.Stream()
    return S.merge(duplex.readable, S.drain(S.fromEffect(Fiber.join(writer))), { haltStrategy: "left" })
  }
  writer.addObserver((exit) => {
    if (Exit.isFailure(exit) && !Cause.hasInterruptsOnly(exit.cause)) pipe.failReads(exit.cause)
  })
  return Lazy.Stream().fromPull(Effect.succeed(pipe.pullAll as Pull.Pull<Batch, DuplexError | E>))
}

/** Every inbound byte of `duplex`, in batches where it has an inbound pipe, for a consumer that reads to the end. @internal */
export const readableToEnd = (duplex: Duplex): Stream.Stream<Uint8Array, DuplexError> => {
  const pipe = inboundPipeOf(duplex)
  return pipe === undefined ? duplex.readable : Lazy.Stream().fromPull(Effect.succeed(pipe.pullAll))
}
