/**
 * The anchors of the `cat` rows: N bytes through `cat` and back, in a process with no fullduplex.
 *
 * - `--peer=spawn`: `child_process.spawn("cat")`; stdin written with `write()`, waiting for `'drain'`
 *   when it returns false, then `end()`; stdout counted and checked in `'data'`; done at `'close'`, whose
 *   exit code must be 0.
 * - `--peer=execa`: execa 10, `execa("cat", { buffer: false }).duplex()` (binary, the default of
 *   `duplex()`), written and read the same way; done at the duplex's `'end'` and the subprocess's promise.
 *
 * Timed from before the spawn until the child has exited. Run with `--import effect` (the runner's "raw
 * Node in a process that loaded Effect") it is the same code in a process that has loaded Effect first.
 */
import { spawn } from "node:child_process"
import { once } from "node:events"
import { execa } from "execa"
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
const peer = required(opts, "peer")
const bytes = payloadBytes(opts)
const chunk = patternChunk()
const check = new PatternCheck()

meter.start()
if (peer === "spawn") {
  const child = spawn("cat", [], { stdio: ["pipe", "pipe", "inherit"] })
  child.stdout.on("data", (piece: Buffer) => check.accept(piece))
  const closed = once(child, "close")
  await writeRepeated(child.stdin, chunk, bytes / WRITE_BYTES)
  child.stdin.end()
  const [code, signal] = (await closed) as [number | null, NodeJS.Signals | null]
  if (code !== 0) throw new Error(`cat exited with ${code ?? signal}`)
} else if (peer === "execa") {
  const subprocess = execa("cat", { buffer: false })
  const duplex = subprocess.duplex()
  duplex.on("data", (piece: Buffer) => check.accept(piece))
  const ended = once(duplex, "end")
  await writeRepeated(duplex, chunk, bytes / WRITE_BYTES)
  duplex.end()
  await ended
  const { exitCode } = await subprocess
  if (exitCode !== 0) throw new Error(`cat exited with ${exitCode}`)
} else {
  throw new Error(`unknown --peer=${peer}`)
}
const ms = meter.elapsedMs()
check.verify(`cat via ${peer}`, bytes)
meter.finish({ bytes, ms, mibps: mibPerSecond(bytes, ms) })
