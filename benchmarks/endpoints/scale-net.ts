/**
 * The raw `net` anchors of the scale rows (`benchmarks/scale.ts`): `node:net` only, every socket with
 * `allowHalfOpen` and `noDelay` as fullduplex's are.
 *
 * `--mode`:
 * - `echo`: `socket.pipe(socket)`, the anchor of `Tcp.serve`, `Echo.serve` and `Shutdown.serve`.
 * - `proxy`: `client.pipe(upstream); upstream.pipe(client)` to a raw `net` echo server in a child of its
 *   own: two sockets a connection, the anchor of `Proxy.serve`.
 *
 * With `--counts=1000,10000` it measures idle connections (`lib/scale.ts`); with `--connections=K` it serves
 * until K connections have closed and reports its CPU time and peak RSS (the load rows).
 */
import * as net from "node:net"
import { HOST, Meter, options, ready, required } from "../lib/common.js"
import { measureIdle, type ScaleChild, startUpstream } from "../lib/scale.js"

const meter = new Meter("server")
const opts = options()
const mode = required(opts, "mode")
const counts = opts["counts"] === undefined ? [] : opts["counts"].split(",").map(Number)
const connections = opts["connections"] === undefined ? undefined : Number(opts["connections"])

let upstream: ScaleChild | undefined
let upstreamPort = 0
if (mode === "proxy") {
  const started = await startUpstream()
  upstream = started.child
  upstreamPort = started.port
} else if (mode !== "echo") throw new Error(`unknown --mode=${mode}`)

let open = 0
let closed = 0
let onClosed = () => {}
const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (socket) => {
  open++
  socket.on("error", () => {})
  socket.on("close", () => {
    open--
    closed++
    onClosed()
  })
  if (mode === "echo") {
    socket.pipe(socket)
  } else {
    const up = net.connect({ host: HOST, port: upstreamPort, allowHalfOpen: true, noDelay: true })
    up.on("error", () => socket.destroy())
    socket.on("error", () => up.destroy())
    socket.pipe(up)
    up.pipe(socket)
  }
})
server.listen(0, HOST)
await new Promise((resolve) => server.once("listening", resolve))
const port = (server.address() as net.AddressInfo).port
ready(meter, port)

if (connections !== undefined) {
  await new Promise<void>((resolve) => {
    onClosed = () => {
      if (closed >= connections) resolve()
    }
  })
  server.close()
  meter.finish({ mode, connections })
} else {
  const idle = await measureIdle({ port, counts, send: 16, open: () => open })
  await upstream?.exit()
  server.close()
  meter.finish({ mode, idle })
}
