/**
 * A hostile peer for the bounds rows (`benchmarks/bounds.ts`): raw `node:net`, no Effect, no fullduplex.
 * It connects to `--port` and misbehaves in one of three ways, then reports what it did.
 *
 * - `--mode=frame-1byte --bytes=N [--batch=B]`: one Framing data frame of N payload bytes (byte i is
 *   `i & 0xff`), header included, written one byte per `write` with `setNoDelay(true)`, yielding to the
 *   event loop (`setImmediate`) after every B writes (default 16) so that the server reads tiny pieces;
 *   then reads the server's reply (one frame whose payload is the length it received, as text) to its EOF,
 *   ends too and checks it.
 * - `--mode=churn --pairs=N`: N yamux stream opens each followed by its reset (WindowUpdate SYN, then
 *   WindowUpdate RST, odd ids 1, 3, 5, …), written as fast as the socket drains, while it reads and
 *   discards whatever the server sends; then half-closes and waits until the server closes the connection
 *   (its FIN after a clean end, or its reset once the session failed).
 * - `--mode=ping-flood [--batch=B] [--interval-ms=T]`: never reads (`socket.pause()`), and writes yamux
 *   pings (SYN, opaque counter), B per write (default 1024), as fast as the socket drains (yielding to the
 *   event loop between writes) or one write every T ms, until the server destroys the connection.
 */
import { once } from "node:events"
import * as net from "node:net"
import { HOST, Meter, options, parseSize, required } from "../lib/common.js"
import {
  FRAMING_HEADER_BYTES,
  framingHeader,
  writeYamuxHeader,
  YAMUX_FLAG_RST,
  YAMUX_FLAG_SYN,
  YAMUX_HEADER_BYTES,
  YAMUX_TYPE_PING,
  YAMUX_TYPE_WINDOW_UPDATE
} from "../lib/wire.js"

const meter = new Meter("attacker")
const opts = options()
const mode = required(opts, "mode")
const port = Number(required(opts, "port"))

const connect = async (): Promise<net.Socket> => {
  const socket = net.connect({ host: HOST, port })
  // How the connection ends is recorded below; an unhandled 'error' would crash the process instead.
  socket.on("error", () => {})
  await once(socket, "connect")
  return socket
}

/** The error code the socket ended with (`ECONNRESET`, `EPIPE`), or `"eof"` for a plain close. */
const endingOf = (socket: net.Socket): Promise<string> =>
  new Promise((resolve) => {
    let code = "eof"
    socket.on("error", (error: NodeJS.ErrnoException) => {
      if (code === "eof") code = error.code ?? error.message
    })
    socket.once("close", () => resolve(code))
  })

/** Resolves at the next `'drain'`, or at `'close'` (then the caller sees `socket.destroyed`). */
const drainOrClose = (socket: net.Socket): Promise<void> =>
  new Promise((resolve) => {
    const done = () => {
      socket.off("drain", done)
      socket.off("close", done)
      resolve()
    }
    socket.once("drain", done).once("close", done)
  })

const yieldToLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))

const frameOneByte = async (): Promise<Record<string, unknown>> => {
  const bytes = parseSize(required(opts, "bytes"))
  const batch = Number(opts["batch"] ?? 16)
  meter.start()
  const socket = await connect()
  socket.setNoDelay(true)
  const ending = endingOf(socket)
  const reply: Array<Buffer> = []
  socket.on("data", (chunk: Buffer) => reply.push(chunk))
  const header = framingHeader(bytes)
  const total = FRAMING_HEADER_BYTES + bytes
  let writes = 0
  let batches = 0
  for (let i = 0; i < total; i++) {
    const byte = i < FRAMING_HEADER_BYTES ? header[i]! : (i - FRAMING_HEADER_BYTES) & 0xff
    const more = socket.write(Uint8Array.of(byte))
    writes++
    if (socket.destroyed) throw new Error(`the server closed the connection after ${writes} bytes`)
    if (!more) await drainOrClose(socket)
    if (writes % batch === 0) {
      batches++
      await yieldToLoop()
    }
  }
  const sentMs = meter.elapsedMs()
  const ended = await ending // at the server's FIN, Node ends this side too (no allowHalfOpen), then closes
  const text = Buffer.concat(reply)
  const answer = text.subarray(FRAMING_HEADER_BYTES).toString("utf8")
  if (text.length < FRAMING_HEADER_BYTES || answer !== String(bytes)) {
    throw new Error(`the server's reply is ${JSON.stringify(answer)} (${text.length} bytes), expected "${bytes}"`)
  }
  return { bytes: total, writes, batches, sentMs: Math.round(sentMs), ms: meter.elapsedMs(), reply: answer, ended }
}

