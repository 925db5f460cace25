/**
 * The connect of `Tcp.connect`, without a scope: `Tcp.connect` adds a finalizer for the socket; the proxy's
 * relay, which owns its upstream leg for exactly as long as the relay runs, ends it in an `ensuring`.
 *
 * @internal
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as net from "node:net"
import { ConnectFailed, DuplexError } from "../DuplexError.js"
import type { Address, ConnectOptions } from "../Tcp.js"
import { codeOf } from "./errors.js"
import { DEFAULT_HIGH_WATER_MARK_BYTES, makeUnsafe, type NodeDuplex } from "./nodeDuplex.js"
import { connectLabel, describeAddress } from "./tcpOptions.js"

/** A connection's socket before its duplex exists, then its duplex: what must be closed at the end. */
export class Leg {
  socket: net.Socket | undefined = undefined
  duplex: NodeDuplex | undefined = undefined

  /** Closes what there is: the duplex (as its scope would), or the half-made socket. */
  release(): void {
    if (this.duplex !== undefined) this.duplex.dispose()
    else this.socket?.destroy()
  }
}

/** `tcp local→remote` or `unix path`: the label of a connected socket. */
export const socketLabel = (socket: net.Socket, address: Address): string =>
  "path" in address
    ? `unix ${address.path}`
    : `tcp ${socket.localAddress}:${socket.localPort}→${socket.remoteAddress}:${socket.remotePort}`

/**
 * Connects to `options` within `timeoutMillis` (checked by `checkConnectOptions`, as is `highWaterMark`),
 * and succeeds with the connection's duplex, kept in `leg` too, labelled `label` (by default
 * `options.label`, else the connected socket's addresses, a string made per connection). The socket is in `leg` from the moment it
 * exists, so the caller's `leg.release()` closes it whatever happens from then on; interrupted while
 * connecting, the socket is destroyed at once.
 */
export const connectInto = (
  leg: Leg,
  options: ConnectOptions,
  timeoutMillis: number,
  label?: string
): Effect.Effect<NodeDuplex, DuplexError> => {
  const initialLabel = connectLabel(options)
  const failed = (err: unknown) =>
    new DuplexError({
      reason: new ConnectFailed({
        label: initialLabel,
        address: describeAddress(options),
        code: codeOf(err),
        cause: err
      })
    })
  const connected = Effect.callback<net.Socket, DuplexError>((resume) => {
    const socket =
      "path" in options
        ? net.connect({ path: options.path, allowHalfOpen: true })
        : net.connect({
            host: options.host ?? "127.0.0.1",
            port: options.port,
            allowHalfOpen: true,
            noDelay: options.noDelay ?? true
          })
    leg.socket = socket
    const onConnect = () => {
      socket.off("error", onError)
      resume(Exit.succeed(socket))
    }
    const onError = (err: Error) => {
      socket.off("connect", onConnect)
      resume(Exit.fail(failed(err)))
    }
    socket.once("connect", onConnect).once("error", onError)
    return Effect.sync(() => socket.destroy())
  }).pipe(
    Effect.timeoutOrElse({
      duration: timeoutMillis,
      orElse: () =>
        Exit.fail(
          new DuplexError({
            reason: new ConnectFailed({
              label: initialLabel,
              address: describeAddress(options),
              code: "ETIMEDOUT",
              timeoutMillis
            })
          })
        )
    })
  )
  return Effect.flatMap(connected, (socket) =>
    Clock.clockWith((clock) =>
      Effect.sync(
        () =>
          (leg.duplex = makeUnsafe(
            socket,
            label ?? options.label ?? socketLabel(socket, options),
            options.highWaterMark ?? DEFAULT_HIGH_WATER_MARK_BYTES,
            clock
          ))
      )
    )
  )
}
