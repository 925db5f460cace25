// The receiving end of the receive-floor probe: a bare `net` client that reads to EOF and prints its CPU
// time for the transfer. Modes (argv[3]):
// - `fresh`: 'data' events, a new buffer from Node per read (what an application that keeps chunks gets);
// - `copy`: reads into a reused buffer (`onread`), each read copied into a fresh buffer;
// - `reused`: reads into a reused buffer, nothing allocated per read.
// `EFFECT=1` imports `effect` first, as any process on Effect has. Run with `--trace-gc` to count the
// collections (`Mark-Compact` lines).
import * as net from "node:net"

if (process.env.EFFECT) await import("effect")
const port = Number(process.argv[2])
const mode = process.argv[3] ?? "fresh"
let bytes = 0
const kept = []
const started = performance.now()
const cpu = process.cpuUsage()
const options = { port, host: "127.0.0.1" }
if (mode !== "fresh") {
  options.onread = {
    buffer: Buffer.allocUnsafe(64 * 1024),
    callback: (n, buffer) => {
      bytes += n
      if (mode === "copy") {
        const copy = Buffer.allocUnsafe(n)
        buffer.copy(copy, 0, 0, n)
        kept.push(copy) // held a little while, as a reader's buffer would be
        if (kept.length > 4) kept.shift()
      }
    }
  }
}
const socket = net.connect(options)
if (mode === "fresh") socket.on("data", (chunk) => (bytes += chunk.length))
socket.on("end", () => {
  const used = process.cpuUsage(cpu)
  const seconds = (performance.now() - started) / 1000
  const effect = process.env.EFFECT ? " after import(effect)" : ""
  console.log(
    `${mode}${effect}: ${bytes} bytes, CPU ${((used.user + used.system) / 1000).toFixed(0)} ms, ` +
      `${(bytes / 1048576 / seconds).toFixed(0)} MiB/s`
  )
  socket.end()
})
