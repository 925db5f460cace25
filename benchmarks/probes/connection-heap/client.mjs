// The clients of the connection-heap probe: N connections to argv[2], each sends argv[4] bytes (16; 0 for a server that
// speaks first), waits for a reply (unless argv[5] is `nowait`: a store-and-forward server answers at FIN), stays open.
import * as net from "node:net"
const [port, N, send = 16] = process.argv.slice(2, 5).map(Number)
const wait = process.argv[5] !== "nowait"
const socks = []
for (let i = 0; i < N; i += 200) {
  await Promise.all(
    Array.from(
      { length: Math.min(200, N - i) },
      () =>
        new Promise((res) => {
          const s = net.connect({ host: "127.0.0.1", port })
          if (wait) s.once("data", res)
          else s.once("connect", () => setTimeout(res, 20))
          s.once("error", res)
          if (send > 0) s.write(Buffer.alloc(send, 1))
          socks.push(s)
        })
    )
  )
}
process.send("done")
setInterval(() => {}, 1e6)
