/**
 * Ways to push a payload through `cat` and read it back, for `subprocess.ts` (in the bench process) and
 * `catProcess.ts` (in a process of its own, for memory). Each one spawns its own `cat`, writes the payload
 * to its stdin while it reads its stdout, checks what came back (byte count, and each piece's first and
 * last byte against the pattern sent) and the exit code, and returns only once the child is reaped.
 *
 * - {@link fullduplexCat}: `Subprocess.spawn("cat")` + `Duplex.exchange(proc, input, sink)`.
 * - {@link spawnCat}: `child_process.spawn("cat")`, writing stdin with 'drain' handling while it counts
 *   stdout's 'data' events: what a careful Node programmer writes by hand.
 * - {@link execaDuplexCat}: execa 10's `execa("cat", [], { buffer: false }).duplex()`, a Node `Duplex`
 *   over stdin and stdout, pumped both ways at once the same way.
 * - {@link execaInputCat}: execa's `input` option, the whole payload in one `Buffer`, with the whole of
 *   stdout captured into another (`encoding: "buffer"`): no streaming at all.
 */
import { Data, Effect, Stream } from "effect"
import { spawn } from "node:child_process"
import type { Readable, Writable } from "node:stream"
import { execa } from "execa"
import { Duplex, Subprocess } from "fullduplex"
import { type WriteProgress, writeAllThenEnd } from "./nodeStreams.js"
import { EchoCheck, echoCheckSink } from "./pattern.js"

/** `cat` ended with an exit code other than 0 (or by a signal). */
export class CatFailed extends Data.TaggedError("CatFailed")<{
  readonly what: string
  readonly exitCode: number | undefined
  readonly signal: string | undefined
}> {
  override get message(): string {
    return `${this.what}: cat ended with ${this.signal ?? `exit code ${this.exitCode}`}`
  }
}

const exitError = (what: string, exitCode: number | null | undefined, signal: string | null | undefined) =>
  exitCode === 0 ? undefined : new CatFailed({ what, exitCode: exitCode ?? undefined, signal: signal ?? undefined })

/** What the last run of a transfer saw: stdout's pieces, and (for the Node pumps) the writes. */
export interface CatObservation {
  /** Pieces of stdout the reader got (chunks of the sink, or 'data' events). */
  reads: number
  /** The Node pumps' `write()` calls, and how many of them returned false. */
  client: WriteProgress
  /** Time fullduplex's writes waited for stdin to drain. */
  writerBlockedMillis: number
}

export const emptyCatObservation = (): CatObservation => ({
  reads: 0,
  client: { writes: 0, drainWaits: 0 },
  writerBlockedMillis: 0
})

/** fullduplex: `Subprocess.spawn("cat")` and `Duplex.exchange`; the scope reaps the child. */
export const fullduplexCat = (
  input: Stream.Stream<Uint8Array>,
  payloadBytes: number,
  observation: CatObservation = emptyCatObservation()
): Effect.Effect<void, unknown> =>
  Effect.scoped(
    Effect.gen(function* () {
      const what = "Subprocess.spawn cat"
      const proc = yield* Subprocess.spawn("cat")
      const check = yield* Duplex.exchange(proc, input, echoCheckSink)
      yield* check.verify(`${what}: bytes read from stdout`, payloadBytes)
      const { exitCode, signal } = yield* proc.status
      const failed = exitError(what, exitCode, signal)
      if (failed !== undefined) return yield* failed
      const { outbound } = yield* proc.stats
      observation.reads = check.chunks
      observation.writerBlockedMillis = outbound.blockedMillis
    })
  )

/**
 * Writes `chunks` to `stdin` (honouring 'drain') while checking every 'data' chunk of `stdout`; resolves
 * when stdout has ended and `exited` has resolved with the exit status.
 */
const pump = (
  what: string,
  stdin: Writable,
  stdout: Readable,
  exited: Promise<{ exitCode: number | null | undefined; signal: string | null | undefined }>,
  chunks: ReadonlyArray<Uint8Array>,
  payloadBytes: number,
  observation: CatObservation
): Promise<void> =>
  new Promise<void>((resolve, reject) => {
    const check = new EchoCheck()
    stdout.on("data", (chunk: Buffer) => check.accept(chunk))
    stdout.once("error", reject)
    stdin.once("error", reject)
    const ended = new Promise<void>((done) => stdout.once("end", done))
    observation.client = writeAllThenEnd(stdin, chunks)
    Promise.all([ended, exited]).then(([, { exitCode, signal }]) => {
      observation.reads = check.chunks
      const error = exitError(what, exitCode, signal) ?? check.error(`${what}: bytes read from stdout`, payloadBytes)
      if (error === undefined) resolve()
      else reject(error)
    }, reject)
  })

/** Raw Node: `child_process.spawn("cat")`; stderr is drained as fullduplex drains it; waits for 'close'. */
export const spawnCat = (
  chunks: ReadonlyArray<Uint8Array>,
  payloadBytes: number,
  observation: CatObservation = emptyCatObservation()
): Promise<void> => {
  const child = spawn("cat", [], { stdio: ["pipe", "pipe", "pipe"] })
  child.stderr.resume()
  // 'close' comes after the exit and after every stdio stream has closed: the child is reaped by then.
  const closed = new Promise<{ exitCode: number | null; signal: string | null }>((resolve, reject) => {
    child.once("error", reject)
    child.once("close", (exitCode, signal) => resolve({ exitCode, signal }))
  })
  return pump("child_process.spawn cat", child.stdin, child.stdout, closed, chunks, payloadBytes, observation)
}

/** execa 10: `subprocess.duplex()` (binary by default); the child is reaped once the execa promise settles. */
export const execaDuplexCat = (
  chunks: ReadonlyArray<Uint8Array>,
  payloadBytes: number,
  observation: CatObservation = emptyCatObservation()
): Promise<void> => {
  // `buffer: false`: stdout goes to the duplex only, not also into a result buffer.
  const subprocess = execa("cat", [], { buffer: false })
  const duplex = subprocess.duplex()
  const result = subprocess.then(({ exitCode, signal }) => ({ exitCode, signal }))
  return pump("execa duplex cat", duplex, duplex, result, chunks, payloadBytes, observation)
}

/** `payloadBytes` of the pattern in one `Buffer`: what execa's `input` option needs. */
export const patternBuffer = (chunk: Uint8Array, payloadBytes: number): Buffer => {
  if (payloadBytes % chunk.length !== 0) throw new Error(`payload ${payloadBytes} is not a multiple of ${chunk.length}`)
  const buffer = Buffer.allocUnsafe(payloadBytes)
  for (let offset = 0; offset < payloadBytes; offset += chunk.length) buffer.set(chunk, offset)
  return buffer
}

/** execa 10 with `input`: the whole payload in, the whole of stdout back in one `Buffer`. */
export const execaInputCat = async (input: Buffer, pieceSize: number): Promise<void> => {
  const what = "execa input cat"
  const { stdout, exitCode, signal } = await execa("cat", [], {
    input,
    encoding: "buffer",
    maxBuffer: input.length,
    stripFinalNewline: false
  })
  const check = new EchoCheck()
  // Checked piece by piece, first and last byte, as the streaming transfers check what they read.
  for (let offset = 0; offset < stdout.length; offset += pieceSize) {
    check.accept(stdout.subarray(offset, offset + pieceSize))
  }
  const error = exitError(what, exitCode, signal) ?? check.error(`${what}: bytes of stdout`, input.length)
  if (error !== undefined) throw error
}
