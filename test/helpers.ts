import { assert } from "@effect/vitest"
import { Cause, Deferred, Duration, Effect, Exit, Scope } from "effect"
import { type Duplex, DuplexError, Tcp } from "fullduplex"
import { assertNoLeaks, concatBytes, type LeakDetected, resources } from "fullduplex/testkit"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import * as v8 from "node:v8"
import * as vm from "node:vm"
import { Worker } from "node:worker_threads"

/**
 * Both ends of one TCP connection on 127.0.0.1 (ephemeral port, half-open allowed): `[client, accepted]`.
 * The listening server is closed when the scope closes; the sockets belong to the caller.
 */
export const loopbackSockets = Effect.gen(function* () {
  const server = net.createServer({ allowHalfOpen: true })
  yield* Effect.addFinalizer(() => Effect.sync(() => server.close()))
  return yield* Effect.callback<readonly [net.Socket, net.Socket]>((resume) => {
    let client: net.Socket | undefined
    let accepted: net.Socket | undefined
    const ready = () => {
      if (client !== undefined && accepted !== undefined && !client.connecting)
        resume(Effect.succeed([client, accepted]))
    }
    server.once("connection", (socket) => {
      accepted = socket
      ready()
    })
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo
      client = net.connect({ host: "127.0.0.1", port, allowHalfOpen: true })
      client.on("error", () => {}).once("connect", ready)
    })
  })
})

// ---- TCP test helpers ------------------------------------------------------------------------------

/**
 * Fails with an `Error` naming `what` when `effect` takes longer than `duration`: every wait on real I/O
 * is bounded, and a hang reports what was being waited for instead of hitting the runner's timeout.
 */
export const within =
  (duration: Duration.Input, what: string) =>
  <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | Error, R> =>
    Effect.timeoutOrElse(effect, {
      duration,
      orElse: () => Effect.fail(new Error(`${what}: still waiting after ${Duration.toMillis(duration)} ms`))
    })

/** The failure of an exit as a `DuplexError`, or an assertion failure naming what was found instead. */
export const duplexErrorOf = <A, E>(exit: Exit.Exit<A, E>, what = "the operation"): DuplexError.DuplexError => {
  assert.isTrue(Exit.isFailure(exit), `${what} succeeded; expected a DuplexError`)
  const fail = Exit.isFailure(exit) ? exit.cause.reasons.find(Cause.isFailReason) : undefined
  const error = fail?.error
  assert.isTrue(
    DuplexError.isDuplexError(error),
    `${what}: expected a DuplexError, got ${Exit.isFailure(exit) ? Cause.pretty(exit.cause) : "success"}`
  )
  return error as DuplexError.DuplexError
}

type Reason = DuplexError.DuplexErrorReason

/** The reason of the `DuplexError` an exit failed with, asserted to be `tag`. */
export const reasonOf = <T extends Reason["_tag"]>(
  exit: Exit.Exit<unknown, unknown>,
  tag: T,
  what: string
): Extract<Reason, { readonly _tag: T }> => {
  const error = duplexErrorOf(exit, what)
  assert.strictEqual(error.reason._tag, tag, `${what}: ${error.reason._tag}: ${error.message}`)
  return error.reason as Extract<Reason, { readonly _tag: T }>
}

/** A port on 127.0.0.1 that nothing listens on: bound on port 0, then closed. */
export const freePort: Effect.Effect<number> = Effect.callback<number>((resume) => {
  const server = net.createServer()
  server.listen(0, "127.0.0.1", () => {
    const { port } = server.address() as net.AddressInfo
    server.close(() => resume(Effect.succeed(port)))
  })
})

/** A fresh temporary directory, removed with everything in it when the scope closes. */
export const tempDir: Effect.Effect<string, never, Scope.Scope> = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "fullduplex-test-"))),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
)

/**
 * Records a server's events for a test and lets it wait for one: pass `onEvent` to `Tcp.serve`.
 */
export class EventLog {
  readonly events: Array<Tcp.ServerEvent> = []
  private waiters: Array<() => void> = []

