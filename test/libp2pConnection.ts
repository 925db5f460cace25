/**
 * `@chainsafe/libp2p-yamux` 8 over a plain `net.Socket`, with no libp2p node: the small adapter the Mux
 * interoperability tests run it through.
 *
 * libp2p-yamux 8 takes the connection it multiplexes as a libp2p `MessageStream`
 * (`createStreamMuxer(connection)`). Of that interface the muxer uses only these members (8.0.1, checked
 * at runtime with a Proxy that recorded every property read):
 *
 * - `direction`: `"outbound"` makes the muxer a yamux client (odd stream ids), `"inbound"` a server;
 * - `log`: a logger (callable, with `trace`, `error`, `newScope`);
 * - `addEventListener` for `"message"` (an event whose `data` holds the bytes received), `"drain"` (the
 *   transport takes writes again) and `"close"` (the transport is gone: every stream ends);
 * - `send(bytes)`: writes a frame, returns `false` when the transport wants the muxer to wait for `"drain"`;
 * - `abort(error)`: called after a protocol error, once the muxer has queued its GoAway.
 *
 * Everything else in `MessageStream` is left out; {@link SocketConnection.asMessageStream} is the one cast.
 *
 * What libp2p-yamux 8.0.1 does that a peer must allow for (found with raw frames against it): it sends
 * FIN on a frame of its own, acknowledges a stream only with its first outgoing frame, and sends Data
 * frames as large as the window granted. It takes a GoAway(0) for "the transport closed": every stream of
 * its ends, silently, and its keepalive stops, forgetting the ping in flight, whose answer is then a
 * protocol error to it. Its `close()` half-closes its streams, then sends GoAway(0); it never closes the
 * socket, which is the owner's job ({@link SocketConnection.close}).
 */
import { yamux } from "@chainsafe/libp2p-yamux"
import type * as net from "node:net"

type YamuxFactory = ReturnType<ReturnType<typeof yamux>>

/** libp2p-yamux's muxer (its class is not exported by name). */
export type YamuxMuxer = ReturnType<YamuxFactory["createStreamMuxer"]>

/** One libp2p-yamux stream. */
export type YamuxStream = Awaited<ReturnType<YamuxMuxer["createStream"]>>

/** libp2p-yamux's options (`enableKeepAlive`, `keepAliveInterval`, `streamOptions`, …). */
export type YamuxOptions = NonNullable<Parameters<typeof yamux>[0]>

/** The connection interface the muxer takes (`MessageStream` of `@libp2p/interface`). */
type MessageStream = Parameters<YamuxFactory["createStreamMuxer"]>[0]
type Logger = MessageStream["log"]
/** What the muxer hands `send`: a header alone, or a header and payload as a `Uint8ArrayList`. */
type Frame = Parameters<MessageStream["send"]>[0]

/** A logger that drops everything, or prints each line with `prefix` when `LIBP2P_YAMUX_TRACE` is set. */
const makeLogger = (prefix: string): Logger => {
  const enabled = Boolean(process.env.LIBP2P_YAMUX_TRACE)
  const print = enabled
    ? (formatter: unknown, ...args: Array<unknown>) => console.log(prefix, formatter, ...args)
    : () => {}
  const log: Logger = Object.assign((formatter: unknown, ...args: Array<unknown>) => print(formatter, ...args), {
    enabled,
    trace: print,
    error: print,
    newScope: (name: string) => makeLogger(`${prefix}:${name}`)
  })
  return log
}

/** The event the muxer reads received bytes from: its `data` field (libp2p's `StreamMessageEvent` shape). */
class MessageEvent extends Event {
  constructor(readonly data: Uint8Array) {
    super("message")
  }
}

/** A yamux frame header as seen on the wire (hashicorp/yamux `spec.md`, "Framing"). */
export interface FrameHeader {
  readonly type: "Data" | "WindowUpdate" | "Ping" | "GoAway" | number
  /** SYN 1, ACK 2, FIN 4, RST 8. */
  readonly flags: number
  readonly streamId: number
  /** Payload bytes (Data), window delta (WindowUpdate), opaque value (Ping), code (GoAway). */
  readonly length: number
}

const TYPES = ["Data", "WindowUpdate", "Ping", "GoAway"] as const

/**
 * Splits a byte stream into yamux frame headers, independently of both implementations under test: the
 * tests check what crossed the wire with it (pings and their answers, GoAway codes).
 */
class HeaderLog {
  readonly headers: Array<FrameHeader> = []
  private readonly header = new Uint8Array(12)
  private fill = 0
  private skip = 0

