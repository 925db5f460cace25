/**
 * What the stress tests share: a bounded `it.live`, raw `net` clients that check every byte as it comes
 * back, the process's own accounts (fds, RSS, TCP states, children), a guard against unhandled rejections,
 * and the one-line summary each scenario writes for `benchmarks/RESULTS.md`.
 */
import { assert, it } from "@effect/vitest"
import { Cause, Effect, type Scope, Sink } from "effect"
import { DuplexError, type Proxy, type Tcp } from "fullduplex"
import { prng } from "fullduplex/testkit"
import * as fs from "node:fs"
import * as net from "node:net"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { socketStates, within } from "../helpers.js"
import { boundSeconds, PROFILE, RUN, type ScenarioId, SEED } from "./profile.js"

export const KiB = 1024
export const MiB = 1024 * KiB

// ---- bounded tests -------------------------------------------------------------------------------------

/**
 * A bounded `it.live`: the body fails naming the test (and the seed) after its bound, rather than hanging
 * the run; the runner's own timeout is 15 s later. The body starts a step after the bound's timer, so that
 * leak checks inside it count that timer as already there.
 */
export const live = (
  name: string,
  options: {
    readonly id?: ScenarioId
    readonly seconds: { readonly ci: number; readonly soak: number }
    /** `skip`: a placeholder, written out but not run; `fails`: a known bug, expected to fail. */
    readonly mode?: "skip" | "fails" | undefined
  },
  body: () => Effect.Effect<unknown, unknown, Scope.Scope>
) => {
  const seconds = boundSeconds(options.id, options.seconds)
  const test = options.mode === undefined ? it.live : it.live[options.mode]
  test(
    name,
    () =>
      Effect.scoped(Effect.andThen(Effect.yieldNow, Effect.suspend(body))).pipe(
        within(`${seconds} seconds`, `"${name}" (seed ${SEED}, profile ${PROFILE})`)
      ),
    (seconds + 15) * 1000
  )
}

// ---- the process's accounts ----------------------------------------------------------------------------

/** Open file descriptors of this process. */
export const openFds = (): number => fs.readdirSync("/proc/self/fd").length

/** Half-closed states that would mean one side never closed its end: a leaked or forgotten socket. */
export const HALF_CLOSED_STATES = ["CLOSE_WAIT", "FIN_WAIT2"] as const

/**
 * Waits (about `timeoutMillis`) until no socket on `ports` is left in CLOSE_WAIT or FIN_WAIT2, and fails
 * with the states seen otherwise. TIME_WAIT is the normal end of a clean close and is allowed.
 */
export const noHalfClosedSockets = (ports: ReadonlyArray<number>, timeoutMillis = 2000) =>
  Effect.gen(function* () {
    for (let waited = 0; ; waited += 20) {
      const states = socketStates(ports)
      if (HALF_CLOSED_STATES.every((s) => (states[s] ?? 0) === 0)) return states
      if (waited >= timeoutMillis) {
        return yield* Effect.fail(
          new Error(
            `sockets on ports ${ports.join(", ")} left half-closed after ${waited} ms: ${JSON.stringify(states)}`
          )
        )
      }
      yield* Effect.sleep(20)
    }
  })

/** A process of this machine, from `/proc/<pid>/stat`. */
export interface ProcessEntry {
  readonly pid: number
  readonly ppid: number
  /** `R`, `S`, `Z` (zombie: exited, not reaped), … */
  readonly state: string
  readonly command: string
}

/** The children of this process (any state), from `/proc/*\/stat`. */
export const childProcesses = (): Array<ProcessEntry> => {
  const found: Array<ProcessEntry> = []
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue
    let stat: string
    try {
      stat = fs.readFileSync(`/proc/${entry}/stat`, "utf8")
    } catch {
      continue // gone meanwhile
    }
    // "pid (comm) state ppid …": comm may hold spaces and parentheses, so split after the last ")".
    const close = stat.lastIndexOf(")")
    const [state, ppid] = stat.slice(close + 2).split(" ")
    if (Number(ppid) !== process.pid) continue
    found.push({
      pid: Number(entry),
      ppid: Number(ppid),
      state: state!,
      command: stat.slice(stat.indexOf("(") + 1, close)
    })
  }
  return found
}

