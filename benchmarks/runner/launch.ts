/**
 * Runs one case once: its processes started in order, each a fresh `node` on a compiled endpoint, wired
 * by the ports the servers print; every process's `RESULT` line collected; and how much of the machine
 * other work used meanwhile.
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { createInterface } from "node:readline"
import type { Case, Role } from "../rows.js"

/** The repository root (every process runs there) and the compiled endpoints (this file is in benchmarks/build/runner/). */
export const ROOT = path.resolve(import.meta.dirname, "..", "..", "..")
const ENDPOINTS = path.join(ROOT, "benchmarks", "build", "endpoints")

/** A process's `RESULT` line. */
export type ProcessResult = Record<string, unknown> & {
  readonly cpuMs: number
  readonly baseRssMiB: number
  readonly peakRssMiB: number
  readonly execArgv: ReadonlyArray<string>
}

export interface Run {
  readonly case: string
  readonly round: number
  /** Why the run failed; `undefined` when every process reported and every check passed. */
  readonly error: string | undefined
  readonly processes: Partial<Record<Role, ProcessResult>>
  /** The client's rate: MiB/s or round trips/s. */
  readonly rate: number | undefined
  /** Lines a process printed besides the protocol (warnings, logs), with the role that printed them. */
  readonly noise: ReadonlyArray<string>
  readonly wallMs: number
  /** CPU time other work used during the run, as a share of all cores (see {@link cpuSnapshot}). */
  readonly otherLoad: number
  readonly load1: number
  readonly argv: Partial<Record<Role, ReadonlyArray<string>>>
}

// -----------------------------------------------------------------------------------------------------
// other work on the machine
// -----------------------------------------------------------------------------------------------------

const TICK_MS = 10 // USER_HZ = 100 on Linux

interface CpuSnapshot {
  readonly t: number
  /** Busy jiffies of the whole machine (all but idle and iowait). */
  readonly busy: number
  /** Jiffies of this runner and its reaped descendants (utime, stime, cutime, cstime). */
  readonly own: number
}

/** `/proc/stat` and `/proc/self/stat`; zeros where they cannot be read (not Linux). */
const cpuSnapshot = (): CpuSnapshot => {
  try {
    const all = fs.readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number)
    const busy = all.reduce((x, y) => x + y, 0) - all[3]! - all[4]!
    const self = fs.readFileSync("/proc/self/stat", "utf8")
    const f = self
      .slice(self.lastIndexOf(")") + 2)
      .split(" ")
      .map(Number) // f[0] is field 3 (state)
    return { t: performance.now(), busy, own: f[11]! + f[12]! + f[13]! + f[14]! }
  } catch {
    return { t: performance.now(), busy: 0, own: 0 }
  }
}

/** CPU time the rest of the machine used between two snapshots, as a share of all its cores. */
const otherLoad = (a: CpuSnapshot, b: CpuSnapshot): number => {
  const foreignMs = Math.max(0, (b.busy - a.busy - (b.own - a.own)) * TICK_MS)
  return foreignMs / ((b.t - a.t) * os.availableParallelism())
}

// -----------------------------------------------------------------------------------------------------
// one process
// -----------------------------------------------------------------------------------------------------

interface Launched {
  readonly role: Role
  readonly child: ChildProcess
  readonly argv: ReadonlyArray<string>
  /** The port, once the process prints `READY`; rejects if it exits first. */
  readonly ready: Promise<number>
  /** Settles once the process has exited and its output is read. */
  readonly done: Promise<{ code: number | null; signal: string | null; result: ProcessResult | undefined }>
  readonly stderr: () => string
  readonly noise: Array<string>
}

/** The environment of every process: the runner's, without `NODE_OPTIONS` (no loader can sneak in). */
const childEnv = (): NodeJS.ProcessEnv => {
  const env = { ...process.env }
  delete env["NODE_OPTIONS"]
  return env
}

/** How long a process may take to exit after printing its result. */
const EXIT_GRACE_MS = 5000

