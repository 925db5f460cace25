/**
 * The raw Node anchor of the bounds row `framing-1byte-tcp`: what a peer that sends a frame in 1-byte
 * pieces costs a process that does nothing but receive it. `node:` modules only.
 *
 * `--mode=frame-sink --bytes=N`: `net.createServer({ allowHalfOpen: true })` on 127.0.0.1, one
 * connection; every `'data'` chunk is copied into one buffer of `5 + N` bytes allocated before the
 * connection (the least any receiver can hold), and counted. Once the whole frame is in, it checks the
 * payload (byte i is `i & 0xff`), replies with the frame the fullduplex server sends (the length as text)
 * and ends. Reports the peak RSS growth from the connection's arrival to its `'close'`, and the reads.
 *
 * `--mode=pair-sink --bytes=N`: the raw Node anchor of `framing-1byte-pair`, one process: a `PassThrough`
 * (64 KiB, the pair's capacity) written one byte per `write` (a fresh `Uint8Array.of(byte)` each, waiting
 * for `'drain'` when told to), its `'data'` copied into one buffer of `5 + N` bytes allocated before; the
 * peak RSS growth over the transfer.
 */
import { PassThrough } from "node:stream"
import { once } from "node:events"
import * as net from "node:net"
import { HOST, Meter, options, parseSize, ready, required } from "../lib/common.js"
import { PeakRss } from "../lib/peak.js"
import { FRAMING_HEADER_BYTES, framingHeader } from "../lib/wire.js"

const meter = new Meter("server")
const opts = options()
const mode = required(opts, "mode")
if (mode !== "frame-sink" && mode !== "pair-sink") throw new Error(`unknown --mode=${mode}`)
const bytes = parseSize(required(opts, "bytes"))
const total = FRAMING_HEADER_BYTES + bytes
const frame = Buffer.alloc(total)

const checkFrame = (): void => {
  for (let i = 0; i < bytes; i++) {
    if (frame[FRAMING_HEADER_BYTES + i] !== (i & 0xff)) throw new Error(`byte ${i} of the frame is not the byte sent`)
  }
}

if (mode === "pair-sink") {
  const header = framingHeader(bytes)
  meter.start()
  const peak = new PeakRss()
  const pipe = new PassThrough({ highWaterMark: 64 * 1024 })
  let received = 0
  pipe.on("data", (chunk: Buffer) => {
    chunk.copy(frame, received)
    received += chunk.length
  })
  const ended = once(pipe, "end")
  for (let i = 0; i < total; i++) {
    const byte = i < FRAMING_HEADER_BYTES ? header[i]! : (i - FRAMING_HEADER_BYTES) & 0xff
    if (!pipe.write(Uint8Array.of(byte))) await once(pipe, "drain")
  }
  pipe.end()
  await ended
  const memory = peak.stop()
  if (received !== total) throw new Error(`expected ${total} bytes, got ${received}`)
  checkFrame()
  meter.finish({ frameBytes: bytes, received: received - FRAMING_HEADER_BYTES, ...memory, ms: meter.elapsedMs() })
} else {
  const server = net.createServer({ allowHalfOpen: true })
  server.listen(0, HOST)
  await once(server, "listening")
  ready(meter, (server.address() as net.AddressInfo).port)
  const [socket] = (await once(server, "connection")) as [net.Socket]
  server.close()
  const peak = new PeakRss()
  socket.on("error", () => {})
  let received = 0
  let reads = 0
  socket.on("data", (chunk: Buffer) => {
    if (received + chunk.length > total) throw new Error(`more than the ${total} bytes of one frame arrived`)
    chunk.copy(frame, received)
    received += chunk.length
    reads++
    if (received === total) {
      checkFrame()
      const answer = Buffer.from(String(bytes))
      socket.end(Buffer.concat([framingHeader(answer.length), answer]))
    }
  })
  await once(socket, "close")
  const memory = peak.stop()
  if (received !== total) throw new Error(`expected ${total} bytes, got ${received}`)
  meter.finish({ frameBytes: bytes, received: received - FRAMING_HEADER_BYTES, reads, ...memory })
}
