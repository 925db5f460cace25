// The sending end of the receive-floor probe: a bare `net` server that writes 1 GiB (64 KiB writes,
// 'drain' when the socket asks) to its first connection, ends it, and exits. Prints `PORT <n>` once
// listening.
import * as net from "node:net"

const total = 1024 ** 3
const chunk = Buffer.alloc(64 * 1024, 7)
const server = net.createServer((socket) => {
  let sent = 0
  const pump = () => {
    while (sent < total) {
      sent += chunk.length
      if (!socket.write(chunk)) return socket.once("drain", pump)
    }
    socket.end()
    server.close()
  }
  socket.on("error", () => {})
  socket.resume()
  pump()
})
server.listen(0, "127.0.0.1", () => console.log(`PORT ${server.address().port}`))