const launch = (role: Role, script: string, args: ReadonlyArray<string>, preloadEffect: boolean): Launched => {
  const argv = [...(preloadEffect ? ["--import", "effect"] : []), path.join(ENDPOINTS, `${script}.js`), ...args]
  const child = spawn(process.execPath, argv, { cwd: ROOT, env: childEnv(), stdio: ["ignore", "pipe", "pipe"] })
  let stderr = ""
  child.stderr!.setEncoding("utf8").on("data", (text: string) => {
    if (stderr.length < 64 * 1024) stderr += text
  })
  const noise: Array<string> = []
  let result: ProcessResult | undefined
  let hungAtExit = false
  let onReady: (port: number) => void = () => {}
  let onEarlyExit: (error: Error) => void = () => {}
  const ready = new Promise<number>((resolve, reject) => {
    onReady = resolve
    onEarlyExit = reject
  })
  ready.catch(() => {}) // a process that never listens is reported through `done`
  createInterface({ input: child.stdout! }).on("line", (line) => {
    if (line.startsWith("READY ")) onReady((JSON.parse(line.slice(6)) as { port: number }).port)
    else if (line.startsWith("RESULT ")) {
      result = JSON.parse(line.slice(7)) as ProcessResult
      // Its figures are in; a process that then fails to exit (something left open, or a hang in Node's
      // own shutdown) is killed rather than left to time the run out, and the kill is reported as noise.
      setTimeout(() => {
        if (child.exitCode === null && child.signalCode === null) {
          hungAtExit = true
          child.kill("SIGKILL")
        }
      }, EXIT_GRACE_MS).unref()
    } else if (line.trim() !== "") noise.push(`${role} stdout: ${line}`)
  })
  const done = new Promise<{ code: number | null; signal: string | null; result: ProcessResult | undefined }>(
    (resolve) => {
      child.once("error", (error) => {
        stderr += String(error)
        resolve({ code: null, signal: null, result })
      })
      child.once("close", (code, signal) => {
        onEarlyExit(new Error(`${role} exited (${code ?? signal}) before listening`))
        if (hungAtExit) {
          noise.push(`${role} had not exited ${EXIT_GRACE_MS / 1000} s after its result and was killed`)
          resolve({ code: 0, signal: null, result })
        } else {
          resolve({ code, signal, result })
        }
      })
    }
  )
  return {
    role,
    child,
    argv: ["node", ...argv.map((a) => (path.isAbsolute(a) ? path.relative(ROOT, a) : a))],
    ready,
    done,
    stderr: () => stderr,
    noise
  }
}

// -----------------------------------------------------------------------------------------------------
// what a baseline loads
// -----------------------------------------------------------------------------------------------------

/** The packages a compiled endpoint imports, following its relative imports (`../lib/common.js`, …). */
const packagesImportedBy = (file: string, seen = new Set<string>()): Set<string> => {
  const packages = new Set<string>()
  if (seen.has(file)) return packages
  seen.add(file)
  const source = fs.readFileSync(file, "utf8")
  for (const m of source.matchAll(
    /(?:^|\n)\s*(?:import|export)\b[^"';]*?["']([^"']+)["']|\bimport\(\s*["']([^"']+)["']\s*\)/g
  )) {
    const specifier = (m[1] ?? m[2])!
    if (specifier.startsWith(".")) {
      for (const p of packagesImportedBy(path.resolve(path.dirname(file), specifier), seen)) packages.add(p)
    } else {
      packages.add(specifier)
    }
  }
  return packages
}

/**
 * Throws if an endpoint of a baseline case (one without `fd-` in its name) imports `effect` or
 * `fullduplex`, directly or through a helper: a baseline must not share the library's loading costs, except
 * through the explicit `--import effect` of row 12.
 */
export const checkBaselineImports = (cases: ReadonlyArray<Case>): void => {
  for (const c of cases) {
    for (const p of c.processes.filter((x) => !x.script.startsWith("fd-"))) {
      const imported = [...packagesImportedBy(path.join(ENDPOINTS, `${p.script}.js`))]
      const bad = imported.filter((s) => /^(effect|fullduplex)(\/|$)/.test(s))
      if (bad.length > 0) throw new Error(`baseline endpoint ${p.script} of ${c.id} imports ${bad.join(", ")}`)
    }
  }
}

// -----------------------------------------------------------------------------------------------------
// one run
// -----------------------------------------------------------------------------------------------------

