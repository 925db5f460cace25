/**
 * The length-prefixed frame codec behind `Framing`: a 5-byte header (1 byte kind, 4 bytes big-endian
 * payload length), then the payload.
 *
 * @internal
 */
import { DuplexError, FrameTooLarge, FrameTruncated, ProtocolError } from "../DuplexError.js"

/** Header bytes before every payload: kind (1) and length (4, big-endian). */
export const HEADER_BYTES = 5

/** The kind byte of a data frame. */
export const KIND_DATA = 0
/** The kind byte of a control frame. */
export const KIND_CONTROL = 1

/** A decoded frame: its kind byte and its payload. */
export interface RawFrame {
  readonly kind: typeof KIND_DATA | typeof KIND_CONTROL
  readonly payload: Uint8Array
}

const EMPTY = new Uint8Array(0)

/** Writes a header for `length` bytes of `kind` into `target` at `offset`. */
export const writeHeader = (target: Uint8Array, offset: number, kind: number, length: number): void => {
  target[offset] = kind
  target[offset + 1] = length >>> 24
  target[offset + 2] = (length >>> 16) & 0xff
  target[offset + 3] = (length >>> 8) & 0xff
  target[offset + 4] = length & 0xff
}

/**
 * Incremental decoder: `push` a chunk, then call `next` until it returns `undefined` (needs more bytes).
 *
 * Memory: besides the chunk being decoded, it holds at most one payload, allocated only after its length
 * was checked against the limit. A payload that lies whole inside one chunk is returned as a view of that
 * chunk, without a copy.
 */
export class FrameReader {
  private chunk: Uint8Array = EMPTY
  private pos = 0
  private readonly header = new Uint8Array(HEADER_BYTES)
  private headerFill = 0
  /** The payload being assembled across chunks, once its header has been read. */
  private payload: Uint8Array | undefined = undefined
  private payloadFill = 0
  private kind: typeof KIND_DATA | typeof KIND_CONTROL = KIND_DATA

  constructor(
    readonly label: string,
    readonly maxFrameBytes: number
  ) {}

  /** Takes the next chunk. Only call it once `next` has returned `undefined`: the last chunk is used up. */
  push(chunk: Uint8Array): void {
    this.chunk = chunk
    this.pos = 0
  }

  /** The next whole frame, `undefined` when more bytes are needed, or the error that stops decoding. */
  next(): RawFrame | DuplexError | undefined {
    const chunk = this.chunk
    if (this.payload === undefined) {
      let length: number
      let kind: number
      if (this.headerFill === 0 && chunk.length - this.pos >= HEADER_BYTES) {
        const p = this.pos
        kind = chunk[p]!
        length = ((chunk[p + 1]! << 24) | (chunk[p + 2]! << 16) | (chunk[p + 3]! << 8) | chunk[p + 4]!) >>> 0
        this.pos = p + HEADER_BYTES
      } else {
        const take = Math.min(HEADER_BYTES - this.headerFill, chunk.length - this.pos)
        this.header.set(chunk.subarray(this.pos, this.pos + take), this.headerFill)
        this.headerFill += take
        this.pos += take
        if (this.headerFill < HEADER_BYTES) return undefined
        this.headerFill = 0
        const h = this.header
        kind = h[0]!
        length = ((h[1]! << 24) | (h[2]! << 16) | (h[3]! << 8) | h[4]!) >>> 0
      }
      if (kind !== KIND_DATA && kind !== KIND_CONTROL) {
        return new DuplexError({
          reason: new ProtocolError({
            label: this.label,
            problem: `unknown frame kind ${kind} (0 is data, 1 is control)`
          })
        })
      }
      // The length is checked before anything is allocated for the payload.
      if (length > this.maxFrameBytes) {
        return new DuplexError({
          reason: new FrameTooLarge({ label: this.label, direction: "inbound", length, limit: this.maxFrameBytes })
        })
      }
      if (chunk.length - this.pos >= length) {
        const payload = chunk.subarray(this.pos, this.pos + length)
        this.pos += length
        return { kind, payload }
      }
      this.kind = kind
      this.payload = new Uint8Array(length)
      this.payloadFill = 0
    }
    const payload = this.payload
    const take = Math.min(payload.length - this.payloadFill, chunk.length - this.pos)
    payload.set(chunk.subarray(this.pos, this.pos + take), this.payloadFill)
    this.payloadFill += take
    this.pos += take
    if (this.payloadFill < payload.length) return undefined
    this.payload = undefined
    return { kind: this.kind, payload }
  }

  /** At the input's end: `undefined` between frames, `FrameTruncated` in the middle of one. */
  atEnd(): DuplexError | undefined {
    if (this.payload !== undefined) {
      return truncated(this.label, "payload", this.payload.length, this.payloadFill)
    }
    if (this.headerFill > 0) return truncated(this.label, "header", HEADER_BYTES, this.headerFill)
    return undefined
  }
}

const truncated = (label: string, part: "header" | "payload", expectedBytes: number, receivedBytes: number) =>
  new DuplexError({ reason: new FrameTruncated({ label, part, expectedBytes, receivedBytes }) })
