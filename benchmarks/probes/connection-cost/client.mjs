/** The client of `server.mjs`: `N` connections in batches of 100; each writes 16 bytes, reads, ends. */
import * as net from "node:net"

const port = Number(process.argv[2])
const total = Number(process.argv[3] ?? 5000)
const BATCH = 100

const one = () =>
  new Promise((resolve) => {
    const socket = net.connect({ port, host: "127.0.0.1", allowHalfOpen: true })
    socket.on("error", resolve)
    socket.on("connect", () => socket.write("hello world 1234"))
    socket.once("data", () => socket.end())
    socket.on("end", () => socket.end())
    socket.on("close", resolve)
    socket.resume()
  })

for (let started = 0; started < total;) {
  const batch = []
  for (let i = 0; i < BATCH && started < total; i++, started++) batch.push(one())
  await Promise.all(batch)
}
