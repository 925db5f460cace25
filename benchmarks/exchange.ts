/**
 * `Duplex.exchange` through an echo peer over `Duplex.pair`, against the same echo built from raw Node
 * `PassThrough`s.
 *
 * Subject: the server side echoes (`Stream.run(server.readable, server.sink)` then `server.end`) in a
 * forked fiber, while the client runs `Duplex.exchange(client, input, countBytes)`: it writes the payload
 * and half-closes while counting the echoed bytes. Baseline: the client writes into PassThrough `up`
 * (honouring `'drain'`), an echo moves every chunk of `up` into PassThrough `down` (holding `up` back
 * until `down` drains), and the client counts what comes out of `down`; writing and reading are
 * concurrent. Each pair direction gets the capacity of one default PassThrough (writable + readable
 * highWaterMark), so both sides buffer the same per direction.
 *
 * Node runs a `'data'` listener synchronously inside `write()`, so in the baseline a chunk normally travels
 * client → echo → client in one call stack without being buffered (RESULTS.md reports how many writes had
 * to wait). There is no `for await` variant (as there
 * is for the pair): with two PassThroughs in a row, `for await` reads join buffered chunks with a copy, so
 * it would not move the same bytes the same way.
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

interface ExchangeObservation {
  peakUp: number
  peakDown: number
}

interface EchoObservation {
  client: WriteProgress
  echoWaits: number
  /** Chunks the client read back: fewer than written means Node joined (copied) buffered chunks. */
  reads: number
}

const exchangeRun = (
  capacity: number,
  input: Stream.Stream<Uint8Array>,
  payloadBytes: number,
  observation: ExchangeObservation
) =>
  Effect.scoped(
    Effect.gen(function* () {
      const [client, server] = yield* Duplex.pair({ capacity })
      yield* Effect.forkScoped(Stream.run(server.readable, server.sink).pipe(Effect.andThen(server.end)))
      const received = yield* Duplex.exchange(client, input, countBytes)
      yield* verifyBytes("exchange: bytes echoed back to the client", payloadBytes, received)
      const stats = yield* client.stats
      observation.peakUp = stats.outbound.peakBuffered
      observation.peakDown = stats.inbound.peakBuffered
    })
  )

/** `'data'` events: the echo pauses `up` while `down` is full; the client counts `down`'s events. */
const passThroughEchoRun = (chunks: ReadonlyArray<Uint8Array>, payloadBytes: number, observation: EchoObservation) =>
  new Promise<void>((resolve, reject) => {
    const up = new PassThrough() // client → server
    const down = new PassThrough() // server → client
    up.on("error", reject)
    down.on("error", reject)
    // server: echo every chunk back, holding `up` while `down` is full
    let echoWaits = 0
    const resumeUp = () => up.resume()
    up.on("data", (chunk: Buffer) => {
      if (!down.write(chunk)) {
        echoWaits++
        up.pause()
        down.once("drain", resumeUp)
      }
    })
    up.on("end", () => down.end())
    // client: read the echo while writing
    let received = 0
    let reads = 0
    down.on("data", (chunk: Buffer) => {
      received += chunk.length
      reads++
    })
    down.on("end", () => {
      observation.echoWaits = echoWaits
      observation.reads = reads
      const error = byteCountError("PassThrough echo: bytes echoed back", payloadBytes, received)
      if (error === undefined) resolve()
      else reject(error)
    })
    observation.client = writeAllThenEnd(up, chunks)
  })

const exchangeCase = (writeSize: number, payloadBytes: number): BenchCase => {
  const capacity = passThroughBuffering()
  const chunks = makeChunks(writeSize, payloadBytes)
  const input = Stream.fromIterable(chunks)
  const exchangeObservation: ExchangeObservation = { peakUp: 0, peakDown: 0 }
  const echoObservation: EchoObservation = { client: { writes: 0, drainWaits: 0 }, echoWaits: 0, reads: 0 }
  return {
    name: `exchange echo ${formatBytes(writeSize)} writes`,
    writeSize,
    payloadBytes,
    description:
      `\`Duplex.exchange\` over \`Duplex.pair({ capacity: ${capacity} })\`: the client sends ${chunks.length} ` +
      `chunks of ${formatBytes(writeSize)} (${formatBytes(payloadBytes)}, from \`Stream.fromIterable\`) to a ` +
      `server fiber that echoes them (\`Stream.run(server.readable, server.sink)\` then \`server.end\`) and ` +
      `counts the ${formatBytes(payloadBytes)} that come back; the baseline is the same echo over two default ` +
      `\`PassThrough\`s (each ${describePassThroughBuffering(formatBytes)}), the client writing into one with ` +
      `'drain' handling while counting the other's 'data' events, and an echo loop pausing the first while the ` +
      `second is full.`,
    subject: {
      label: "exchange",
      run: () => Effect.runPromise(exchangeRun(capacity, input, payloadBytes, exchangeObservation))
    },
    baseline: { label: "PassThrough echo", run: () => passThroughEchoRun(chunks, payloadBytes, echoObservation) },
    observed: () =>
      `in the last runs the pair buffered at most ${formatBytes(exchangeObservation.peakUp)} client → server and ` +
      `${formatBytes(exchangeObservation.peakDown)} server → client; in the baseline the client's \`write()\` ` +
      `returned false for ${echoObservation.client.drainWaits} of ${echoObservation.client.writes} writes and ` +
      `the echo waited for 'drain' ${echoObservation.echoWaits} times, and the client read the echo in ` +
      `${echoObservation.reads} chunks`
  }
}

export const cases: ReadonlyArray<BenchCase> = [exchangeCase(64 * 1024, 16 * GiB)]
