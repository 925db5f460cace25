/**
 * What the fullduplex endpoints share: the payload as a user hands it to the library (an array of
 * references to the one pattern chunk, for `Stream.fromIterable`), the checking sink, and small reads.
 *
 * Only fullduplex endpoints import this module (it loads `effect` and `fullduplex`, from `dist/`).
 */
import { Effect, Option, Sink } from "effect"
import type { Duplex } from "fullduplex"
import { PatternCheck, WRITE_BYTES } from "./common.js"

export { fullduplexUrl, portOf } from "./fdServer.js"

/** `bytes / 64 KiB` references to `chunk`: nothing the size of the payload is allocated. */
export const chunksOf = (chunk: Uint8Array, bytes: number): ReadonlyArray<Uint8Array> =>
  Array.from({ length: bytes / WRITE_BYTES }, () => chunk)

/** Counts what it is given and checks it against the pattern (one {@link PatternCheck} per run). */
export const checkSink: Sink.Sink<PatternCheck, Uint8Array> = Sink.reduce(
  () => new PatternCheck(),
  (check, chunk: Uint8Array) => check.accept(chunk)
)

/** Reads a duplex to its end, as text: the byte-count replies of the discard and mux servers. */
export const readText = (duplex: Duplex.Duplex): Effect.Effect<string, unknown> =>
  Effect.gen(function* () {
    let text = ""
    while (true) {
      const chunk = yield* duplex.read
      if (Option.isNone(chunk)) return text
      text += Buffer.from(chunk.value.buffer, chunk.value.byteOffset, chunk.value.length).toString("utf8")
    }
  })
