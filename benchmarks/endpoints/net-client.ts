/**
 * Raw Node TCP clients (`node:net` only), the anchors of the TCP rows.
 *
 * - `--mode=oneway --bytes=N`: writes N bytes (`write()`, waiting for `'drain'` when it returns false),
 *   ends, and reads the discard server's byte-count reply to EOF. Timed from before the connect until
 *   the reply's EOF.
 * - `--mode=echo --bytes=N`: writes N bytes the same way while counting and checking the echo in
 *   `'data'`; timed from before the connect until the echo's EOF.
 * - `--mode=pingpong --roundtrips=R --warmup=W`: 1 byte out, wait for it to come back, repeat; W
 *   untimed round trips, then R timed ones, each timed on its own.
 *
 * `allowHalfOpen` and `noDelay` on, as fullduplex's `Tcp.connect` by default. Run with `--import effect`
 * (the runner's "raw Node in a process that loaded Effect") it is the same code in a process that has
 * loaded Effect first.
 */
import { once } from "node:events"
import * as net from "node:net"
import {
  HOST,
  latencies,
  Meter,
  mibPerSecond,
  options,
  PatternCheck,
  patternChunk,
  payloadBytes,
  required,
  verifyCount,
  WRITE_BYTES,
  writeRepeated
} from "../lib/common.js"

const meter = new Meter("client")
const opts = options()
const mode = required(opts, "mode")
const port = Number(required(opts, "port"))

const connect = async (): Promise<net.Socket> => {
  const socket = net.connect({ host: HOST, port, allowHalfOpen: true, noDelay: true })
  await once(socket, "connect")
  return socket
}

if (mode === "oneway" || mode === "echo") {
  const bytes = payloadBytes(opts)
  const chunk = patternChunk()
  meter.start()
  const socket = await connect()
  const check = new PatternCheck()
  let reply = ""
  if (mode === "echo") socket.on("data", (piece: Buffer) => check.accept(piece))
  else socket.on("data", (piece: Buffer) => (reply += piece.toString("utf8")))
  const ended = once(socket, "end")
  await writeRepeated(socket, chunk, bytes / WRITE_BYTES)
  socket.end()
  await ended
  const ms = meter.elapsedMs()
  if (mode === "echo") check.verify("echo", bytes)
  else verifyCount("bytes the discard server counted", bytes, Number(reply.trim()))
  socket.destroy()
  meter.finish({ bytes, ms, mibps: mibPerSecond(bytes, ms) })
} else if (mode === "pingpong") {
  const roundTrips = Number(required(opts, "roundtrips"))
  const warmup = Number(opts["warmup"] ?? 1000)
  const ping = Buffer.from([0x2a])
  const times = new Float64Array(roundTrips)
  const socket = await connect()
  let i = -warmup
  let sent = 0
  let timedMs = 0
  await new Promise<void>((resolve, reject) => {
    socket.on("error", reject)
    socket.on("data", (pong: Buffer) => {
      const now = performance.now()
      if (pong.length !== 1 || pong[0] !== 0x2a) reject(new Error(`round trip ${i}: got ${pong.length} bytes`))
      if (i >= 0) times[i] = now - sent
      i++
      if (i === 0) meter.start()
      if (i === roundTrips) {
        timedMs = meter.elapsedMs()
        return resolve()
      }
      sent = performance.now()
      socket.write(ping)
    })
    if (warmup === 0) meter.start()
    sent = performance.now()
    socket.write(ping)
  })
  socket.end()
  await once(socket, "close")
  times.sort()
  meter.finish({ roundTrips, ms: timedMs, rtps: Math.round(roundTrips / (timedMs / 1000)), ...latencies(times) })
} else {
  throw new Error(`unknown --mode=${mode}`)
}
