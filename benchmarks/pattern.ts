/**
 * The payload of the byte-moving benchmarks that check what comes back (`tcp.ts`, `subprocess.ts`): one
 * chunk with a repeating byte pattern, sent over and over, and a checker for the bytes received.
 */
import { Data, Effect, Sink } from "effect"
import { byteCountError, verifyBytes } from "./harness.js"

/**
 * Byte `i` of the payload is `i & 0xff`. One chunk of a multiple of 256 bytes, sent over and over, keeps
 * the pattern going, so a received piece of any size can be checked by its first and last byte.
 */
export const patternChunk = (size: number): Uint8Array => {
  if (size % 256 !== 0) throw new Error(`chunk size ${size} is not a multiple of 256`)
  const chunk = new Uint8Array(size)
  for (let i = 0; i < size; i++) chunk[i] = i & 0xff
  return chunk
}

/** `payloadBytes / chunk.length` references to the same chunk: nothing of the size of the payload is allocated. */
export const repeat = (chunk: Uint8Array, payloadBytes: number): ReadonlyArray<Uint8Array> => {
  if (payloadBytes % chunk.length !== 0) throw new Error(`payload ${payloadBytes} is not a multiple of ${chunk.length}`)
  return Array.from({ length: payloadBytes / chunk.length }, () => chunk)
}

/** A byte that came back is not the byte that was sent. */
export class PatternMismatch extends Data.TaggedError("PatternMismatch")<{
  readonly what: string
  readonly offset: number
}> {
  override get message(): string {
    return `${this.what}: the bytes received at offset ${this.offset} are not the bytes sent`
  }
}

/** Counts the echoed bytes and checks each piece's first and last byte against the pattern. */
export class EchoCheck {
  bytes = 0
  chunks = 0
  /** Offset of the first piece that broke the pattern. */
  mismatchAt: number | undefined = undefined

  accept(chunk: Uint8Array): void {
    const first = this.bytes
    const last = first + chunk.length - 1
    if (
      this.mismatchAt === undefined &&
      chunk.length > 0 &&
      (chunk[0] !== (first & 0xff) || chunk[chunk.length - 1] !== (last & 0xff))
    ) {
      this.mismatchAt = first
    }
    this.bytes += chunk.length
    this.chunks++
  }

  /** The check as an error for a Promise-based client, or `undefined` when all is well. */
  error(what: string, expectedBytes: number): Error | undefined {
    if (this.mismatchAt !== undefined) return new Error(new PatternMismatch({ what, offset: this.mismatchAt }).message)
    return byteCountError(what, expectedBytes, this.bytes)
  }

  verify(what: string, expectedBytes: number) {
    return this.mismatchAt !== undefined
      ? Effect.fail(new PatternMismatch({ what, offset: this.mismatchAt }))
      : verifyBytes(what, expectedBytes, this.bytes)
  }
}

/** A sink that runs every received chunk through a fresh {@link EchoCheck} (one per run of the sink). */
export const echoCheckSink: Sink.Sink<EchoCheck, Uint8Array> = Sink.reduceArray(
  () => new EchoCheck(),
  (check, chunks) => {
    for (const chunk of chunks) check.accept(chunk)
    return check
  }
)
