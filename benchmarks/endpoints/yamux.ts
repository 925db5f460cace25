/**
 * The `@chainsafe/libp2p-yamux` 8 peer of the Mux rows: libp2p-yamux on both ends of a `net` connection
 * (through `lib/yamuxConnection.ts`), its default options (256 KiB initial window, grown by libp2p up to
 * 16 MiB; keepalive on).
 *
 * - `--role=server --streams=K`: accepts one connection; each incoming stream is read to its end with
 *   `for await` (counting and checking the pattern), answered with its byte count, and closed. Reports
 *   once the connection has closed.
 * - `--role=client --bytes=N --streams=K`: opens K streams at once; each is written N / K bytes with
 *   `send()` (waiting on `onDrain()` when it returns false), closed (its half-close), and its reply read
 *   to its end; then `muxer.close()` and the socket is ended. Timed from before the connect until the
 *   last reply.
 */
import { once } from "node:events"
import * as net from "node:net"
import {
  HOST,
  Meter,
  mibPerSecond,
  options,
  PatternCheck,
  patternChunk,
  payloadBytes,
  ready,
  required,
  verifyCount,
  WRITE_BYTES
} from "../lib/common.js"
import { startYamux, type YamuxStream } from "../lib/yamuxConnection.js"

const opts = options()
const role = required(opts, "role")
const meter = new Meter(role)
const streams = Number(required(opts, "streams"))

/** Every piece of a libp2p stream, read to its end, through `onPiece`. */
const readAll = async (stream: YamuxStream, onPiece: (piece: Uint8Array) => void): Promise<void> => {
  for await (const chunk of stream) {
    if (chunk instanceof Uint8Array) onPiece(chunk)
    else for (const piece of chunk) onPiece(piece)
  }
}

if (role === "server") {
  const perStream: Array<number> = []
  const server = net.createServer((socket) => {
    server.close() // one connection
    const { muxer, error } = startYamux(socket, "server")
    muxer.addEventListener("stream", (event) => {
      const stream = event.detail
      // A failure here is an unhandled rejection, which ends the process with code 1: a failed run.
      void (async () => {
        const check = new PatternCheck()
        await readAll(stream, (piece) => check.accept(piece))
        check.verify("yamux stream", check.bytes) // the content; the client checks the count it is sent
        perStream.push(check.bytes)
        stream.send(Buffer.from(String(check.bytes)))
        await stream.close()
      })()
    })
    socket.once("close", () => {
      const failure = error()
      if (failure !== undefined) throw failure
      verifyCount("yamux streams received", streams, perStream.length)
      meter.finish({ streams: perStream.length, bytesIn: perStream.reduce((n, b) => n + b, 0) })
    })
  })
  server.listen({ host: HOST, port: 0 }, () => ready(meter, (server.address() as net.AddressInfo).port))
} else if (role === "client") {
  const bytes = payloadBytes(opts)
  const perStream = bytes / streams
  if (!Number.isInteger(perStream) || perStream % WRITE_BYTES !== 0) throw new Error(`bad --streams=${streams}`)
  const chunk = patternChunk()
  const writes = perStream / WRITE_BYTES
  meter.start()
  const socket = net.connect({ host: HOST, port: Number(required(opts, "port")), noDelay: true })
  await once(socket, "connect")
  const { muxer, error } = startYamux(socket, "client")
  const one = async (): Promise<number> => {
    const stream = await muxer.createStream()
    let reply = ""
    const reading = readAll(stream, (piece) => (reply += Buffer.from(piece).toString("utf8")))
    for (let i = 0; i < writes; i++) {
      if (!stream.send(chunk)) await stream.onDrain()
    }
    await stream.close()
    await reading
    return Number(reply)
  }
  const counts = await Promise.all(Array.from({ length: streams }, one))
  const ms = meter.elapsedMs()
  await muxer.close()
  socket.end()
  await once(socket, "close")
  const failure = error()
  if (failure !== undefined) throw failure
  counts.forEach((n, i) => verifyCount(`bytes the server counted on stream ${i}`, perStream, n))
  meter.finish({ bytes, streams, ms, mibps: mibPerSecond(bytes, ms) })
} else {
  throw new Error(`unknown --role=${role}`)
}
