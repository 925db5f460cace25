/**
 * Raw Node servers (`node:net` only): one connection, then report and exit.
 *
 * - `--mode=discard`: reads and discards, checking every piece against the pattern; at the client's FIN
 *   it answers with the byte count (`"<n>\n"`) and ends. The server of the one-way rows, for both sides.
 * - `--mode=echo`: `socket.pipe(socket)`. The echo anchor, and the echo server behind both proxies.
 * - `--mode=proxy --target=PORT`: `client.pipe(upstream); upstream.pipe(client)`, both legs with
 *   `allowHalfOpen` (a FIN is passed on and the other direction goes on) and `noDelay`.
 *
 * Every socket has `allowHalfOpen` and `noDelay`, as fullduplex's sockets do by default. A socket error
 * fails the run. CPU time is counted from listening until the exit.
 */
import * as net from "node:net"
import { HOST, Meter, options, PatternCheck, ready, required } from "../lib/common.js"

const meter = new Meter("server")
const opts = options()
const mode = required(opts, "mode")

const fail = (what: string) => (error: Error) => {
  throw new Error(`${mode} server, ${what}: ${error.message}`)
}

const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (socket) => {
  server.close() // one connection
  socket.on("error", fail("client socket"))
  if (mode === "discard") {
    const check = new PatternCheck()
    socket.on("data", (piece: Buffer) => check.accept(piece))
    socket.on("end", () => socket.end(`${check.bytes}\n`))
    socket.on("close", () => {
      check.verify("discard server", check.bytes) // the content; the client checks the count it is sent
      meter.finish({ bytesIn: check.bytes, pieces: check.pieces })
    })
  } else if (mode === "echo") {
    socket.pipe(socket)
    socket.on("close", () => meter.finish({ bytesIn: socket.bytesRead, bytesOut: socket.bytesWritten }))
  } else if (mode === "proxy") {
    const target = Number(required(opts, "target"))
    const upstream = net.connect({ host: HOST, port: target, allowHalfOpen: true, noDelay: true })
    upstream.on("error", fail("upstream socket"))
    socket.pipe(upstream)
    upstream.pipe(socket)
    let closed = 0
    const done = () => {
      if (++closed === 2) meter.finish({ bytesIn: socket.bytesRead, upstreamBytesIn: upstream.bytesRead })
    }
    socket.on("close", done)
    upstream.on("close", done)
  } else {
    throw new Error(`unknown --mode=${mode}`)
  }
})
server.on("error", fail("listen"))
server.listen({ host: HOST, port: 0 }, () => ready(meter, (server.address() as net.AddressInfo).port))
