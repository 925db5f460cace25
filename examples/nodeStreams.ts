/**
 * Node streams as duplexes: `Duplex.fromNodeDuplex` takes any Node `stream.Duplex` and gives it
 * fullduplex's bounded buffers and concurrent combinators.
 *
 * First a Node `Transform` that upper-cases bytes: 4 MiB go through it with `Duplex.exchange`. Written
 * first and read after, they would hang as soon as the transform's output buffer filled, since a transform
 * stops taking input while nobody reads its output. Then a separate `Readable` and `Writable`, joined
 * with Node's `stream.Duplex.from({ readable, writable })`: read from one, write into the other.
 *
 * Run it with `npx tsx examples/nodeStreams.ts`.
 */
import { Effect, Sink, Stream } from "effect"
import * as NodeStream from "node:stream"
import { Duplex } from "fullduplex"

const KiB = 1024

const upperCase = () =>
  new NodeStream.Transform({
    transform(chunk: Buffer, _encoding, callback) {
      const out = Buffer.from(chunk)
      for (let i = 0; i < out.length; i++) if (out[i]! >= 0x61 && out[i]! <= 0x7a) out[i] = out[i]! - 0x20
      callback(null, out)
    }
  })

const program = Effect.scoped(
  Effect.gen(function* () {
    const transform = yield* Duplex.fromNodeDuplex(upperCase(), { label: "upper-case transform" })
    const chunk = new TextEncoder().encode("fullduplex ".repeat(6000))
    const input = Stream.range(1, 64).pipe(Stream.map(() => chunk)) // 4.2 MB
    const output = yield* Duplex.exchange(transform, input, Sink.collect<Uint8Array>())
    const upper = Buffer.concat(output)
    yield* Effect.log(`${upper.length} bytes through a Node Transform, starting "${upper.subarray(0, 21)}"`)

    // A Readable and a Writable that know nothing of each other, as one duplex.
    let written = 0
    const readable = NodeStream.Readable.from([Buffer.from("first line\n"), Buffer.from("second line\n")], {
      objectMode: false
    })
    const writable = new NodeStream.Writable({
      write(chunk: Buffer, _encoding, callback) {
        written += chunk.length
        callback()
      }
    })
    const joined = yield* Duplex.fromNodeDuplex(NodeStream.Duplex.from({ readable, writable }), { label: "joined" })
    const [, lines] = yield* Effect.all(
      [
        Effect.andThen(joined.write(new Uint8Array(256 * KiB)), joined.end),
        Stream.runCollect(joined.readable.pipe(Stream.decodeText(), Stream.splitLines))
      ],
      { concurrency: 2 }
    )
    yield* Effect.log(`read ${JSON.stringify(lines)} from the Readable; ${written} bytes went into the Writable`)
  })
)

Effect.runPromise(program)