const withTimeout = <A>(promise: Promise<A>, ms: number, what: string): Promise<A> => {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no end after ${(ms / 1000).toFixed(1)} s`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

/** The gist of a stderr: its first error line (Node prints the message before the stack), or its last lines. */
const gist = (text: string): string => {
  const lines = text
    .trim()
    .split("\n")
    .map((l) => l.trim())
  const at = lines.findIndex((l) => /^(\w*Error\b|\[?\w*Error)/.test(l) || /Error(\s\[\w+\])?:/.test(l))
  return (at >= 0 ? lines.slice(at, at + 2) : lines.slice(-4)).filter((l) => l !== "").join(" | ")
}

/** The checks the runner makes of every successful process (besides the endpoint's own). */
const checkResult = (c: Case, role: Role, result: ProcessResult, script: string): string | undefined => {
  if (script.startsWith("fd-")) {
    const url = String(result["fullduplex"])
    if (!url.endsWith("/dist/index.js")) return `${role} loaded fullduplex from ${url}, not dist/`
  }
  if (role === "client") {
    const key = c.metric === "rtps" ? "roundTrips" : "bytes"
    if (result[key] !== c.units) return `client reports ${key} ${String(result[key])}, expected ${c.units}`
  }
  return undefined
}

/** Runs every process of `c` once; a run that fails is returned with its `error`, never thrown. */
export const runCase = async (c: Case, round: number, timeoutMs: number): Promise<Run> => {
  const load1 = os.loadavg()[0]!
  const before = cpuSnapshot()
  const launched: Array<Launched> = []
  let error: string | undefined
  const killAll = () => {
    for (const p of launched) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill("SIGKILL")
  }
  try {
    let lastPort: number | undefined
    let targetPort: number | undefined
    for (const spec of c.processes) {
      const args = [...spec.args]
      if (spec.listens === true && targetPort !== undefined) args.push(`--target=${targetPort}`)
      if ((spec.role === "client" || spec.role === "attacker") && lastPort !== undefined)
        args.push(`--port=${lastPort}`)
      const p = launch(spec.role, spec.script, args, spec.preloadEffect === true)
      launched.push(p)
      // A process that fails ends the run: the others are killed rather than left waiting on it.
      void p.done.then(({ code }) => {
        if (code !== 0) setTimeout(killAll, 2000).unref()
      })
      if (spec.listens === true) {
        lastPort = await withTimeout(p.ready, 30_000, `${spec.role} listening`)
        if (spec.isTarget === true) targetPort = lastPort
      }
    }
    await withTimeout(Promise.all(launched.map((p) => p.done)), timeoutMs, c.id)
  } catch (e) {
    error = e instanceof Error ? e.message : String(e)
    killAll()
  }
  const outcomes = await Promise.all(launched.map((p) => p.done))
  const after = cpuSnapshot()
  const processes: Partial<Record<Role, ProcessResult>> = {}
  const argv: Partial<Record<Role, ReadonlyArray<string>>> = {}
  const noise: Array<string> = []
  const failures: Array<string> = error === undefined ? [] : [error]
  launched.forEach((p, i) => {
    const { code, signal, result } = outcomes[i]!
    argv[p.role] = p.argv
    noise.push(...p.noise)
    const stderr = p.stderr()
    if (code !== 0 || result === undefined) {
      const why = code !== 0 ? `exited ${code ?? signal}` : "exited without a RESULT line"
      failures.push(`${p.role} ${why}${stderr.trim() === "" ? "" : `: ${gist(stderr)}`}`)
      return
    }
    if (stderr.trim() !== "") noise.push(`${p.role} stderr: ${stderr.trim().split("\n").slice(0, 3).join(" | ")}`)
    processes[p.role] = result
    const wrong = checkResult(c, p.role, result, c.processes[i]!.script)
    if (wrong !== undefined) failures.push(wrong)
  })
  if (failures.length > 0) error = failures.join("; ")
  const clientResult = processes.client
  const rate = error === undefined && clientResult !== undefined ? Number(clientResult[c.metric]) : undefined
  return {
    case: c.id,
    round,
    error,
    processes,
    rate,
    noise,
    wallMs: after.t - before.t,
    otherLoad: otherLoad(before, after),
    load1,
    argv
  }
}
