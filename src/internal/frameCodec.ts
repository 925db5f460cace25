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
 * A payload assembled across chunks is copied into one buffer as its bytes arrive. Up to this size that
 * buffer is allocated for the whole payload at its first byte; a larger payload's buffer starts at
 * {@link FIRST_BUFFER_BYTES} and doubles while it is at most this size, then is allocated at its full
 * length. So a header alone costs nothing, a payload's first bytes cost a small multiple of what arrived,
 * and a whole payload at most its length plus this much, however its bytes are cut (one byte per read
 * included). The size of a socket read (libuv's 64 KiB).
 */
export const GROW_TO_BYTES = 64 * 1024

/** The first buffer of a payload assembled across chunks (unless the payload is smaller). */
const FIRST_BUFFER_BYTES = 256

/**
 * Incremental decoder: `push` a chunk, then call `next` until it returns `undefined` (needs more bytes).
 *
 * Memory: besides the chunk being decoded, it holds one buffer: the part of one payload that has arrived,
 * copied out of the chunks it came in (so a payload in 1-byte pieces costs its bytes, not an object per
 * piece, and keeps no chunk alive). That buffer grows with the bytes that arrived, after the length was
 * checked against the limit: a header alone (announcing up to `maxFrameBytes`) costs nothing, and a payload
 * costs at most its length plus {@link GROW_TO_BYTES} (see there). A payload that lies whole inside one
 * chunk is returned as a view of that chunk when it is most of it, and copied out of it otherwise.
 */
export class FrameReader {
  private chunk: Uint8Array = EMPTY
  private pos = 0
  private readonly header = new Uint8Array(HEADER_BYTES)
  private headerFill = 0
  /** The announced length of the payload being assembled across chunks, or -1 between frames. */
  private length = -1
  /** That payload's bytes received so far, `received` of them: grown as they arrive, not by the header. */
  private payload: Uint8Array = EMPTY
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
    if (take > 0) {
      const end = this.received + take
      if (end > this.payload.length) this.grow(end)
      this.payload.set(chunk.subarray(this.pos, this.pos + take), this.received)
      this.received = end
      this.pos += take
    }
    if (this.received < this.length) return this.usedUp()
    const payload = this.payload
    this.length = -1
    this.payload = EMPTY
    this.received = 0
    return { kind: this.kind, payload }
  }

  /**
   * Makes room for `needed` bytes of the payload being assembled: twice that (amortised one copy per
   * byte), or the whole payload when it is small or when twice that is past {@link GROW_TO_BYTES}. The
   * length was checked against the limit already.
   */
  private grow(needed: number): void {
    const length = this.length
    const double = Math.max(2 * needed, FIRST_BUFFER_BYTES)
    const grown = new Uint8Array(length <= GROW_TO_BYTES || double > GROW_TO_BYTES ? length : double)
    if (this.received > 0) grown.set(this.payload.subarray(0, this.received))
    this.payload = grown
  }

  /** The chunk is used up: let it go (a partial payload was copied out of it). */
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
