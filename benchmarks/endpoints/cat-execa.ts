/**
 * The execa anchor of the `cat` rows: N bytes through `cat` and back with execa 10's `duplex()`, in a
 * process with no fullduplex.
 *
 * `execa("cat", { buffer: false }).duplex()` (binary, the default of `duplex()`); written with `write()`,
 * waiting for `'drain'` when it returns false, then `end()`; counted and checked in `'data'`; done at the
 * duplex's `'end'` and the subprocess's promise (exit code 0). Timed from before the spawn until the child
 * has exited.
 */
import { once } from "node:events"
import { execa } from "execa"
import {
  Meter,
  mibPerSecond,
  options,
  PatternCheck,
  patternChunk,
  payloadBytes,
  WRITE_BYTES,
  writeRepeated
} from "../lib/common.js"

const meter = new Meter("client")
const bytes = payloadBytes(options())
const chunk = patternChunk()
const check = new PatternCheck()

meter.start()
const subprocess = execa("cat", { buffer: false })
const duplex = subprocess.duplex()
duplex.on("data", (piece: Buffer) => check.accept(piece))
const ended = once(duplex, "end")
await writeRepeated(duplex, chunk, bytes / WRITE_BYTES)
duplex.end()
await ended
const { exitCode } = await subprocess
if (exitCode !== 0) throw new Error(`cat exited with ${exitCode}`)
const ms = meter.elapsedMs()
check.verify("cat via execa duplex()", bytes)
meter.finish({ bytes, ms, mibps: mibPerSecond(bytes, ms) })
