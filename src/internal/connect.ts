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

/** The longest delay `setTimeout` takes (2^31 − 1 ms); a longer one would fire at once. */
const MAX_TIMER_MILLIS = 2_147_483_647

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
  // The connect timeout is a timer of the callback's own, not `Effect.timeout` (a race of two fibers per
  // connect): a proxy makes one connect per connection.
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
      clearTimeout(timer)
      socket.off("error", onError)
      resume(Exit.succeed(socket))
    }
    const onError = (err: Error) => {
      clearTimeout(timer)
      socket.off("connect", onConnect)
      resume(Exit.fail(failed(err)))
    }
    // Beyond setTimeout's range (about 24.8 days, and `Infinity`) there is no limit.
    const timer =
      timeoutMillis <= MAX_TIMER_MILLIS
        ? setTimeout(() => {
            // The listeners stay: an error the destroy might still bring finds `onError`, whose resume is then
            // a no-op.
            socket.destroy()
            resume(
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
            )
          }, timeoutMillis)
        : undefined
    socket.once("connect", onConnect).once("error", onError)
    return Effect.sync(() => {
      clearTimeout(timer)
      socket.destroy()
    })
  })
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
