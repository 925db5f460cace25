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
 * Memory: besides the chunk being decoded, it holds the pieces of at most one payload, as they arrive; the
 * payload is allocated once all of it has arrived, after its length was checked against the limit, so a
 * header alone (announcing up to `maxFrameBytes`) costs nothing. A payload that lies whole inside one chunk
 * is returned as a view of that chunk when it is most of it, and copied out of it otherwise.
 */
export class FrameReader {
  private chunk: Uint8Array = EMPTY
  private pos = 0
  private readonly header = new Uint8Array(HEADER_BYTES)
  private headerFill = 0
  /** The announced length of the payload being assembled across chunks, or -1 between frames. */
  private length = -1
  /** The pieces of that payload received so far: memory follows the bytes that arrived, not the header. */
  private pieces: Array<Uint8Array> = []
  private received = 0
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
    if (this.length < 0) {
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
        if (this.headerFill < HEADER_BYTES) return this.usedUp()
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
        const payload = ownPayload(chunk, this.pos, length)
        this.pos += length
        return { kind, payload }
      }
      this.kind = kind
      this.length = length
    }
    const take = Math.min(this.length - this.received, chunk.length - this.pos)
    if (take > 0) this.pieces.push(chunk.subarray(this.pos, this.pos + take))
    this.received += take
    this.pos += take
    if (this.received < this.length) return this.usedUp()
    const payload = new Uint8Array(this.length)
    let offset = 0
    for (const piece of this.pieces) {
      payload.set(piece, offset)
      offset += piece.length
    }
    this.length = -1
    this.pieces = []
    this.received = 0
    return { kind: this.kind, payload }
  }

  /** The chunk is used up: let it go (a partial payload keeps only its own pieces of it). */
  private usedUp(): undefined {
    this.chunk = EMPTY
    this.pos = 0
    return undefined
  }

  /** At the input's end: `undefined` between frames, `FrameTruncated` in the middle of one. */
  atEnd(): DuplexError | undefined {
    if (this.length >= 0) return truncated(this.label, "payload", this.length, this.received)
    if (this.headerFill > 0) return truncated(this.label, "header", HEADER_BYTES, this.headerFill)
    return undefined
  }
}

/**
 * A payload found whole inside one chunk: a view of the chunk when it is most of it (no copy), a copy when
 * it is a small part, so that a small message kept by the application does not keep a large chunk alive.
 */
const ownPayload = (chunk: Uint8Array, offset: number, length: number): Uint8Array =>
  length * 2 >= chunk.length
    ? chunk.subarray(offset, offset + length)
    : new Uint8Array(chunk.subarray(offset, offset + length))

const truncated = (label: string, part: "header" | "payload", expectedBytes: number, receivedBytes: number) =>
  new DuplexError({ reason: new FrameTruncated({ label, part, expectedBytes, receivedBytes }) })
