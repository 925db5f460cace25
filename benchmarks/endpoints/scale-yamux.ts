/**
 * The `@chainsafe/libp2p-yamux` 8 anchor of the idle-mux scale rows (`benchmarks/scale.ts`): a `node:net`
 * server, each connection with a libp2p-yamux server muxer (through `lib/yamuxConnection.ts`, no libp2p
 * node) that echoes every stream it is opened (`for await (const chunk of stream) stream.send(chunk)`,
 * waiting on `onDrain()` when `send` returns false). It imports neither `effect` nor `fullduplex`. Its
 * muxers have libp2p-yamux's default options (256 KiB initial window, keepalive on) but for
 * `maxInboundStreams` and `maxOutboundStreams` (1000 by default), raised above the largest count.
 *
 * `--mode`:
 * - `sessions`: the unit is a session: N connections, each a session of one stream (it wrote 16 bytes and
 *   got them back, then stays open and quiet).
 * - `streams`: the unit is a stream: one connection, one session, N streams as above.
 *
 * `--counts=1000,10000`: the counts walked (`lib/scale.ts`, with its client `scale-mux-client.js`); at each
 * the server's count is its open connections (`sessions`) or the sum of its muxers' open streams
 * (`streams`).
 */
import * as net from "node:net"
import { HOST, Meter, options, ready, required } from "../lib/common.js"
import { measureIdle } from "../lib/scale.js"
import { startYamux, type YamuxMuxer, type YamuxStream } from "../lib/yamuxConnection.js"

const meter = new Meter("server")
const opts = options()
const mode = required(opts, "mode")
if (mode !== "sessions" && mode !== "streams") throw new Error(`unknown --mode=${mode}`)
const counts = required(opts, "counts").split(",").map(Number)
const largest = Math.max(0, ...counts)

const muxerOptions = { maxInboundStreams: largest + 16, maxOutboundStreams: largest + 16 }

/** Sends back what the stream reads, to its end, then closes it. */
const echo = async (stream: YamuxStream): Promise<void> => {
  for await (const chunk of stream) {
    if (!stream.send(chunk)) await stream.onDrain()
  }
  await stream.close()
}

const muxers = new Set<YamuxMuxer>()
let connections = 0
// Not `allowHalfOpen`: the adapter leaves the socket's end to Node, which ends it at the peer's EOF (a
// half-open socket would linger until a keepalive ping failed), as in `yamux.ts`.
const server = net.createServer({ noDelay: true }, (socket) => {
  connections++
  const { muxer } = startYamux(socket, "server", muxerOptions)
  muxers.add(muxer)
  muxer.addEventListener("stream", (event) => {
    echo(event.detail).catch(() => {})
  })
  socket.once("close", () => {
    connections--
    muxers.delete(muxer)
  })
})
server.listen(0, HOST)
await new Promise((resolve) => server.once("listening", resolve))
const port = (server.address() as net.AddressInfo).port
ready(meter, port)

const streams = () => {
  let n = 0
  for (const muxer of muxers) n += muxer.streams.length
  return n
}
/** At each point, the count that is not the unit's (streams for `sessions`, connections for `streams`). */
const other: Array<number> = []
const idle = await measureIdle({
  port,
  counts,
  send: 16,
  client: "scale-mux-client.js",
  shape: mode,
  open: () => {
    other.push(mode === "sessions" ? streams() : connections)
    return mode === "sessions" ? connections : streams()
  }
})
server.close()
meter.finish({
  mode,
  unit: mode === "sessions" ? "session" : "stream",
  muxerOptions,
  idle,
  [mode === "sessions" ? "streamsAt" : "connectionsAt"]: other
})