/**
 * Waits (about `timeoutMillis`) until this process has no child left at all, and fails naming those left
 * otherwise, zombies (state `Z`, exited and never reaped) first.
 */
export const noChildrenLeft = (timeoutMillis = 2000) =>
  Effect.gen(function* () {
    for (let waited = 0; ; waited += 20) {
      const children = childProcesses()
      if (children.length === 0) return
      if (waited >= timeoutMillis) {
        const zombies = children.filter((c) => c.state === "Z")
        return yield* Effect.fail(
          new Error(
            `${zombies.length} zombie(s) and ${children.length - zombies.length} live child(ren) left after ${waited} ms: ` +
              children
                .slice(0, 10)
                .map((c) => `${c.pid} ${c.command} ${c.state}`)
                .join(", ")
          )
        )
      }
      yield* Effect.sleep(20)
    }
  })

/**
 * Samples the process's RSS (and V8's heap, and the memory of its array buffers) every 20 ms while the
 * scope is open: the most seen of each. (Its timer is an active handle from the start to the scope's end,
 * so a leak check inside the scope counts it before and after alike.)
 */
export const rssSampler: Effect.Effect<
  {
    readonly peakBytes: () => number
    readonly peakHeapBytes: () => number
    readonly peakArrayBufferBytes: () => number
  },
  never,
  Scope.Scope
> = Effect.map(
  Effect.acquireRelease(
    Effect.sync(() => {
      const state = { rss: 0, heap: 0, arrayBuffers: 0 }
      const sample = () => {
        const m = process.memoryUsage()
        state.rss = Math.max(state.rss, m.rss)
        state.heap = Math.max(state.heap, m.heapUsed)
        state.arrayBuffers = Math.max(state.arrayBuffers, m.arrayBuffers)
      }
      sample()
      const timer = setInterval(sample, 20)
      return { state, sample, timer }
    }),
    ({ timer }) => Effect.sync(() => clearInterval(timer))
  ),
  ({ state, sample }) => ({
    peakBytes: () => (sample(), state.rss),
    peakHeapBytes: () => (sample(), state.heap),
    peakArrayBufferBytes: () => (sample(), state.arrayBuffers)
  })
)

/** Bytes as MiB, one decimal. */
export const mib = (bytes: number): number => Math.round((bytes / MiB) * 10) / 10

/**
 * Records `unhandledRejection` and `uncaughtException` while the scope is open; `assertNone` fails
 * listing what was recorded.
 */
export const processErrors: Effect.Effect<
  { readonly seen: ReadonlyArray<string>; readonly assertNone: () => void },
  never,
  Scope.Scope
> = Effect.map(
  Effect.acquireRelease(
    Effect.sync(() => {
      const seen: Array<string> = []
      const onRejection = (reason: unknown) => void seen.push(`unhandledRejection: ${describe(reason)}`)
      const onException = (error: unknown) => void seen.push(`uncaughtException: ${describe(error)}`)
      process.on("unhandledRejection", onRejection)
      process.on("uncaughtException", onException)
      return { seen, onRejection, onException }
    }),
    ({ onRejection, onException }) =>
      Effect.sync(() => {
        process.off("unhandledRejection", onRejection)
        process.off("uncaughtException", onException)
      })
  ),
  ({ seen }) => ({
    seen,
    assertNone: () => assert.deepStrictEqual(seen.slice(0, 5), [], `${seen.length} unhandled error(s) in the process`)
  })
)

const describe = (u: unknown): string => (u instanceof Error ? (u.stack ?? u.message) : String(u))

// ---- randomness ----------------------------------------------------------------------------------------

/** A seeded generator of numbers in [0, 1). */
export const unit = (seed: number): (() => number) => {
  const next = prng(seed)
  return () => next() / 2 ** 32
}

/** A whole number from `low` to `high`, both included. */
export const between = (random: () => number, low: number, high: number): number =>
  low + Math.floor(random() * (high - low + 1))