  readonly onEvent = (event: Tcp.ServerEvent): Effect.Effect<void> =>
    Effect.sync(() => {
      this.events.push(event)
      const waiters = this.waiters
      this.waiters = []
      for (const wake of waiters) wake()
    })

  /** Events of one tag. */
  of<T extends Tcp.ServerEvent["_tag"]>(tag: T): Array<Extract<Tcp.ServerEvent, { _tag: T }>> {
    return this.events.filter((e): e is Extract<Tcp.ServerEvent, { _tag: T }> => e._tag === tag)
  }

  /** The `ConnectionClosed` events, as `ending` strings, in order. */
  get endings(): Array<Tcp.Ending> {
    return this.of("ConnectionClosed").map((e) => e.ending)
  }

  /** Waits until `count` events of `tag` (matching `filter`) have arrived, at most `timeout`. */
  waitFor<T extends Tcp.ServerEvent["_tag"]>(
    tag: T,
    options: {
      readonly count?: number
      readonly filter?: (e: Extract<Tcp.ServerEvent, { _tag: T }>) => boolean
      readonly timeout?: Duration.Input
    } = {}
  ): Effect.Effect<Array<Extract<Tcp.ServerEvent, { _tag: T }>>, Error> {
    const count = options.count ?? 1
    const matching = () => this.of(tag).filter(options.filter ?? (() => true))
    const wait = Effect.callback<Array<Extract<Tcp.ServerEvent, { _tag: T }>>>((resume) => {
      // Checked and registered in one step, so no event can slip in between.
      const found = matching()
      if (found.length >= count) return resume(Effect.succeed(found))
      const wake = () => {
        const now = matching()
        if (now.length < count) return this.waiters.push(wake)
        resume(Effect.succeed(now))
      }
      this.waiters.push(wake)
      return Effect.sync(() => {
        this.waiters = this.waiters.filter((w) => w !== wake)
      })
    })
    return wait.pipe(
      within(options.timeout ?? "5 seconds", `waiting for ${count} ${tag} event(s)`),
      Effect.mapError((e) => new Error(`${e.message}; events so far:\n${this.describe()}`))
    )
  }

  /** One line per event, for failure messages. */
  describe(): string {
    return this.events
      .map((e) =>
        e._tag === "ConnectionClosed"
          ? `ConnectionClosed #${e.connection.id} ${e.ending}${e.close ? ` (${e.close.ending})` : ""}${e.cause ? `: ${Cause.pretty(e.cause)}` : ""}`
          : e._tag === "Accepted"
            ? `Accepted #${e.connection.id}`
            : e._tag === "Refused"
              ? `Refused ${e.remote} (${e.why}, ${e.active} active)`
              : `AcceptError ${String(e.error)}`
      )
      .join("\n")
  }
}

/** How many of each watched handle kind the process holds now (the testkit's `resources`, handles only). */
export const activeHandles = (): Record<string, number> => ({ ...resources().handles })

/**
 * Waits (about `timeoutMillis` at most) until no watched handle kind is above its count in `before`: the
 * testkit's `assertNoLeaks`, on handles alone (these tests share a process with others that open files).
 */
export const assertNoLeakedHandles = (
  before: Record<string, number>,
  timeoutMillis = 2000
): Effect.Effect<void, LeakDetected> =>
  assertNoLeaks({ fds: undefined, handles: before }, { timeout: timeoutMillis, label: "leaked handles" })

/** A full collection, if this Node lets us turn it on (the test runner does not pass `--expose-gc`). */
export const gc: (() => void) | undefined = (() => {
  try {
    v8.setFlagsFromString("--expose-gc")
    return vm.runInNewContext("gc") as () => void
  } catch {
    return undefined
  }
})()

/** Heap and array buffers after full collections: what the objects alive now cost. */
export const liveBytes = (collect: () => void): number => {
  collect()
  collect()
  const m = process.memoryUsage()
  return m.heapUsed + m.arrayBuffers
}

/** What a raw `net` client saw of a connection. */
export interface RawOutcome {
  /** Bytes read before the end or the error. */
  readonly received: Uint8Array
  /** The error code that ended the connection (`ECONNRESET`, `EPIPE`), if one did. */
  readonly error: string | undefined
  /** Whether the read side reached a clean EOF. */
  readonly eof: boolean
  /** Bytes of the upload the socket accepted. */
  readonly uploaded: number
}

