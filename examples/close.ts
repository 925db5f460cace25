/**
 * Ending a TCP conversation without losing its last bytes.
 *
 * The server answers 1 MiB after reading only the first KiB of a 16 MiB upload. Closing then would make
 * the kernel reset the connection over the unread upload, and the reset can destroy the end of the answer
 * before the client reads it. `Close.lingering` (Tcp.serve's default) sends FIN, then reads and discards
 * the rest of the upload until the client's FIN, and only then closes.
 *
 * The client shuts down asymmetrically: with `Duplex.exchange` it half-closes once its upload is sent and
 * reads on, to the server's FIN. A second client sends a line and ends with `Close.halfClose`: FIN, then
 * read (and discard) to the server's FIN within a timeout.
 *
 * Run it with `npx tsx examples/close.ts`.
 */
import { Effect, Queue, Sink, Stream } from "effect"
import { Close, Duplex, Tcp } from "fullduplex"

const KiB = 1024
const MiB = 1024 * KiB

const program = Effect.scoped(
  Effect.gen(function* () {
    const closes = yield* Queue.unbounded<Close.CloseOutcome | undefined>()
    const server = yield* Tcp.serve(
      {
        port: 0,
        close: Close.lingering({ lingerTimeout: "2 seconds" }),
        onEvent: (event) =>
          event._tag === "ConnectionClosed" ? Effect.asVoid(Queue.offer(closes, event.close)) : Effect.void
      },
      // Reads a KiB of the request (or all of a shorter one), answers 1 MiB and returns: the close does the rest.
      (conn) =>
        Effect.gen(function* () {
          let read = 0
          yield* Stream.runDrain(conn.readable.pipe(Stream.takeUntil((chunk) => (read += chunk.length) >= KiB)))
          yield* conn.write(new Uint8Array(MiB).fill(1))
        })
    )

    // Upload 16 MiB, half-close when it is sent, and read the answer to the server's FIN, all at once.
    const uploader = yield* Tcp.connect(server.address)
    const answer = yield* Duplex.exchange(
      uploader,
      Stream.range(1, 256).pipe(Stream.map(() => new Uint8Array(64 * KiB))),
      Sink.reduce(
        () => 0,
        (n, chunk: Uint8Array) => n + chunk.length
      )
    )
    const first = yield* Queue.take(closes)
    yield* Effect.log(
      `uploader: ${answer} bytes of answer, whole; the server's close: ${first?.ending}, ${first?.discardedBytes} unread bytes discarded`
    )

    // A short request, then a clean client-side end: FIN, and the server's answer read and discarded to its FIN.
    const talker = yield* Tcp.connect(server.address)
    yield* talker.write(new TextEncoder().encode("just one line\n"))
    const own = yield* Close.halfClose(talker, { timeout: "5 seconds" })
    const second = yield* Queue.take(closes)
    yield* Effect.log(
      `talker: halfClose ${own.ending} after discarding ${own.discardedBytes} bytes; the server's close: ${second?.ending}`
    )
  })
)

Effect.runPromise(program)
