/**
 * What every endpoint process of `npm run bench` shares: its options, the payload and its check, the
 * measurements it takes of itself, and the lines it prints for the runner.
 *
 * This module imports nothing but `node:` modules, so that a baseline endpoint that imports it loads
 * neither `effect` nor `fullduplex`.
 *
 * The protocol with the runner (`benchmarks/run.ts`), on stdout, one JSON object per line:
 *
 * - `READY {"port":N}`: a server is listening (its CPU time is counted from here);
 * - `RESULT {...}`: the process's figures, printed once, last, just before it exits with code 0.
 *
 * Anything else on stdout or stderr is noise the runner reports. A failed check throws: the process exits
 * with a non-zero code and the runner records the run as failed, with the end of its stderr.
 */
import { once } from "node:events"
import type { Writable } from "node:stream"

export const KiB = 1024
export const MiB = 1024 * KiB
export const GiB = 1024 * MiB

/** Bytes per write on every side of every byte-moving row. */
export const WRITE_BYTES = 64 * KiB

/** The interface every endpoint binds or connects to. */
export const HOST = "127.0.0.1"

// ---------------------------------------------------------------------------------------------------
// options
// ---------------------------------------------------------------------------------------------------

/** `--key=value` arguments (the runner passes nothing else); a bare `--key` is `"true"`. */
export const options = (argv: ReadonlyArray<string> = process.argv.slice(2)): Record<string, string> => {
  const out: Record<string, string> = {}
  for (const arg of argv) {
    const m = /^--([^=]+)(?:=(.*))?$/.exec(arg)
    if (m === null) throw new Error(`unexpected argument ${arg}`)
    out[m[1]!] = m[2] ?? "true"
  }
  return out
}

/** An option that must be there. */
export const required = (opts: Record<string, string>, key: string): string => {
  const value = opts[key]
  if (value === undefined) throw new Error(`missing --${key}`)
  return value
}

/** `64m` → 67108864, `1g` → 1073741824, `4096` → 4096 (k, m, g are powers of 1024). */
export const parseSize = (text: string): number => {
  const m = /^(\d+(?:\.\d+)?)([kmg]?)(?:i?b)?$/i.exec(text.trim())
  if (m === null) throw new Error(`bad size ${text} (examples: 65536, 64k, 64m, 1g)`)
  const unit = { "": 1, k: KiB, m: MiB, g: GiB }[m[2]!.toLowerCase() as "" | "k" | "m" | "g"]
  return Math.round(Number(m[1]) * unit)
}

/** `1073741824` → `1 GiB`, `65536` → `64 KiB`. */
export const formatBytes = (n: number): string => {
  const [value, unit] =
    n >= GiB ? [n / GiB, "GiB"] : n >= MiB ? [n / MiB, "MiB"] : n >= KiB ? [n / KiB, "KiB"] : [n, "B"]
  return `${Number.isInteger(value) ? value : value.toFixed(1)} ${unit}`
}

/** A payload size every endpoint accepts: a whole number of writes. */
export const payloadBytes = (opts: Record<string, string>): number => {
  const bytes = parseSize(required(opts, "bytes"))
  if (bytes <= 0 || bytes % WRITE_BYTES !== 0) {
    throw new Error(`--bytes must be a positive multiple of ${WRITE_BYTES} (64 KiB), got ${bytes}`)
  }
  return bytes
}

// ---------------------------------------------------------------------------------------------------
// payload
// ---------------------------------------------------------------------------------------------------

/**
 * The one chunk every side writes, over and over: byte `i` is `i & 0xff`. Its length is a multiple of 256,
 * so the payload is the pattern without a seam, and any piece received can be checked by its first and
 * last byte against its offset.
 */
export const patternChunk = (size: number = WRITE_BYTES): Buffer => {
  if (size % 256 !== 0) throw new Error(`chunk size ${size} is not a multiple of 256`)
  const chunk = Buffer.allocUnsafe(size)
  for (let i = 0; i < size; i++) chunk[i] = i & 0xff
  return chunk
}

/**
 * Counts received bytes and checks each piece's first and last byte against the pattern: the same two
 * comparisons per piece on every side, fullduplex's and the baselines'.
 */
export class PatternCheck {
  bytes = 0
  pieces = 0
  /** Offset of the first piece that broke the pattern. */
  mismatchAt: number | undefined = undefined

