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
import * as Stream from "effect/Stream"
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
    return Stream.merge(duplex.readable, Stream.drain(Stream.fromEffect(Fiber.join(writer))), {
      haltStrategy: "left"
    })
  }
  writer.addObserver((exit) => {
    if (Exit.isFailure(exit) && !Cause.hasInterruptsOnly(exit.cause)) pipe.failReads(exit.cause)
  })
  return Stream.fromPull(Effect.succeed(pipe.pullAll as Pull.Pull<Batch, DuplexError | E>))
}

/** Every inbound byte of `duplex`, in batches where it has an inbound pipe, for a consumer that reads to the end. @internal */
export const readableToEnd = (duplex: Duplex): Stream.Stream<Uint8Array, DuplexError> => {
  const pipe = inboundPipeOf(duplex)
  return pipe === undefined ? duplex.readable : Stream.fromPull(Effect.succeed(pipe.pullAll))
}