/**
 * A raw `net` client, so that the test sees exactly what the kernel reports: uploads `upload` (in
 * `chunkBytes` pieces, waiting for `'drain'`, then `end`) while reading whatever comes back, until the
 * socket closes.
 */
export const rawClient = (
  address: Tcp.Address,
  upload: Uint8Array,
  options: { readonly chunkBytes?: number } = {}
): Effect.Effect<RawOutcome> =>
  Effect.callback<RawOutcome>((resume) => {
    const socket =
      "path" in address
        ? net.connect({ path: address.path, allowHalfOpen: true })
        : net.connect({ host: address.host ?? "127.0.0.1", port: address.port, allowHalfOpen: true })
    const received: Array<Uint8Array> = []
    let error: string | undefined
    let eof = false
    let uploaded = 0
    const chunkBytes = options.chunkBytes ?? 64 * 1024
    socket.on("error", (err: NodeJS.ErrnoException) => {
      error ??= err.code ?? err.message
    })
    socket.on("data", (chunk: Buffer) => {
      received.push(chunk)
    })
    socket.on("end", () => {
      eof = true
    })
    socket.on("close", () => resume(Effect.succeed({ received: concatBytes(received), error, eof, uploaded })))
    const pump = () => {
      while (uploaded < upload.length && !socket.destroyed) {
        const piece = upload.subarray(uploaded, uploaded + chunkBytes)
        uploaded += piece.length
        if (!socket.write(piece)) return void socket.once("drain", pump)
      }
      if (!socket.destroyed) socket.end()
    }
    socket.once("connect", pump)
    return Effect.sync(() => socket.destroy())
  })

/**
 * Both ends of one connection made with `Tcp.serve` and `Tcp.connect`: `[client, server]`. The handler
 * hands its duplex out and waits; `shutdownGrace: 0`, so closing the scope closes the server side at once.
 * `address` picks TCP on 127.0.0.1 (the default) or a Unix socket path.
 */
export const servedPair = (
  options: { readonly highWaterMark: number; readonly path?: string | undefined },
  events?: EventLog
): Effect.Effect<readonly [Duplex.Duplex, Duplex.Duplex], DuplexError.DuplexError | Error, Scope.Scope> =>
  Effect.gen(function* () {
    const accepted = yield* Deferred.make<Duplex.Duplex>()
    const server = yield* Tcp.serve(
      {
        ...(options.path === undefined ? { host: "127.0.0.1", port: 0 } : { path: options.path }),
        highWaterMark: options.highWaterMark,
        shutdownGrace: 0,
        onEvent: events?.onEvent
      },
      (conn) => Deferred.succeed(accepted, conn).pipe(Effect.andThen(Effect.never))
    )
    const client = yield* Tcp.connect({ ...server.address, highWaterMark: options.highWaterMark, label: "client" })
    const served = yield* Deferred.await(accepted).pipe(within("5 seconds", "the server's side of the connection"))
    return [client, served] as const
  })

/**
 * A TCP port on 127.0.0.1 whose listener never accepts: it listens from a worker thread whose event loop
 * is blocked (`Atomics.wait`), and its accept queue (backlog 1) is filled with connections, so the kernel
 * drops every further SYN and a connect to it hangs. Released (worker woken and terminated, fillers
 * destroyed) when the scope closes.
 */
