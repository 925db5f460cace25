/**
 * `@chainsafe/libp2p-yamux` 8 over a plain `net.Socket`, with no libp2p node: the adapter of
 * `test/libp2pConnection.ts` (which the Mux interoperability tests use) without its frame log.
 *
 * libp2p-yamux 8 takes the connection it multiplexes as a libp2p `MessageStream`; of it the muxer uses
 * `direction` (`"outbound"` = yamux client), `log`, `send(bytes)` (false: wait for `"drain"`), `abort`,
 * and the `"message"`, `"drain"` and `"close"` events. `send` writes a frame's header and payload in one
 * `writev` (corked), as fullduplex's Tcp does with `writeAll`.
 */
import { yamux, type YamuxMuxerInit } from "@chainsafe/libp2p-yamux"
import type * as net from "node:net"

type YamuxFactory = ReturnType<ReturnType<typeof yamux>>

/** libp2p-yamux's muxer (its class is not exported by name). */
export type YamuxMuxer = ReturnType<YamuxFactory["createStreamMuxer"]>

/** One libp2p-yamux stream. */
export type YamuxStream = Awaited<ReturnType<YamuxMuxer["createStream"]>>

type MessageStream = Parameters<YamuxFactory["createStreamMuxer"]>[0]
type Logger = MessageStream["log"]
/** A header alone, or a header and its payload as a `Uint8ArrayList`. */
type Frame = Parameters<MessageStream["send"]>[0]

const silentLogger = (): Logger => {
  const log = Object.assign(() => {}, { enabled: false, trace: () => {}, error: () => {} }) as unknown as Logger
  log.newScope = () => log
  return log
}

class MessageEvent extends Event {
  readonly data: Uint8Array
  constructor(data: Uint8Array) {
    super("message")
    this.data = data
  }
}

class SocketConnection extends EventTarget {
  readonly log = silentLogger()
  readonly socket: net.Socket
  readonly direction: "inbound" | "outbound"
  error: Error | undefined = undefined

  constructor(socket: net.Socket, direction: "inbound" | "outbound") {
    super()
    this.socket = socket
    this.direction = direction
    socket.setNoDelay(true)
    socket.on("error", (error) => {
      this.error ??= error
    })
    socket.on("data", (chunk: Buffer) =>
      this.dispatchEvent(new MessageEvent(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength)))
    )
    socket.on("drain", () => this.dispatchEvent(new Event("drain")))
    socket.once("close", () => this.dispatchEvent(new Event("close")))
  }

  send(frame: Frame): boolean {
    if (this.socket.destroyed || this.socket.writableEnded) return false
    if (frame instanceof Uint8Array) return this.socket.write(frame)
    this.socket.cork()
    let ok = true
    for (const piece of frame) ok = this.socket.write(piece)
    this.socket.uncork()
    return ok
  }

  abort(error: Error): void {
    this.error ??= error
    this.socket.destroySoon()
  }
}

/**
 * A libp2p-yamux muxer over `socket`, with libp2p-yamux's default options but for `options`, its `init`
 * (`maxInboundStreams`, `maxOutboundStreams`, …).
 */
export const startYamux = (
  socket: net.Socket,
  role: "client" | "server",
  options?: YamuxMuxerInit
): { readonly muxer: YamuxMuxer; readonly error: () => Error | undefined } => {
  const connection = new SocketConnection(socket, role === "client" ? "outbound" : "inbound")
  const muxer = yamux(options)().createStreamMuxer(connection as unknown as MessageStream)
  return { muxer, error: () => connection.error }
}