  feed(chunk: Uint8Array): void {
    for (let at = 0; at < chunk.length;) {
      if (this.skip > 0) {
        const n = Math.min(this.skip, chunk.length - at)
        this.skip -= n
        at += n
        continue
      }
      const n = Math.min(12 - this.fill, chunk.length - at)
      this.header.set(chunk.subarray(at, at + n), this.fill)
      this.fill += n
      at += n
      if (this.fill < 12) continue
      this.fill = 0
      const view = new DataView(this.header.buffer)
      const type = view.getUint8(1)
      const length = view.getUint32(8)
      this.headers.push({ type: TYPES[type] ?? type, flags: view.getUint16(2), streamId: view.getUint32(4), length })
      if (type === 0) this.skip = length
    }
  }
}

/**
 * A `net.Socket` as the connection libp2p-yamux 8 runs over.
 *
 * **Details**
 *
 * - Received chunks are dispatched as `"message"` events, as plain `Uint8Array` views of the socket's
 *   buffers.
 * - Backpressure: `send` returns what `socket.write` returned, and the socket's `'drain'` is forwarded, so
 *   the muxer holds its streams' writes while the socket's buffer is over its high-water mark.
 * - The socket's `'close'` is forwarded as `"close"`: the muxer ends its streams and stops its keepalive.
 *   With `allowHalfOpen` off (Node's default), the peer's FIN ends the socket, as a libp2p transport
 *   would.
 * - `abort` (the muxer's, after a protocol error) ends the socket, so that the GoAway already queued
 *   goes out before the FIN, then destroys it once flushed.
 * - `framesIn` and `framesOut` list the headers of every frame received and sent.
 */
export class SocketConnection
  extends EventTarget
  implements Pick<MessageStream, "direction" | "log" | "send" | "abort">
{
  readonly log: Logger
  private readonly received = new HeaderLog()
  private readonly sent = new HeaderLog()
  /** The socket's error (`ECONNRESET`, …) or the muxer's abort reason, the first of them. */
  error: Error | undefined

  constructor(
    readonly socket: net.Socket,
    readonly direction: "inbound" | "outbound"
  ) {
    super()
    this.log = makeLogger(`libp2p-yamux ${direction === "outbound" ? "client" : "server"}`)
    socket.setNoDelay(true)
    socket.on("error", (error) => {
      this.error ??= error
    })
    socket.on("data", (chunk: Buffer) => {
      const bytes = new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength)
      this.received.feed(bytes)
      this.dispatchEvent(new MessageEvent(bytes))
    })
    socket.on("drain", () => this.dispatchEvent(new Event("drain")))
    socket.once("close", () => this.dispatchEvent(new Event("close")))
  }

  /** Headers of the frames the muxer received. */
  get framesIn(): ReadonlyArray<FrameHeader> {
    return this.received.headers
  }

  /** Headers of the frames the muxer sent. */
  get framesOut(): ReadonlyArray<FrameHeader> {
    return this.sent.headers
  }

  /** Writes one frame; `false` asks the muxer to wait for `"drain"`. Frames sent after the socket ended are dropped. */
  send(frame: Frame): boolean {
    if (this.socket.destroyed || this.socket.writableEnded) return false
    if (frame instanceof Uint8Array) {
      this.sent.feed(frame)
      return this.socket.write(frame)
    }
    // A header and its payload, in one writev.
    this.socket.cork()
    let ok = true
    for (const chunk of frame) {
      this.sent.feed(chunk)
      ok = this.socket.write(chunk)
    }
    this.socket.uncork()
    return ok
  }

  abort(error: Error): void {
    this.error ??= error
    this.socket.destroySoon() // ends the socket, and destroys it once what was written has been flushed
  }

  /** Closes the connection gracefully: ends the socket and waits until it has closed. */
  close(): Promise<void> {
    return new Promise((resolve) => {
      if (this.socket.closed) return resolve()
      this.socket.once("close", () => resolve())
      this.socket.end()
    })
  }

  /** This connection as the `MessageStream` libp2p-yamux takes: the members above are all it uses. */
  asMessageStream(): MessageStream {
    return this as unknown as MessageStream
  }
}

/** A libp2p-yamux muxer and the connection it runs over. */
export interface Libp2pYamux {
  readonly muxer: YamuxMuxer
  readonly connection: SocketConnection
}

/**
 * Starts a libp2p-yamux muxer over `socket` in a role: `"client"` opens odd stream ids (libp2p's
 * `"outbound"` connection), `"server"` even ones. Incoming streams wait in the muxer until a `"stream"`
 * listener is added (at most 10 of them; libp2p's `maxEarlyStreams`).
 */
export const startLibp2pYamux = (
  socket: net.Socket,
  role: "client" | "server",
  options: YamuxOptions = {}
): Libp2pYamux => {
  const connection = new SocketConnection(socket, role === "client" ? "outbound" : "inbound")
  const muxer = yamux(options)().createStreamMuxer(connection.asMessageStream())
  return { muxer, connection }
}
