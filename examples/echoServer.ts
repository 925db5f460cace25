/**
 * The safe echo server: `Echo.serve` with the spill policy serves even a client that writes its whole
 * request before reading a byte, with memory bounded by `memoryBytes`.
 *
 * Run it with `npx tsx examples/echoServer.ts`.
 */
import { Effect, Sink, Stream } from "effect"
import { Echo, Tcp } from "fullduplex"

const program = Effect.scoped(
  Effect.gen(function* () {
    // 127.0.0.1, an ephemeral port; each connection in its own fiber, closed with a lingering close.
    // Closing the scope shuts the server down gracefully.
    const server = yield* Echo.serve({ port: 0, policy: Echo.spill({ memoryBytes: 4 * 1024 * 1024 }) })

    const conn = yield* Tcp.connect(server.address)
    yield* conn.write(new Uint8Array(32 * 1024 * 1024).fill(7)) // 32 MiB before reading anything
    yield* conn.end
    const echoed = yield* Stream.run(
      conn.readable,
      Sink.reduce(
        () => 0,
        (n, chunk: Uint8Array) => n + chunk.length
      )
    )

    const { spilledBytes, peakBufferedBytes } = yield* server.echo
    yield* Effect.log(
      `${echoed} bytes echoed; ${spilledBytes} went through a temporary file, ${peakBufferedBytes} at most in memory`
    )
  })
)

Effect.runPromise(program)
