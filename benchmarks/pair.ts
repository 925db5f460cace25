/**
 * One-way throughput of `Duplex.pair` against a raw Node `PassThrough`.
 *
 * Subject: one fiber writes the payload into side `a` (one `write` per chunk), then `end`s; a second
 * fiber runs `b.readable` into a byte-counting sink. Baseline: the same chunks written into a default
 * `PassThrough` (waiting for `'drain'` whenever `write()` returns `false`) and counted in `'data'` events.
 * The pair gets the PassThrough's total buffering (writable + readable highWaterMark) as its capacity.
 * No path copies or inspects bytes: chunks are passed by reference on both sides.
 *
 * An extra row reads the PassThrough with `for await` instead of `'data'` events: a `'data'` listener runs
 * synchronously inside `write()`, so that baseline normally never buffers or waits, while an asynchronous
 * reader, like the pair's reader fiber, makes the PassThrough buffer and apply backpressure.
 */
import { Effect, Stream } from "effect"
import { PassThrough } from "node:stream"
import { Duplex } from "fullduplex"
import {
  type BenchCase,
  byteCountError,
  chunks as makeChunks,
  countBytes,
  formatBytes,
  verifyBytes
} from "./harness.js"
import {
  describePassThroughBuffering,
  passThroughBuffering,
  type WriteProgress,
  writeAllThenEnd
} from "./nodeStreams.js"

const GiB = 1024 * 1024 * 1024

interface PairObservation {
  peakBuffered: number
  blockedMillis: number
}

const pairRun = (
  capacity: number,
  chunks: ReadonlyArray<Uint8Array>,
  payloadBytes: number,
  observation: PairObservation
) =>
  Effect.scoped(
    Effect.gen(function* () {
      const [a, b] = yield* Duplex.pair({ capacity })
      const writer = Effect.gen(function* () {
        for (const chunk of chunks) yield* a.write(chunk)
        yield* a.end
      })
      const reader = Stream.run(b.readable, countBytes)
      const [, received] = yield* Effect.all([writer, reader], { concurrency: 2 })
      yield* verifyBytes("pair: bytes read from b", payloadBytes, received)
      const { outbound } = yield* a.stats
      observation.peakBuffered = outbound.peakBuffered
      observation.blockedMillis = outbound.blockedMillis
    })
  )

interface PassThroughObservation {
  writer: WriteProgress
  /** Chunks the reader got: fewer than written means Node joined (copied) buffered chunks. */
  reads: number
}

/** Reads with `'data'` events: the listener runs inside `write()`. */
const passThroughRun = (chunks: ReadonlyArray<Uint8Array>, payloadBytes: number, observation: PassThroughObservation) =>
  new Promise<void>((resolve, reject) => {
    const pt = new PassThrough()
    let received = 0
    let reads = 0
    pt.on("data", (chunk: Buffer) => {
      received += chunk.length
      reads++
    })
    pt.on("error", reject)
    pt.on("end", () => {
      observation.reads = reads
      const error = byteCountError("PassThrough: bytes read", payloadBytes, received)
      if (error === undefined) resolve()
      else reject(error)
    })
    observation.writer = writeAllThenEnd(pt, chunks)
  })

/** Reads with `for await`: the reader runs in its own turns of the event loop, as a fiber does. */
const passThroughAsyncRun = async (
  chunks: ReadonlyArray<Uint8Array>,
  payloadBytes: number,
  observation: PassThroughObservation
): Promise<void> => {
  const pt = new PassThrough()
  const writer = writeAllThenEnd(pt, chunks)
  let received = 0
  let reads = 0
  for await (const chunk of pt as AsyncIterable<Buffer>) {
    received += chunk.length
    reads++
  }
  observation.writer = writer
  observation.reads = reads
  const error = byteCountError("PassThrough (for await): bytes read", payloadBytes, received)
  if (error !== undefined) throw error
}

const describeObservations = (pair: PairObservation, pt: PassThroughObservation): string =>
  `in the last runs the pair buffered at most ${formatBytes(pair.peakBuffered)} and its writer was held ` +
  `back ${pair.blockedMillis.toFixed(0)} ms in total; \`PassThrough.write()\` returned false for ` +
  `${pt.writer.drainWaits} of ${pt.writer.writes} writes and the reader got ${pt.reads} chunks` +
  (pt.reads < pt.writer.writes ? " (Node joined buffered chunks with a copy for the difference)" : "")

const pairCase = (
  writeSize: number,
  payloadBytes: number,
  options: { readonly asyncReader?: boolean; readonly targets?: BenchCase["targets"] } = {}
): BenchCase => {
  const capacity = passThroughBuffering()
  const chunks = makeChunks(writeSize, payloadBytes)
  const pairObservation: PairObservation = { peakBuffered: 0, blockedMillis: 0 }
  const ptObservation: PassThroughObservation = { writer: { writes: 0, drainWaits: 0 }, reads: 0 }
  const asyncReader = options.asyncReader === true
  const baselineReader = asyncReader
    ? "reads it with `for await (const chunk of passThrough)`"
    : "counts them in 'data' events"
  return {
    name: `pair ${formatBytes(writeSize)} writes${asyncReader ? ", for-await baseline" : ""}`,
    writeSize,
    payloadBytes,
    description:
      `one direction of \`Duplex.pair({ capacity: ${capacity} })\`: a fiber writes ${chunks.length} chunks of ` +
      `${formatBytes(writeSize)} (${formatBytes(payloadBytes)}) into side a with \`a.write\` and ends, while ` +
      `another runs \`b.readable\` into a byte-counting sink; the baseline writes the same chunks into one ` +
      `default \`PassThrough\` (${describePassThroughBuffering(formatBytes)}, ` +
      `waiting for 'drain' whenever \`write()\` returns false) and ${baselineReader}.`,
    subject: {
      label: "Duplex.pair",
      run: () => Effect.runPromise(pairRun(capacity, chunks, payloadBytes, pairObservation))
    },
    baseline: asyncReader
      ? { label: "PassThrough for-await", run: () => passThroughAsyncRun(chunks, payloadBytes, ptObservation) }
      : { label: "PassThrough", run: () => passThroughRun(chunks, payloadBytes, ptObservation) },
    targets: options.targets,
    observed: () => describeObservations(pairObservation, ptObservation)
  }
}

export const cases: ReadonlyArray<BenchCase> = [
  pairCase(64 * 1024, 64 * GiB, { targets: { minSubjectBytesPerSecond: GiB, minRatio: 0.5 } }),
  pairCase(1024 * 1024, 1024 * GiB),
  pairCase(64 * 1024, 16 * GiB, { asyncReader: true })
]
