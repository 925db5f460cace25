import { Effect } from "effect"
import * as net from "node:net"

/**
 * Both ends of one TCP connection on 127.0.0.1 (ephemeral port, half-open allowed): `[client, accepted]`.
 * The listening server is closed when the scope closes; the sockets belong to the caller.
 */
export const loopbackSockets = Effect.gen(function* () {
  const server = net.createServer({ allowHalfOpen: true })
  yield* Effect.addFinalizer(() => Effect.sync(() => server.close()))
  return yield* Effect.callback<readonly [net.Socket, net.Socket]>((resume) => {
    let client: net.Socket | undefined
    let accepted: net.Socket | undefined
    const ready = () => {
      if (client !== undefined && accepted !== undefined && !client.connecting)
        resume(Effect.succeed([client, accepted]))
    }
    server.once("connection", (socket) => {
      accepted = socket
      ready()
    })
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo
      client = net.connect({ host: "127.0.0.1", port, allowHalfOpen: true })
      client.on("error", () => {}).once("connect", ready)
    })
  })
})
