/**
 * The yamux wire format (hashicorp/yamux `spec.md`): constants, header encoding, and an incremental
 * decoder that never allocates for a payload.
 *
 * @internal
 */

/** "The version field is used for future backward compatibility. At the current time, the field is always set to 0" (spec, "Framing"). */
export const PROTOCOL_VERSION = 0

/** Every frame starts with a 12-byte header: version u8, type u8, flags u16, stream id u32, length u32, big-endian (spec, "Framing"). */
export const HEADER_BYTES = 12

/** Frame types (spec, "Type Field"). */
export const TYPE_DATA = 0
export const TYPE_WINDOW_UPDATE = 1
export const TYPE_PING = 2
export const TYPE_GO_AWAY = 3

/** Flags (spec, "Flag Field"): SYN starts a stream or a ping, ACK acknowledges it, FIN half-closes, RST resets. */
export const FLAG_SYN = 0x1
export const FLAG_ACK = 0x2
export const FLAG_FIN = 0x4
export const FLAG_RST = 0x8

/** GoAway codes (spec, "GoAway"): 0 normal termination, 1 protocol error, 2 internal error. */
export const GO_AWAY_NORMAL = 0
export const GO_AWAY_PROTOCOL_ERROR = 1
export const GO_AWAY_INTERNAL_ERROR = 2

/**
 * "Each stream has an initial window size of 256KB" (spec, "Flow Control"). Defined in `Mux.ts`, which
 * exports it, so that the root module names it without loading this folder (`Mux.make` loads it).
 */
export { INITIAL_STREAM_WINDOW_BYTES } from "../../Mux.js"

/** The session's own stream id, used by Ping and GoAway (spec, "StreamID Field"). */
export const SESSION_STREAM_ID = 0

/** One decoded header. */
export interface Header {
  readonly version: number
  readonly type: number
  readonly flags: number
  readonly streamId: number
  readonly length: number
}

/**
 * The 12 bytes of a header, as a `Buffer` from Node's pool: a typed array this small would live on V8's
 * heap, and a socket write would copy it out first (`.buffer` moves it off the heap), once per frame.
 */
export const encodeHeader = (type: number, flags: number, streamId: number, length: number): Uint8Array => {
  const bytes = Buffer.allocUnsafe(HEADER_BYTES)
  writeHeader(bytes, 0, type, flags, streamId, length)
  return bytes
}

/** Writes a header into `target` at `offset`. */
export const writeHeader = (
  target: Uint8Array,
  offset: number,
  type: number,
  flags: number,
  streamId: number,
  length: number
): void => {
  target[offset] = PROTOCOL_VERSION
  target[offset + 1] = type
  target[offset + 2] = (flags >>> 8) & 0xff
  target[offset + 3] = flags & 0xff
  target[offset + 4] = streamId >>> 24
  target[offset + 5] = (streamId >>> 16) & 0xff
  target[offset + 6] = (streamId >>> 8) & 0xff
  target[offset + 7] = streamId & 0xff
  target[offset + 8] = length >>> 24
  target[offset + 9] = (length >>> 16) & 0xff
  target[offset + 10] = (length >>> 8) & 0xff
  target[offset + 11] = length & 0xff
}

const readU32 = (b: Uint8Array, p: number): number =>
  ((b[p]! << 24) | (b[p + 1]! << 16) | (b[p + 2]! << 8) | b[p + 3]!) >>> 0

/** What the decoder hands out: a header, or a piece of the current Data frame's payload. */
export type Decoded =
  | { readonly _tag: "Header"; readonly header: Header }
  | { readonly _tag: "Payload"; readonly bytes: Uint8Array; readonly last: boolean }

/**
 * Incremental decoder: `push` a chunk, then call `next` until it returns `undefined`.
 *
 * A Data frame's payload is handed out in pieces as they arrive (views of the chunks, no copy), after its
 * header: the session checks the header (credit, limits) before a byte of the payload is taken. Only the
 * 12 bytes of a header split across chunks are copied. Call `skip` after a Data header whose payload is
 * to be read (its `length`); any other header has no payload.
 */
export class FrameDecoder {
  private chunk: Uint8Array = new Uint8Array(0)
  private pos = 0
  private readonly header = new Uint8Array(HEADER_BYTES)
  private headerFill = 0
  /** Payload bytes of the current Data frame still to come. */
  private payloadLeft = 0

  push(chunk: Uint8Array): void {
    this.chunk = chunk
    this.pos = 0
  }

  /** Bytes of the current chunk not yet decoded. */
  get pending(): number {
    return this.chunk.length - this.pos
  }

  /** Expects `length` payload bytes next (after a Data header). */
  expectPayload(length: number): void {
    this.payloadLeft = length
  }

  next(): Decoded | undefined {
    const chunk = this.chunk
    if (this.payloadLeft > 0) {
      const take = Math.min(this.payloadLeft, chunk.length - this.pos)
      if (take === 0) return undefined
      const bytes = chunk.subarray(this.pos, this.pos + take)
      this.pos += take
      this.payloadLeft -= take
      return { _tag: "Payload", bytes, last: this.payloadLeft === 0 }
    }
    let source: Uint8Array
    let p: number
    if (this.headerFill === 0 && chunk.length - this.pos >= HEADER_BYTES) {
      source = chunk
      p = this.pos
      this.pos += HEADER_BYTES
    } else {
      const take = Math.min(HEADER_BYTES - this.headerFill, chunk.length - this.pos)
      this.header.set(chunk.subarray(this.pos, this.pos + take), this.headerFill)
      this.headerFill += take
      this.pos += take
      if (this.headerFill < HEADER_BYTES) return undefined
      this.headerFill = 0
      source = this.header
      p = 0
    }
    return {
      _tag: "Header",
      header: {
        version: source[p]!,
        type: source[p + 1]!,
        flags: (source[p + 2]! << 8) | source[p + 3]!,
        streamId: readU32(source, p + 4),
        length: readU32(source, p + 8)
      }
    }
  }

  /** At the input's end: whether a frame was cut (a partial header, or payload still expected). */
  get midFrame(): boolean {
    return this.headerFill > 0 || this.payloadLeft > 0
  }
}
