/**
 * The client of the scale rows' load cases (`benchmarks/scale.ts`), `node:net` only: `--clients=C`
 * concurrent clients, each of which opens a connection, writes `--per-connection` bytes of the pattern (1
 * MiB, in 64 KiB writes, waiting for `'drain'`) while it reads their echo, checks it, ends, waits for the
 * close, and starts over until `--connections=K` connections in all have been made. Reports `bytes` (the
 * echoed payload, K × per-connection) and `mibps` (it over the wall time from the first connect to the last
 * close).
 */
import * as net from "node:net"
import {
  HOST,
  Meter,
  MiB,
  options,
  PatternCheck,
  parseSize,
  patternChunk,
  required,
  WRITE_BYTES,
  writeRepeated
} from "../lib/common.js"

const meter = new Meter("client")
const opts = options()
const port = Number(required(opts, "port"))
const clients = Number(required(opts, "clients"))
const connections = Number(required(opts, "connections"))
const perConnection = parseSize(opts["per-connection"] ?? "1m")
if (perConnection % WRITE_BYTES !== 0) throw new Error(`--per-connection must be a multiple of 64 KiB`)
const chunk = patternChunk()

const one = (): Promise<void> =>
  new Promise((resolve, reject) => {
    const socket = net.connect({ host: HOST, port, noDelay: true, allowHalfOpen: true })
    const check = new PatternCheck()
    socket.on("data", (piece: Buffer) => check.accept(piece))
    socket.on("error", reject)
    socket.on("end", () => socket.end())
    socket.on("close", () => {
      try {
        check.verify("echo", perConnection)
        resolve()
      } catch (e) {
        reject(e)
      }
    })
    socket.once("connect", () => {
      writeRepeated(socket, chunk, perConnection / WRITE_BYTES).then(() => socket.end(), reject)
    })
  })

let started = 0
const worker = async (): Promise<void> => {
  while (started < connections) {
    started++
    await one()
  }
}

meter.start()
await Promise.all(Array.from({ length: Math.min(clients, connections) }, worker))
const ms = meter.elapsedMs()
const bytes = connections * perConnection
meter.finish({ bytes, ms, mibps: Math.round((bytes / MiB / (ms / 1000)) * 10) / 10, clients, connections })