// ---- payloads and raw clients --------------------------------------------------------------------------

/**
 * A view of `length` bytes of `block`, starting at an offset that depends on `index`: every client of a
 * scenario sends different bytes (a mix-up between connections shows), with no per-client allocation.
 */
export const slice = (block: Uint8Array, length: number, index: number): Uint8Array => {
  const room = block.length - length
  const at = room <= 0 ? 0 : (index * 4099) % room
  return block.subarray(at, at + length)
}

/** What a raw echo client saw of its connection. */
export interface EchoOutcome {
  /** Bytes of the upload the socket accepted. */
  readonly sent: number
  readonly received: number
  /** The offset of the first byte back that differs from the upload (or lies beyond it), if any. */
  readonly mismatchAt: number | undefined
  /** The error code (`ECONNRESET`, `EPIPE`, `timeout`) that ended the connection, if one did. */
  readonly error: string | undefined
  readonly eof: boolean
}

/** Whether an outcome is the perfect echo of an upload of `length` bytes. */
export const isExactEcho = (o: EchoOutcome, length: number): boolean =>
  o.error === undefined && o.eof && o.mismatchAt === undefined && o.sent === length && o.received === length

/** One line about an outcome, for failure messages. */
export const describeOutcome = (o: EchoOutcome): string =>
  `sent ${o.sent}, received ${o.received}, mismatch at ${o.mismatchAt ?? "none"}, error ${o.error ?? "none"}, eof ${o.eof}`

/**
 * How an {@link echoClient} misbehaves: `reset` resets (RST) once `afterBytes` of its echo have come back
 * (0: at once, on connecting); `vanish` uploads `afterBytes`, half-closes and destroys the socket without
 * reading anything.
 */
export type Behaviour =
  { readonly _tag: "reset"; readonly afterBytes: number } | { readonly _tag: "vanish"; readonly afterBytes: number }

/** Connections open at once, counted by the raw clients that share it. */
export class Gauge {
  now = 0
  peak = 0
  up(): void {
    this.now++
    if (this.now > this.peak) this.peak = this.now
  }
  down(): void {
    this.now--
  }
}

const first = (a: Uint8Array, b: Uint8Array): number => {
  const n = Math.min(a.length, b.length)
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i
  return n
}

/**
 * A raw `net` client of an echo: uploads `payload` (in `chunkBytes` pieces, waiting for `'drain'`), then
 * half-closes, while it compares every byte that comes back with the upload as it arrives (nothing is kept).
 * Resolves when the socket closes; after `timeoutMillis` it destroys the socket and reports `timeout`.
 *
 * `behaviour` makes it misbehave (see {@link Behaviour}).
 */
