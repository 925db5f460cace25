/**
 * gzip through a child process, without the classic deadlock: 16 MiB go into `gzip -c` while its output is
 * read. Written first and read after, the bytes would stop as soon as gzip's stdout pipe filled: gzip
 * waits for us to read, we wait for gzip to read. `Subprocess.pipeThrough` feeds stdin from a fiber of its
 * own while the stream reads stdout. The result is checked twice: by Node's zlib, and by piping the
 * compressed stream on through `gunzip -c`.
 *
 * Run it with `npx tsx examples/gzip.ts`.
 */
import { Effect, Sink, Stream } from "effect"
import * as zlib from "node:zlib"
import { Subprocess } from "fullduplex"
import { concatBytes, firstDifference, randomBytes } from "fullduplex/testkit"

const MiB = 1024 * 1024

const program = Effect.gen(function* () {
  // Letters drawn from a 16-letter alphabet: compressible, but gzip has work to do.
  const block = randomBytes(MiB, 42).map((b) => 0x61 + (b % 16))
  const input = Stream.range(1, 16).pipe(Stream.map(() => block)) // 16 MiB
  const original = concatBytes(Array.from({ length: 16 }, () => block))

  const gzipped = concatBytes(yield* Stream.runCollect(input.pipe(Subprocess.pipeThrough("gzip", ["-c"]))))
  const byZlib = zlib.gunzipSync(gzipped)

  // The same bytes on through gunzip: two children in a row, each fed while it is read.
  const roundTrip = yield* input.pipe(
    Subprocess.pipeThrough("gzip", ["-c"]),
    Subprocess.pipeThrough("gunzip", ["-c"]),
    Stream.run(
      Sink.reduce(
        () => ({ bytes: 0, same: true }),
        (acc, chunk: Uint8Array) => ({
          bytes: acc.bytes + chunk.length,
          same: acc.same && firstDifference(chunk, original.subarray(acc.bytes, acc.bytes + chunk.length)) === -1
        })
      )
    )
  )

  const exact = firstDifference(byZlib, original) === -1 && roundTrip.same && roundTrip.bytes === original.length
  if (!exact) return yield* Effect.die(new Error("the round trip through gzip changed the bytes"))
  yield* Effect.log(
    `${original.length} bytes gzipped to ${gzipped.length} (zlib.gunzipSync: identical; gzip | gunzip: identical)`
  )
})

Effect.runPromise(program)
