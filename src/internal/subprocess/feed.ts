/**
 * Feeding a child's stdin: the input is written in batches, then stdin is ended; a child that stops
 * reading (EPIPE) stops the writing, and the rest of the input may still be counted.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Stream from "effect/Stream"
import type * as Duplex from "../../Duplex.js"
import { type DuplexError, isDuplexError } from "../../DuplexError.js"

/** What feeding a child's stdin came to. @internal */
export interface Fed {
  /** Whether the child stopped reading (EPIPE) before the input ended. */
  readonly stopped: boolean
  /** Input bytes not written because of that. */
  readonly unconsumed: number
}

/** The feeding stops pulling its input (the child stopped reading and the rest is not counted). */
const stopFeeding: unique symbol = Symbol("fullduplex/Subprocess/stopFeeding")

const isBrokenPipe = (error: unknown): error is DuplexError => isDuplexError(error) && error.reason._tag === "Broken"

/**
 * Writes `input` to the child's stdin, then ends it. When the child stops reading (EPIPE) the writing
 * stops; with `countRest` the rest of the input is still pulled and counted (one pass: a stream can be
 * re-run from its start, so a second run could not count it). If the input fails, or this is
 * interrupted, stdin is closed all the same, so the child is never left waiting for an EOF.
 *
 * @internal
 */
export const feed = <E, R>(
  proc: Duplex.Duplex,
  input: Stream.Stream<Uint8Array, E, R>,
  countRest: boolean
): Effect.Effect<Fed, DuplexError | E, R> =>
  Effect.suspend(() => {
    let unconsumed = 0
    let stopped = false
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