export const echoClient = (
  port: number,
  payload: Uint8Array,
  options: {
    readonly chunkBytes?: number
    readonly timeoutMillis?: number
    readonly gauge?: Gauge
    readonly behaviour?: Behaviour | undefined
    /** Half-close after the upload (the default), or keep the write side open, waiting for the answer. */
    readonly halfClose?: boolean | undefined
  } = {}
): Effect.Effect<EchoOutcome> =>
  Effect.callback<EchoOutcome>((resume) => {
    const socket = net.connect({ host: "127.0.0.1", port, allowHalfOpen: true })
    const chunkBytes = options.chunkBytes ?? 64 * KiB
    const behaviour = options.behaviour
    let sent = 0
    let received = 0
    let mismatchAt: number | undefined
    let error: string | undefined
    let eof = false
    let connected = false
    const timer = setTimeout(() => {
      error ??= "timeout"
      socket.destroy()
    }, options.timeoutMillis ?? 30_000)
    socket.on("error", (err: NodeJS.ErrnoException) => {
      error ??= err.code ?? err.message
    })
    if (behaviour?._tag !== "vanish") {
      socket.on("data", (chunk: Buffer) => {
        if (mismatchAt === undefined) {
          const expected = payload.subarray(received, received + chunk.length)
          if (expected.length !== chunk.length || !chunk.equals(expected))
            mismatchAt = received + first(chunk, expected)
        }
        received += chunk.length
        if (behaviour?._tag === "reset" && received >= behaviour.afterBytes && !socket.destroyed) {
          socket.resetAndDestroy()
        }
      })
    } else socket.pause()
    socket.on("end", () => {
      eof = true
    })
    socket.once("close", () => {
      clearTimeout(timer)
      if (connected) options.gauge?.down()
      resume(Effect.succeed({ sent, received, mismatchAt, error, eof }))
    })
    const limit = behaviour?._tag === "vanish" ? Math.min(behaviour.afterBytes, payload.length) : payload.length
    const pump = () => {
      while (sent < limit && !socket.destroyed) {
        const piece = payload.subarray(sent, Math.min(sent + chunkBytes, limit))
        sent += piece.length
        if (!socket.write(piece)) return void socket.once("drain", pump)
      }
      if (socket.destroyed) return
      if (behaviour?._tag === "vanish") {
        // Half-close, and go away without reading a byte: the echo waiting in our receive buffer makes the
        // kernel answer with a reset.
        socket.end(() => socket.destroy())
      } else if (options.halfClose !== false) socket.end()
    }
    socket.once("connect", () => {
      connected = true
      options.gauge?.up()
      if (behaviour?._tag === "reset" && behaviour.afterBytes <= 0) return void socket.resetAndDestroy()
      pump()
    })
    return Effect.sync(() => {
      clearTimeout(timer)
      socket.destroy()
    })
  })

/**
 * A sink that compares what it is given with `expected` as it comes, keeping nothing: `state` has the
 * bytes received and the offset of the first difference (or of the first byte beyond `expected`).
 */
export const comparing = (expected: Uint8Array) => {
  const state: { received: number; mismatchAt: number | undefined } = { received: 0, mismatchAt: undefined }
  const sink = Sink.forEach((chunk: Uint8Array) =>
    Effect.sync(() => {
      if (state.mismatchAt === undefined) {
        const want = expected.subarray(state.received, state.received + chunk.length)
        if (want.length !== chunk.length || !Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length).equals(want)) {
          state.mismatchAt = state.received + first(chunk, want)
        }
      }
      state.received += chunk.length
    })
  )
  return { state, sink }
}

/** `bytes` cut into views of `size` bytes (the last one shorter). */
export const pieces = (bytes: Uint8Array, size = 64 * KiB): Array<Uint8Array> => {
  const out: Array<Uint8Array> = []
  for (let at = 0; at < bytes.length; at += size) out.push(bytes.subarray(at, at + size))
  return out
}

/** Counts of each value: `{ ECONNRESET: 3, none: 997 }`. */
export const tally = (values: Iterable<string>): Record<string, number> => {
  const counts: Record<string, number> = {}
  for (const v of values) counts[v] = (counts[v] ?? 0) + 1
  return counts
}

/** Adds the counts of each of `more` into `into`, and returns it. */
export const addCounts = (
  into: Record<string, number>,
  ...more: ReadonlyArray<Record<string, number>>
): Record<string, number> => {
  for (const m of more) for (const [k, n] of Object.entries(m)) into[k] = (into[k] ?? 0) + n
  return into
}

/** The counts with `prefix: ` before each key: `{ "client: exact": 3 }`. */
export const prefixed = (prefix: string, counts: Record<string, number>): Record<string, number> =>
  Object.fromEntries(Object.entries(counts).map(([k, n]) => [`${prefix}: ${k}`, n]))

// ---- server events -------------------------------------------------------------------------------------

/**
 * The key a failure is counted under: its `DuplexError` reason and code (`Broken ECONNRESET`,
 * `ProtocolError`), `interrupted`, `TimeoutError` (an `Effect.timeout` of the caller's), or, for anything
 * else, `defect: …` / `untyped: …`.
 */
