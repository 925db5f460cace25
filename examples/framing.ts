/**
 * Whole messages over a byte stream: `Framing` puts a 5-byte header (kind, 32-bit length) in front of each
 * payload, so the reader gets back exactly the messages that were sent, however the bytes were cut on the
 * way. A message over `maxFrameBytes` fails typed, `FrameTooLarge`, before a byte of it is written (and on
 * the reading side, before anything is allocated for it).
 *
 * Run it with `npx tsx examples/framing.ts`.
 */
import { Effect, Fiber, Stream } from "effect"
import { Duplex, Framing } from "fullduplex"

const text = (s: string) => new TextEncoder().encode(s)

const program = Effect.scoped(
  Effect.gen(function* () {
    // A 1 KiB buffer each way: a 100 KiB message crosses it in a hundred pieces and arrives whole.
    const [a, b] = yield* Duplex.pair({ capacity: 1024 })
    const client = yield* Framing.make(a, { maxFrameBytes: 256 * 1024 })
    const server = yield* Framing.make(b, { maxFrameBytes: 256 * 1024 })

    // The reader runs in a fiber of its own, so that sending never waits on reading.
    const received = yield* Effect.forkScoped(Stream.runCollect(server.frames))

    yield* client.send(Framing.data(text("hello")))
    yield* client.send(Framing.control(text("pause"))) // a notice, in order with the data
    yield* client.send(Framing.data(new Uint8Array(100 * 1024).fill(1)))

    // Over the limit: nothing is written, the error says what to do, and the connection stays usable.
    const refused = yield* client.send(Framing.data(new Uint8Array(1024 * 1024))).pipe(
      Effect.as("sent"),
      Effect.catchReason("DuplexError", "FrameTooLarge", (reason) => Effect.succeed(reason.message))
    )
    yield* client.send(Framing.data(text("bye")))
    yield* client.end

    const frames = yield* Fiber.join(received)
    const summary = frames.map((f) => `${f._tag} ${f.payload.length} B`).join(", ")
    yield* Effect.log(`received ${frames.length} frames: ${summary}`)
    yield* Effect.log(`the 1 MiB message: ${refused}`)
  })
)

Effect.runPromise(program)
