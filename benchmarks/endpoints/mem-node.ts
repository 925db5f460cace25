/**
 * The anchors of the in-memory rows: Node's `PassThrough` (default options: 64 KiB `highWaterMark` on
 * each side), one process, no copies (every write is the same 64 KiB chunk).
 *
 * - `--mode=oneway --bytes=N`: `write()` into a PassThrough, waiting for `'drain'` when it returns false,
 *   then `end()`, while a `for await` loop counts and checks what comes out.
 * - `--mode=echo --bytes=N`: the client writes into `up` the same way; an echo task reads `up` with
 *   `for await` and writes each chunk to `down` (waiting for `'drain'`), then ends `down`; the client
 *   counts and checks `down` with `for await`.
 *
 * Timed from before the pipes are made until the reader has seen the end.
 */
import { once } from "node:events"
import { PassThrough, type Readable } from "node:stream"
import {
  Meter,
  mibPerSecond,
  options,
  PatternCheck,
  patternChunk,
  payloadBytes,
  required,
  WRITE_BYTES,
  writeRepeated
} from "../lib/common.js"

const meter = new Meter("client")
const opts = options()
const mode = required(opts, "mode")
const bytes = payloadBytes(opts)
const chunk = patternChunk()

const readAll = async (readable: Readable): Promise<PatternCheck> => {
  const check = new PatternCheck()
  for await (const piece of readable) check.accept(piece as Buffer)
  return check
}

meter.start()
let check: PatternCheck
if (mode === "oneway") {
  const pipe = new PassThrough()
  const reading = readAll(pipe)
  await writeRepeated(pipe, chunk, bytes / WRITE_BYTES)
  pipe.end()
  check = await reading
} else if (mode === "echo") {
  const up = new PassThrough()
  const down = new PassThrough()
  const echo = (async () => {
    for await (const piece of up) if (!down.write(piece)) await once(down, "drain")
    down.end()
  })()
  const reading = readAll(down)
  await writeRepeated(up, chunk, bytes / WRITE_BYTES)
  up.end()
  ;[, check] = await Promise.all([echo, reading])
} else {
  throw new Error(`unknown --mode=${mode}`)
}
const ms = meter.elapsedMs()
check.verify(`PassThrough ${mode}`, bytes)
meter.finish({ bytes, ms, mibps: mibPerSecond(bytes, ms), usPerWrite: (ms * 1000) / (bytes / WRITE_BYTES) })
