/**
 * The raw Node server of the accept-burst rows (`benchmarks/accept.ts`), `node:net` only: the anchor.
 *
 * `net.createServer({ allowHalfOpen: true, noDelay: true })` listening on 127.0.0.1, port 0, with Node's
 * default backlog (511); every connection is `socket.pipe(socket)`: it echoes until the client's FIN, then
 * ends (its own FIN) and closes. A socket error (a client that gave up and reset) is counted, not fatal.
 * The server counts closes and reports once `--warmup=K` then `--connections=N` connections have closed
 * (`watchBurst`): the CPU time of the burst, per connection.
 */
import * as net from "node:net"
import { watchBurst } from "../lib/burst.js"
import { HOST, Meter, options, ready, required } from "../lib/common.js"

const meter = new Meter("server")
const opts = options()
const connections = Number(required(opts, "connections"))
const warmup = Number(opts["warmup"] ?? 0)

let accepted = 0
let closed = 0
const errors: Record<string, number> = {}
const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (socket) => {
  accepted++
  socket.on("error", (error: NodeJS.ErrnoException) => {
    const code = error.code ?? error.message
    errors[code] = (errors[code] ?? 0) + 1
  })
  socket.on("close", () => closed++)
  socket.pipe(socket)
})
server.on("error", (error) => {
  throw new Error(`accept server: ${error.message}`)
})
server.listen({ host: HOST, port: 0 }, () => {
  ready(meter, (server.address() as net.AddressInfo).port)
  void watchBurst(warmup, connections, () => ({ accepted, closed })).then((figures) => {
    server.close()
    meter.finish({ ...figures, backlog: "node default (511)", accepted, closed, socketErrors: errors })
  })
})
