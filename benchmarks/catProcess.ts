/**
 * A process of its own that pushes a payload through `cat` on request, for the memory row of
 * `benchmarks/subprocess.ts`: the bench process asks for runs, this process reports how much resident
 * memory they took.
 *
 * Started with `fork` (an IPC channel) and three arguments: the {@link RunnerKind}, the payload in bytes
 * and the write size. Every kind loads the same modules (`catTransfers.ts` imports fullduplex, effect and
 * execa), so their idle figures compare.
 *
 * - `fullduplex`: `Subprocess.spawn("cat")` + `Duplex.exchange`, from a preallocated chunk.
 * - `spawn`: `child_process.spawn("cat")` pumped by hand, from the same chunk.
 * - `execa-input`: `execa("cat", [], { input })`, the whole payload in one `Buffer`, filled at the start
 *   of the run (after the idle figure, before the timed transfer).
 *
 * Messages, as {@link ToParent} and {@link ToChild}:
 *
 * - `Ready` (once): the idle {@link Usage}, sampled {@link SETTLE_MILLIS} after start-up, before any run.
 * - `Run` → `Ran`: one transfer (its duration, without filling `execa-input`'s buffer), the highest RSS
 *   and `ArrayBuffer` memory sampled during it (every `SAMPLE_MILLIS` of memory.ts, and once more at its end),
 *   the usage once the input buffer was filled (`execa-input` only), and the kernel's high-water mark of
 *   the process's RSS (`ru_maxrss`), which sampling cannot miss (but which also covers start-up and every
 *   earlier run). A run that fails answers `Failed`.
 * - `Stop`: exit.
 */
import { Effect, Stream } from "effect"
import {
  emptyCatObservation,
  execaInputCat,
  fullduplexCat,
  patternBuffer,
  spawnCat,
  type CatObservation
} from "./catTransfers.js"
import { peakSampler, type Usage, usageNow } from "./memory.js"
import { patternChunk, repeat } from "./pattern.js"

/** How often RSS is sampled during a run. */
/** How long after start-up the idle RSS is taken. */
export const SETTLE_MILLIS = 250

export type RunnerKind = "fullduplex" | "spawn" | "execa-input"

export type ToParent =
  | { readonly _tag: "Ready"; readonly idle: Usage }
  | {
      readonly _tag: "Ran"
      readonly idle: Usage
      /** The highest of each figure sampled during the run (not necessarily at one instant). */
      readonly peak: Usage
      /** `execa-input` only: the usage right after the input buffer was filled, before the transfer. */
      readonly withInput: Usage | undefined
      /** The kernel's peak RSS of this process since it started (`ru_maxrss`). */
      readonly maxRssBytes: number
      /** Duration of the transfer alone. */
      readonly millis: number
      readonly observation: CatObservation
    }
  | { readonly _tag: "Failed"; readonly message: string }

export type ToChild = { readonly _tag: "Run" } | { readonly _tag: "Stop" }

const send = (message: ToParent): void => {
  process.send?.(message)
}

const main = async (kind: RunnerKind, payloadBytes: number, writeSize: number): Promise<void> => {
  const chunk = patternChunk(writeSize)
  const chunks = kind === "execa-input" ? [] : repeat(chunk, payloadBytes)
  const input = Stream.fromIterable(chunks)
  await new Promise((resolve) => setTimeout(resolve, SETTLE_MILLIS))
  const idle = usageNow()

  /** One transfer: the time it took and what it saw; `withInput` for `execa-input`. */
  const transfer = async (): Promise<{ millis: number; observation: CatObservation; withInput?: Usage }> => {
    const observation = emptyCatObservation()
    if (kind === "execa-input") {
      const buffer = patternBuffer(chunk, payloadBytes)
      const withInput = usageNow()
      const start = performance.now()
      await execaInputCat(buffer, writeSize)
      return { millis: performance.now() - start, observation, withInput }
    }
    const start = performance.now()
    if (kind === "fullduplex") await Effect.runPromise(fullduplexCat(input, payloadBytes, observation))
    else await spawnCat(chunks, payloadBytes, observation)
    return { millis: performance.now() - start, observation }
  }

  const run = async (): Promise<void> => {
    const sampler = peakSampler()
    try {
      const { millis, observation, withInput } = await transfer()
      const peak = sampler.take()
      const maxRssBytes = process.resourceUsage().maxRSS * 1024
      send({ _tag: "Ran", idle, peak, withInput, maxRssBytes, millis, observation })
    } catch (error) {
      send({ _tag: "Failed", message: error instanceof Error ? error.message : String(error) })
    } finally {
      sampler.stop()
    }
  }

  process.on("message", (message: ToChild) => {
    switch (message._tag) {
      case "Run":
        void run()
        return
      case "Stop":
        process.disconnect()
        return
    }
  })
  send({ _tag: "Ready", idle })
}

const [kind, payload, write] = process.argv.slice(2)
if (kind !== "fullduplex" && kind !== "spawn" && kind !== "execa-input") {
  throw new Error(`usage: catProcess.ts fullduplex|spawn|execa-input PAYLOAD_BYTES WRITE_SIZE (got ${kind})`)
}
const payloadBytes = Number(payload)
const writeSize = Number(write)
if (!Number.isSafeInteger(payloadBytes) || !Number.isSafeInteger(writeSize) || writeSize < 1) {
  throw new Error(`catProcess.ts: bad payload ${payload} or write size ${write}`)
}
if (process.send === undefined) throw new Error("catProcess.ts must be started with fork (an IPC channel)")
await main(kind, payloadBytes, writeSize)
