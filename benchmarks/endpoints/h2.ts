/**
 * The `node:http2` peer of the Mux rows: cleartext HTTP/2 (h2c), one session, one POST per stream.
 *
 * - `--role=server --streams=K [--window=BYTES]`: each request body is counted and checked in `'data'`;
 *   at its end the server answers 200 with the byte count. Reports once the session has closed.
 * - `--role=client --bytes=N --streams=K [--window=BYTES]`: K requests at once, each body N / K bytes
 *   written with `write()` (waiting for `'drain'`), ended, and the reply read; then the session is closed.
 *   Timed from before the connect until the last reply.
 *
 * Without `--window`, Node's defaults (65,535-byte windows per stream and for the session, 16 KiB frames).
 * With it, both ends announce `settings.initialWindowSize: BYTES` and the receiving (server) session's
 * window is set to K × BYTES with `setLocalWindowSize`, so every stream may have BYTES in flight at once,
 * as every Mux stream may with `windowBytes` (yamux has no session-wide window).
 */
import { once } from "node:events"
import * as http2 from "node:http2"
import type * as net from "node:net"
import {
  HOST,
  Meter,
  mibPerSecond,
  options,
  parseSize,
  PatternCheck,
  patternChunk,
  payloadBytes,
  ready,
  required,
  verifyCount,
  WRITE_BYTES,
  writeRepeated
} from "../lib/common.js"

const opts = options()
const role = required(opts, "role")
const meter = new Meter(role)
const streams = Number(required(opts, "streams"))
const windowBytes = opts["window"] === undefined ? undefined : parseSize(opts["window"])
const settings = windowBytes === undefined ? {} : { settings: { initialWindowSize: windowBytes } }

if (role === "server") {
  const perStream: Array<number> = []
  const server = http2.createServer(settings)
  server.on("session", (session) => {
    // One session. (Not `server.close()` here: in Node 24 it makes the session refuse new streams.)
    if (windowBytes !== undefined) session.setLocalWindowSize(streams * windowBytes)
    session.on("close", () => {
      server.close()
      verifyCount("http2 streams received", streams, perStream.length)
      meter.finish({ streams: perStream.length, bytesIn: perStream.reduce((n, b) => n + b, 0) })
    })
  })
  server.on("stream", (stream) => {
    const check = new PatternCheck()
    stream.on("data", (piece: Buffer) => check.accept(piece))
    stream.on("end", () => {
      check.verify("http2 stream", check.bytes) // the content; the client checks the count it is sent
      perStream.push(check.bytes)
      stream.respond({ ":status": 200 })
      stream.end(String(check.bytes))
    })
  })
  server.listen({ host: HOST, port: 0 }, () => ready(meter, (server.address() as net.AddressInfo).port))
} else if (role === "client") {
  const bytes = payloadBytes(opts)
  const perStream = bytes / streams
  if (!Number.isInteger(perStream) || perStream % WRITE_BYTES !== 0) throw new Error(`bad --streams=${streams}`)
  const chunk = patternChunk()
  meter.start()
  const client = http2.connect(`http://${HOST}:${required(opts, "port")}`, settings)
  await once(client, "connect")
  const one = async (): Promise<number> => {
    const request = client.request({ ":method": "POST", ":path": "/" })
    let reply = ""
    request.setEncoding("utf8")
    request.on("data", (text: string) => (reply += text))
    const ended = once(request, "end")
    await writeRepeated(request, chunk, perStream / WRITE_BYTES)
    request.end()
    await ended
    return Number(reply)
  }
  const counts = await Promise.all(Array.from({ length: streams }, one))
  const ms = meter.elapsedMs()
  await new Promise<void>((resolve) => client.close(() => resolve()))
  counts.forEach((n, i) => verifyCount(`bytes the server counted on stream ${i}`, perStream, n))
  meter.finish({ bytes, streams, ms, mibps: mibPerSecond(bytes, ms) })
} else {
  throw new Error(`unknown --role=${role}`)
}