export const unacceptingPort: Effect.Effect<number, Error, Scope.Scope> = Effect.gen(function* () {
  const shared = new SharedArrayBuffer(4)
  const worker = yield* Effect.acquireRelease(
    Effect.sync(
      () =>
        new Worker(
          `const { parentPort, workerData } = require("node:worker_threads")
           const server = require("node:net").createServer()
           server.listen({ host: "127.0.0.1", port: 0, backlog: 1 }, () => {
             parentPort.postMessage(server.address().port)
             Atomics.wait(new Int32Array(workerData), 0, 0) // nothing is accepted while this thread waits
             server.close()
           })`,
          { eval: true, workerData: shared }
        )
    ),
    (w) =>
      Effect.andThen(
        Effect.sync(() => {
          Atomics.store(new Int32Array(shared), 0, 1)
          Atomics.notify(new Int32Array(shared), 0)
        }),
        Effect.promise(() => w.terminate())
      )
  )
  const port = yield* Effect.callback<number>((resume) => {
    worker.once("message", (p: number) => resume(Effect.succeed(p)))
  }).pipe(within("5 seconds", "the worker's listener"))
  // Linux queues backlog + 1 connections; the rest of the fillers keep retrying their SYNs, harmlessly.
  const fillers = Array.from({ length: 3 }, () => net.connect({ host: "127.0.0.1", port }).on("error", () => {}))
  yield* Effect.addFinalizer(() => Effect.sync(() => fillers.forEach((s) => s.destroy())))
  yield* Effect.callback<void>((resume) => {
    let connected = 0
    for (const s of fillers.slice(0, 2))
      s.once("connect", () => {
        if (++connected === 2) resume(Effect.void)
      })
  }).pipe(within("5 seconds", "filling the accept queue"))
  return port
})

/**
 * Polls `effect` every few milliseconds until `check` holds, for state that has no event to wait on (a
 * server's counters settle just after the event that reports a change). Fails after about `timeoutMillis`
 * with the last value seen.
 */
export const eventually = <A, E>(
  what: string,
  effect: Effect.Effect<A, E>,
  check: (a: A) => boolean,
  timeoutMillis = 2000
): Effect.Effect<A, E | Error> =>
  Effect.gen(function* () {
    for (let waited = 0; ; waited += 5) {
      const value = yield* effect
      if (check(value)) return value
      if (waited >= timeoutMillis) {
        return yield* Effect.fail(new Error(`${what}: not after ${waited} ms; last seen ${JSON.stringify(value)}`))
      }
      yield* Effect.sleep(5)
    }
  })

/**
 * Closes `scope` and waits for it, at most `timeoutMillis`. A server's shutdown is uninterruptible, so it
 * cannot be timed out directly: it runs in a detached fiber, watched.
 */
export const closeWithin = (scope: Scope.Closeable, timeoutMillis = 5000): Effect.Effect<void, Error> =>
  Effect.gen(function* () {
    const closing = yield* Effect.forkDetach(Scope.close(scope, Exit.void), { startImmediately: true })
    yield* eventually(
      "the shutdown to complete",
      Effect.sync(() => closing.pollUnsafe()),
      (exit) => exit !== undefined,
      timeoutMillis
    )
  })

/** TCP states as `/proc/net/tcp` numbers them (include/net/tcp_states.h). */
const TCP_STATES: Record<string, string> = {
  "01": "ESTABLISHED",
  "02": "SYN_SENT",
  "03": "SYN_RECV",
  "04": "FIN_WAIT1",
  "05": "FIN_WAIT2",
  "06": "TIME_WAIT",
  "07": "CLOSE",
  "08": "CLOSE_WAIT",
  "09": "LAST_ACK",
  "0A": "LISTEN",
  "0B": "CLOSING"
}

/**
 * The IPv4 TCP sockets (of this network namespace) with one of `ports` at either end, counted by state:
 * `{ TIME_WAIT: 3, LISTEN: 1 }`. Every test listens on 127.0.0.1 only, so IPv4 is all there is.
 */
export const socketStates = (ports: ReadonlyArray<number>): Record<string, number> => {
  const counts: Record<string, number> = {}
  for (const line of fs.readFileSync("/proc/net/tcp", "utf8").split("\n").slice(1)) {
    const fields = line.trim().split(/\s+/)
    if (fields.length < 4) continue
    const local = parseInt(fields[1]!.split(":")[1]!, 16)
    const remote = parseInt(fields[2]!.split(":")[1]!, 16)
    if (!ports.includes(local) && !ports.includes(remote)) continue
    const state = TCP_STATES[fields[3]!] ?? `state ${fields[3]}`
    counts[state] = (counts[state] ?? 0) + 1
  }
  return counts
}
