/**
 * The wire formats a hostile peer writes by hand (`benchmarks/endpoints/attacker.ts`): Framing's frame
 * header and yamux's. Imports nothing, so that the attacker loads neither `effect` nor `fullduplex`; the
 * fullduplex side of the bounds rows checks {@link framingHeader} against `Framing.encode`.
 */

/** Framing's header (src/internal/frameCodec.ts): a kind byte (0 data, 1 control), a u32 BE payload length. */
export const FRAMING_HEADER_BYTES = 5
export const FRAMING_KIND_DATA = 0

/** The header of a Framing frame of `kind` carrying `length` bytes. */
export const framingHeader = (length: number, kind: number = FRAMING_KIND_DATA): Uint8Array => {
  const header = new Uint8Array(FRAMING_HEADER_BYTES)
  header[0] = kind
  new DataView(header.buffer).setUint32(1, length)
  return header
}

/**
 * yamux's header (hashicorp/yamux spec.md): version u8 (0), type u8, flags u16 BE, stream id u32 BE,
 * length u32 BE; 12 bytes.
 */
export const YAMUX_HEADER_BYTES = 12
export const YAMUX_TYPE_WINDOW_UPDATE = 1
export const YAMUX_TYPE_PING = 2
export const YAMUX_FLAG_SYN = 0x1
export const YAMUX_FLAG_RST = 0x8

/** Writes a yamux header into `target` at `offset`. */
export const writeYamuxHeader = (
  target: DataView,
  offset: number,
  type: number,
  flags: number,
  streamId: number,
  length: number
): void => {
  target.setUint8(offset, 0)
  target.setUint8(offset + 1, type)
  target.setUint16(offset + 2, flags)
  target.setUint32(offset + 4, streamId)
  target.setUint32(offset + 8, length)
}