  accept(piece: Uint8Array): this {
    const n = piece.length
    if (n > 0) {
      const first = this.bytes
      if (this.mismatchAt === undefined && (piece[0] !== (first & 0xff) || piece[n - 1] !== ((first + n - 1) & 0xff))) {
        this.mismatchAt = first
      }
      this.bytes += n
      this.pieces++
    }
    return this
  }

  /** Throws unless exactly `expected` bytes of the pattern arrived. */
  verify(what: string, expected: number): void {
    if (this.mismatchAt !== undefined) {
      throw new Error(`${what}: the bytes received at offset ${this.mismatchAt} are not the bytes sent`)
    }
    if (this.bytes !== expected) throw new Error(`${what}: expected ${expected} bytes, got ${this.bytes}`)
  }
}

/** Throws unless `actual === expected`. */
export const verifyCount = (what: string, expected: number, actual: number): void => {
  if (actual !== expected) throw new Error(`${what}: expected ${expected}, got ${actual}`)
}

/**
 * Writes `chunk` `count` times to a Node stream, waiting for `'drain'` whenever `write()` returns false:
 * what a careful Node programmer writes. Rejects on the stream's `'error'`.
 */
export const writeRepeated = async (stream: Writable, chunk: Uint8Array, count: number): Promise<void> => {
  for (let i = 0; i < count; i++) {
    if (!stream.write(chunk)) await once(stream, "drain")
  }
}

// ---------------------------------------------------------------------------------------------------
// measuring a process
// ---------------------------------------------------------------------------------------------------

const cpuMillis = (since?: NodeJS.CpuUsage): number => {
  const u = process.cpuUsage(since)
  return (u.user + u.system) / 1000
}

const round1 = (x: number): number => Math.round(x * 10) / 10

/**
 * A process's figures of itself. Create it first thing in an endpoint's body: the process's RSS then is
 * its idle base, after its imports (for a fullduplex endpoint, after loading Effect and the library).
 *
 * - `start()` starts the measured section: a client calls it right before it connects or spawns, a server
 *   calls {@link ready} once listening. CPU time (user + system, all threads) is counted from there.
 * - `finish(fields)` prints the `RESULT` line; the endpoint has closed everything by then, so the process
 *   then exits by itself, with code 0. (Not with `process.exit`: in Node 24 it can deadlock when a
 *   concurrent compile job waits for a garbage collection the exiting main thread will never run,
 *   nodejs/node#54918; a natural exit tears the isolate down first, which releases such a job.)
 */
export class Meter {
  readonly baseRssMiB = round1(process.memoryUsage.rss() / MiB)
  private cpu0: NodeJS.CpuUsage | undefined = undefined
  private t0 = 0
  readonly role: string

  constructor(role: string) {
    this.role = role
  }

  start(): void {
    this.cpu0 = process.cpuUsage()
    this.t0 = performance.now()
  }

  /** Wall-clock milliseconds since `start()`. */
  elapsedMs(): number {
    return performance.now() - this.t0
  }

  finish(fields: Record<string, unknown>): void {
    if (this.cpu0 === undefined) throw new Error("Meter.finish before start")
    const result = {
      role: this.role,
      pid: process.pid,
      ...fields,
      ...(typeof fields["ms"] === "number" ? { ms: round1(fields["ms"]) } : {}),
      cpuMs: round1(cpuMillis(this.cpu0)),
      cpuTotalMs: round1(cpuMillis()),
      baseRssMiB: this.baseRssMiB,
      peakRssMiB: round1(process.resourceUsage().maxRSS / KiB),
      execArgv: process.execArgv
    }
    process.stdout.write(`RESULT ${JSON.stringify(result)}\n`)
    process.exitCode = 0
  }
}

/** A server is listening on `port`: tells the runner, and starts its meter. */
export const ready = (meter: Meter, port: number): void => {
  meter.start()
  process.stdout.write(`READY ${JSON.stringify({ port })}\n`)
}

/** A transfer's rate in MiB/s. */
export const mibPerSecond = (bytes: number, ms: number): number => round1(bytes / MiB / (ms / 1000))

/** Latency percentiles in µs of sorted round-trip times in ms. */
export const latencies = (sortedMs: Float64Array): { p50us: number; p99us: number; maxUs: number } => {
  const at = (q: number) => round1(sortedMs[Math.min(sortedMs.length - 1, Math.floor(q * sortedMs.length))]! * 1000)
  return { p50us: at(0.5), p99us: at(0.99), maxUs: round1(sortedMs[sortedMs.length - 1]! * 1000) }
}
