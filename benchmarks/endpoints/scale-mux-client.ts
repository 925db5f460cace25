/**
 * The load of the idle-mux scale rows, forked by the server it loads (`lib/scale.ts`, with
 * `client: "scale-mux-client.js"`), driven over IPC. Plain `node:net` and `@chainsafe/libp2p-yamux` (through
 * `lib/yamuxConnection.ts`): it loads neither `effect` nor `fullduplex`. Its muxers have libp2p-yamux's
 * default options but for the stream limits, raised far above the rows' counts.
 *
 * - `Open { total, port, send, shape: "sessions" }`: opens connections to `port` until `total` are open,
 *   200 at a time; each gets a libp2p-yamux client muxer and one stream, which writes `send` bytes, waits
 *   for as many echoed back, and then stays open and quiet (neither the stream nor the session is closed).
 * - `Open { total, port, send, shape: "streams" }`: one connection and one client muxer (opened by the first
 *   `Open`), and streams on it until `total` are open, 200 at a time, each as above.
 *
 *   Either answers `Opened { open, failed }` (a connection or stream that errs or closes before its echo is
 *   failed). The counts only grow: a second `Open` adds what the first did not open.
 * - `Exit`: destroys everything and exits.
 */
import * as net from "node:net"
import { HOST } from "../lib/common.js"
import type { ClientMessage, ClientReply } from "../lib/scale.js"
import { startYamux, type YamuxMuxer, type YamuxStream } from "../lib/yamuxConnection.js"

/** Far above the rows' counts: libp2p-yamux's own limits (1000 each way) are not what is measured. */
const STREAM_LIMIT = 1 << 20
const limits = { maxInboundStreams: STREAM_LIMIT, maxOutboundStreams: STREAM_LIMIT }

const BATCH = 200

const sockets: Array<net.Socket> = []
const streams: Array<YamuxStream> = []
let opened = 0
let failed = 0
/** The one session of the `streams` shape. */
let shared: Promise<YamuxMuxer | undefined> | undefined

/** Writes `send` bytes on a new stream of `muxer` and waits for as many back; false if it fails first. */
const echoOnce = async (muxer: YamuxMuxer, send: number): Promise<boolean> => {
  let stream: YamuxStream
  try {
    stream = await muxer.createStream()
  } catch {
    return false
  }
  streams.push(stream)
  return new Promise<boolean>((resolve) => {
    let received = 0
    const done = (ok: boolean) => {
      stream.removeEventListener("message", onMessage)
      stream.removeEventListener("close", onClose)
      resolve(ok)
    }
    const onMessage = (event: { readonly data: { readonly byteLength: number } }) => {
      received += event.data.byteLength
      if (received >= send) done(true)
    }
    const onClose = () => done(false)
    stream.addEventListener("message", onMessage)
    stream.addEventListener("close", onClose)
    try {
      stream.send(Buffer.alloc(send, 0x61))
    } catch {
      done(false)
    }
  })
}

/** A connection to `port` with a client muxer over it, once connected; undefined if it fails first. */
const connect = (port: number): Promise<YamuxMuxer | undefined> =>
  new Promise((resolve) => {
    const socket = net.connect({ host: HOST, port, noDelay: true })
    sockets.push(socket)
    const fail = () => resolve(undefined)
    socket.once("error", fail)
    socket.once("close", fail)
    socket.once("connect", () => {
      socket.off("error", fail)
      socket.off("close", fail)
      socket.on("error", () => {})
      resolve(startYamux(socket, "client", limits).muxer)
    })
  })

const openSession = async (port: number, send: number): Promise<void> => {
  const muxer = await connect(port)
  const ok = muxer !== undefined && (await echoOnce(muxer, send))
  if (ok) opened++
  else failed++
}

const openStream = async (muxer: YamuxMuxer | undefined, send: number): Promise<void> => {
  const ok = muxer !== undefined && (await echoOnce(muxer, send))
  if (ok) opened++
  else failed++
}

const reply = (message: ClientReply) => process.send!(message)

process.on("message", (message: ClientMessage) => {
  void (async () => {
    switch (message._tag) {
      case "Open": {
        const shape = message.shape ?? "sessions"
        if (shape === "streams") shared ??= connect(message.port)
        const muxer = shape === "streams" ? await shared : undefined
        while (opened + failed < message.total) {
          const batch = Math.min(BATCH, message.total - opened - failed)
          await Promise.all(
            Array.from({ length: batch }, () =>
              shape === "streams" ? openStream(muxer, message.send) : openSession(message.port, message.send)
            )
          )
        }
        reply({ _tag: "Opened", open: opened, failed })
        return
      }
      case "Upstream":
        throw new Error("scale-mux-client: no upstream")
      case "Exit": {
        for (const socket of sockets) socket.destroy()
        process.disconnect()
        process.exit(0)
      }
    }
  })()
})
