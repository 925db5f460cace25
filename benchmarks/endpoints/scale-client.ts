/**
 * The load of the idle-connection scale rows, forked by the server it loads (`lib/scale.ts`), driven over
 * IPC. Plain `node:net`: it loads neither `effect` nor `fullduplex`.
 *
 * - `Open { total, port, send }`: opens connections to `port` until `total` are open, 200 at a time; each
 *   writes `send` bytes (none when the server speaks first), waits for its first answer (or, without
 *   `awaitAnswer`, for its bytes to be written), and then stays open and quiet. Answers `Opened { open, failed }` (a connection that errs or ends before its answer is
 *   failed).
 * - `Upstream`: starts a raw `net` echo server (`socket.pipe(socket)`) on 127.0.0.1 and answers
 *   `Listening { port }`: the upstream of the proxy rows, in a process of its own.
 * - `Exit`: destroys everything and exits.
 */
import * as net from "node:net"
import { HOST } from "../lib/common.js"
import type { ClientMessage, ClientReply } from "../lib/scale.js"

const sockets: Array<net.Socket> = []
let failed = 0
let upstream: net.Server | undefined

const BATCH = 200

const openOne = (port: number, send: number, awaitAnswer: boolean): Promise<void> =>
  new Promise((resolve) => {
    const socket = net.connect({ host: HOST, port, noDelay: true })
    let settled = false
    const done = (ok: boolean) => {
      if (settled) return
      settled = true
      if (!ok) failed++
      resolve()
    }
    if (awaitAnswer) socket.once("data", () => done(true))
    else socket.once("connect", () => socket.write(Buffer.alloc(send, 0x61), () => done(true)))
    socket.once("error", () => done(false))
    socket.once("close", () => done(false))
    if (awaitAnswer && send > 0) socket.write(Buffer.alloc(send, 0x61))
    sockets.push(socket)
  })

const reply = (message: ClientReply) => process.send!(message)

process.on("message", (message: ClientMessage) => {
  void (async () => {
    switch (message._tag) {
      case "Open": {
        while (sockets.length < message.total) {
          const batch = Math.min(BATCH, message.total - sockets.length)
          await Promise.all(
            Array.from({ length: batch }, () => openOne(message.port, message.send, message.awaitAnswer))
          )
        }
        reply({ _tag: "Opened", open: sockets.length - failed, failed })
        return
      }
      case "Upstream": {
        upstream = net.createServer({ allowHalfOpen: true, noDelay: true }, (socket) => {
          socket.on("error", () => {})
          socket.pipe(socket)
        })
        upstream.listen(0, HOST, () =>
          reply({ _tag: "Listening", port: (upstream!.address() as net.AddressInfo).port })
        )
        return
      }
      case "Exit": {
        for (const socket of sockets) socket.destroy()
        upstream?.close()
        process.disconnect()
        process.exit(0)
      }
    }
  })()
})
