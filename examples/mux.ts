/**
 * Many conversations over one TCP connection, none blocking another: `Mux` (yamux on the wire) gives
 * each stream its own flow control. Here one stream's reader never reads, and the other streams still
 * move megabytes.
 *
 * Run it with `npx tsx examples/mux.ts`.
 */
import { Effect, Sink, Stream } from "effect"
import { Duplex, Mux, Tcp } from "fullduplex"

const program = Effect.scoped(
  Effect.gen(function* () {
    // The server side: every stream it accepts is echoed back, in a fiber of its own.
    const server = yield* Tcp.serve({ port: 0 }, (conn) =>
      Effect.scoped(
        Effect.gen(function* () {
          const session = yield* Mux.server(conn)
          yield* session.accept.pipe(
            Effect.flatMap((stream) =>
              Effect.forkScoped(Stream.run(stream.readable, stream.sink).pipe(Effect.andThen(stream.end)))
            ),
            Effect.forever,
            // The client's session closed gracefully: the handler returns, the connection completes.
            Effect.catchReason("DuplexError", "SessionEnded", () => Effect.void)
          )
        })
      )
    )

    const session = yield* Mux.client(yield* Tcp.connect(server.address))
    // A stream whose echo nobody reads: once its window is full, only this stream waits.
    const stuck = yield* session.open
    yield* Effect.forkScoped(stuck.write(new Uint8Array(8 * 1024 * 1024)))

    const chunk = new Uint8Array(64 * 1024).fill(1)
    const echoed = yield* Effect.forEach(
      [1, 2, 3],
      () =>
        Effect.gen(function* () {
          const stream = yield* session.open
          const input = Stream.range(1, 64).pipe(Stream.map(() => chunk)) // 4 MiB
          return yield* Duplex.exchange(
            stream,
            input,
            Sink.reduce(
              () => 0,
              (n, bytes: Uint8Array) => n + bytes.length
            )
          )
        }),
      { concurrency: 3 }
    )
    const { peakBufferedBytes } = yield* session.stats
    yield* Effect.log(
      `echoed ${echoed.join(", ")} bytes while one stream stood still; peak buffered ${peakBufferedBytes} bytes`
    )
  })
)

Effect.runPromise(program)