export const failureKey = (cause: Cause.Cause<unknown>): string => {
  if (Cause.hasDies(cause)) return `defect: ${String(Cause.squash(cause))}`
  if (Cause.hasInterruptsOnly(cause)) return "interrupted"
  const error = Cause.squash(cause)
  // A handler's own `Effect.timeout`: the application's typed error, not the library's.
  if (Cause.isTimeoutError(error)) return "TimeoutError"
  if (!DuplexError.isDuplexError(error)) return `untyped: ${String(error)}`
  const reason = error.reason
  const code = "code" in reason && typeof reason.code === "string" ? ` ${reason.code}` : ""
  return `${reason._tag}${code}`
}

/** Whether a {@link failureKey} is a typed end: a `DuplexError` reason or an interruption. */
export const isTyped = (key: string): boolean => !key.startsWith("defect") && !key.startsWith("untyped")

/**
 * Counts a server's (or a proxy's) events by how each connection ended, with the reason of each failure
 * (`failed: Broken ECONNRESET`, `idleTimeout`, `Refused (maxConnections)`), and keeps the untyped ones
 * (defects, errors that are not a `DuplexError`) for the assertion that there are none.
 */
export class Endings {
  readonly counts: Record<string, number> = {}
  readonly untyped: Array<string> = []
  accepted = 0
  closed = 0
  refused = 0

  readonly onEvent = (event: Tcp.ServerEvent | Proxy.ProxyEvent): Effect.Effect<void> =>
    Effect.sync(() => this.record(event))

  record(event: Tcp.ServerEvent | Proxy.ProxyEvent): void {
    let key: string
    switch (event._tag) {
      case "Accepted":
        this.accepted++
        return
      case "ConnectionClosed": {
        this.closed++
        key = event.ending
        if (event.cause !== undefined) {
          const why = failureKey(event.cause)
          key = `${key}: ${why}`
          if (!isTyped(why)) this.untyped.push(`#${event.connection.id}: ${Cause.pretty(event.cause)}`)
        }
        break
      }
      case "Refused":
        this.refused++
        key = `Refused (${event.why})`
        break
      case "UpstreamConnectFailed": {
        const reason = event.error.reason
        key = `UpstreamConnectFailed: ${reason._tag}${"code" in reason && reason.code ? ` ${reason.code}` : ""}`
        break
      }
      case "AcceptError":
        key = "AcceptError"
        this.untyped.push(`AcceptError: ${String(event.error)}`)
        break
    }
    this.counts[key] = (this.counts[key] ?? 0) + 1
  }

  /** Fails listing the untyped ends, if any. */
  assertTyped(what: string): void {
    assert.deepStrictEqual(this.untyped.slice(0, 3), [], `${what}: ${this.untyped.length} untyped end(s)`)
  }
}

// ---- summaries -----------------------------------------------------------------------------------------

/** What one scenario did, as one JSON line: the figures for `benchmarks/RESULTS.md`. */
export interface Summary {
  readonly scenario: ScenarioId | string
  /** Rounds run (1 in the `ci` profile). */
  readonly rounds: number
  /** Connections (or children, or sessions) made in all. */
  readonly connections: number
  /** The most open at once. */
  readonly peakConcurrent: number
  /** Payload bytes moved, both directions, as the clients counted them. */
  readonly bytes: number
  /** How connections ended, by reason: `{ completed: 990, ECONNRESET: 10 }`. */
  readonly endings: Record<string, number>
  readonly peakRssMiB: number
  readonly fdsBefore: number
  readonly fdsAfter: number
  readonly millis: number
  /** Figures of this scenario alone. */
  readonly extra?: Record<string, unknown>
}

/** Where summaries go: `test/stress/.results/<run>.jsonl`, ignored by git. */
export const RESULTS_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), ".results")

/** Appends the summary to the run's results file and prints it as one line. */
export const report = (summary: Summary): Effect.Effect<void> =>
  Effect.sync(() => {
    const line = JSON.stringify({
      ...summary,
      profile: PROFILE,
      seed: SEED,
      pid: process.pid,
      at: new Date().toISOString()
    })
    fs.mkdirSync(RESULTS_DIR, { recursive: true })
    fs.appendFileSync(path.join(RESULTS_DIR, `${RUN}.jsonl`), `${line}\n`)
    console.log(`[stress] ${line}`)
  })
