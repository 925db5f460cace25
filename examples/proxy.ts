/**
 * A proxy that keeps half-closed conversations whole: the client sends its request and half-closes; the
 * upstream reads to that FIN, then answers. A proxy that closed both directions at the first FIN would
 * lose the answer; `Proxy.serve` passes the FIN on and keeps the other direction open until it is done.
 *
 * Run it with `npx tsx examples/proxy.ts`.
 */
import { Effect, Sink, Stream } from "effect"
import { Duplex, Proxy, Tcp } from "fullduplex"

const program = Effect.scoped(
  Effect.gen(function* () {
    // The upstream reads the whole request, up to the client's FIN, and only then answers.
    const upstream = yield* Tcp.serve({ port: 0 }, (conn) =>
      Effect.gen(function* () {
        const size = yield* Stream.runFold(
          conn.readable,
          () => 0,
          (n, chunk) => n + chunk.length
        )
        yield* conn.write(new TextEncoder().encode(`upstream read ${size} bytes, then answered`))
      })
    )
    const proxy = yield* Proxy.serve({ listen: { port: 0 }, target: upstream.address })

    const conn = yield* Tcp.connect(proxy.address)
    // Send 1 MiB, half-close, read the answer until EOF: all at once, with exchange.
    const answer = yield* Duplex.exchange(conn, Stream.make(new Uint8Array(1024 * 1024)), Sink.collect<Uint8Array>())
    yield* Effect.log(new TextDecoder().decode(Buffer.concat(answer)))
  })
)

Effect.runPromise(program)