/** `count` pairs of (SYN, RST) on WindowUpdate frames, ids from `firstId` up by 2. */
const churnBatch = (firstId: number, count: number): Buffer => {
  const buf = Buffer.allocUnsafe(count * 2 * YAMUX_HEADER_BYTES)
  const view = new DataView(buf.buffer, buf.byteOffset, buf.length)
  for (let k = 0; k < count; k++) {
    const id = firstId + 2 * k
    writeYamuxHeader(view, 2 * k * YAMUX_HEADER_BYTES, YAMUX_TYPE_WINDOW_UPDATE, YAMUX_FLAG_SYN, id, 0)
    writeYamuxHeader(view, (2 * k + 1) * YAMUX_HEADER_BYTES, YAMUX_TYPE_WINDOW_UPDATE, YAMUX_FLAG_RST, id, 0)
  }
  return buf
}

const PAIRS_PER_WRITE = 1024

const churn = async (): Promise<Record<string, unknown>> => {
  const pairs = Number(required(opts, "pairs"))
  meter.start()
  const socket = await connect()
  const ending = endingOf(socket)
  let bytesRead = 0
  socket.on("data", (chunk: Buffer) => {
    bytesRead += chunk.length
  })
  let written = 0
  while (written < pairs && !socket.destroyed) {
    const count = Math.min(PAIRS_PER_WRITE, pairs - written)
    const more = socket.write(churnBatch(1 + 2 * written, count))
    written += count
    if (!more) await drainOrClose(socket)
  }
  const writeMs = meter.elapsedMs()
  if (!socket.destroyed) socket.end()
  const ended = await ending
  return { pairs, pairsWritten: written, writeMs: Math.round(writeMs), bytesRead, ms: meter.elapsedMs(), ended }
}

const pingFlood = async (): Promise<Record<string, unknown>> => {
  const batch = Number(opts["batch"] ?? 1024)
  const intervalMs = Number(opts["interval-ms"] ?? 0)
  meter.start()
  const socket = await connect()
  socket.pause() // never reads: what the server writes stays in the kernel's buffers, then in its own
  const ending = endingOf(socket)
  let pings = 0
  while (!socket.destroyed) {
    const buf = Buffer.allocUnsafe(batch * YAMUX_HEADER_BYTES)
    const view = new DataView(buf.buffer, buf.byteOffset, buf.length)
    for (let k = 0; k < batch; k++) {
      writeYamuxHeader(view, k * YAMUX_HEADER_BYTES, YAMUX_TYPE_PING, YAMUX_FLAG_SYN, 0, (pings + k) >>> 0)
    }
    const more = socket.write(buf)
    pings += batch
    if (!more) await drainOrClose(socket)
    else await (intervalMs > 0 ? new Promise((resolve) => setTimeout(resolve, intervalMs)) : yieldToLoop())
  }
  const ended = await ending
  return { pings, bytesRead: socket.bytesRead, ms: meter.elapsedMs(), ended }
}

const figures =
  mode === "frame-1byte"
    ? await frameOneByte()
    : mode === "churn"
      ? await churn()
      : mode === "ping-flood"
        ? await pingFlood()
        : undefined
if (figures === undefined) throw new Error(`unknown --mode=${mode}`)
meter.finish(figures)
