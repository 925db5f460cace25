/**
 * The `child_process.spawn` anchor of the `cat` rows: N bytes through `cat` and back, in a process with no
 * fullduplex (and no execa: each anchor loads only what it uses).
 *
 * `spawn("cat")`; stdin written with `write()`, waiting for `'drain'` when it returns false, then `end()`;
 * stdout counted and checked in `'data'`; done at `'close'`, whose exit code must be 0. Timed from before
 * the spawn until the child has exited. Run with `--import effect` (the runner's "raw Node in a process that
 * loaded Effect") it is the same code in a process that has loaded Effect first.
 */
import { spawn } from "node:child_process"
import { once } from "node:events"
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
const child = spawn("cat", [], { stdio: ["pipe", "pipe", "inherit"] })
child.stdout.on("data", (piece: Buffer) => check.accept(piece))
const closed = once(child, "close")
await writeRepeated(child.stdin, chunk, bytes / WRITE_BYTES)
child.stdin.end()
const [code, signal] = (await closed) as [number | null, NodeJS.Signals | null]
if (code !== 0) throw new Error(`cat exited with ${code ?? signal}`)
const ms = meter.elapsedMs()
check.verify("cat via child_process.spawn", bytes)
meter.finish({ bytes, ms, mibps: mibPerSecond(bytes, ms) })
