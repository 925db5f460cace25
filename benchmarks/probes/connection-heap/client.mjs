// The clients of the connection-heap probe: N connections to argv[2], each sends 16 bytes, waits for a reply, stays open.
import * as net from "node:net"
const [port, N] = process.argv.slice(2).map(Number)
const socks = []
for (let i = 0; i < N; i += 200) {
  await Promise.all(
    Array.from(
      { length: Math.min(200, N - i) },
      () =>
        new Promise((res) => {
          const s = net.connect({ host: "127.0.0.1", port })
          s.once("data", res)
          s.once("error", res)
          s.write(Buffer.alloc(16, 1))
          socks.push(s)
        })
    )
  )
}
process.send("done")
setInterval(() => {}, 1e6)
