/**
 * fullduplex over TCP loopback (127.0.0.1, ephemeral ports) against plain Node `net`.
 *
 * - `tcp echo`: a client sends 1 GiB in 64 KiB writes to an echo server while reading the echo back.
 *   Subject: `Echo.serve` (default streaming policy) and `Tcp.connect` + `Duplex.exchange`. Baseline: a
 *   `net` server doing `socket.pipe(socket)` and a `net` client that writes (honouring `'drain'`) while it
 *   counts `'data'` events. Server and client share this process, on both sides.
 * - `tcp ping-pong`: one byte out, wait for it to come back, repeat. Subject: `Echo.serve` and a
 *   `Tcp.connect` client that writes and then reads one chunk with `conn.read`. Baseline: the same
 *   `socket.pipe(socket)` server and a `net` client that writes the next byte from its `'data'` handler.
 * - `tcp echo server memory`: the 1 GiB echo against a server in a process of its own
 *   (`echoServerProcess.ts`), which samples its RSS; the client is the baseline's `net` client on both
 *   sides, so only the server differs. The table row is the throughput; the memory is a target line.
 *
 * Every socket on both sides has `TCP_NODELAY` on: fullduplex sets it by default (`noDelay: true`), and
 * the `net` sockets are created with the same `noDelay: true` option (`socket.setNoDelay(true)`). Every
 * run opens its own server and connection and closes both before it ends (the memory row's server
 * processes live over all runs of the case and are stopped after the last).
 */
import { Effect, Option, Stream } from "effect"
import { type ChildProcess, fork } from "node:child_process"
import * as net from "node:net"
import { fileURLToPath } from "node:url"
import { Duplex, Echo, Tcp } from "fullduplex"
import type { ServerKind, ToChild, ToParent } from "./echoServerProcess.js"
import { describeMemory, emptyMemoryObservation, peakRssCheck, recordMemory, replyOf, stopProcess } from "./memory.js"
import { type BenchCase, byteCountError, type Check, countBytes, formatBytes, verifyBytes } from "./harness.js"
import { type WriteProgress, writeAllThenEnd } from "./nodeStreams.js"
import { EchoCheck, echoCheckSink, PatternMismatch, patternChunk, repeat } from "./pattern.js"

const KiB = 1024
const MiB = 1024 * KiB
const GiB = 1024 * MiB

const HOST = "127.0.0.1"
const WRITE_SIZE = 64 * KiB
const ECHO_PAYLOAD_BYTES = GiB
/** About 1 s per run for `net` on this machine (≈ 60k round trips/s when quiet, fewer under load). */
const ROUND_TRIPS = 50_000
/** The memory target: the echo server's peak RSS at most this far above its idle RSS (from the issue). */
/** `Echo.serve`'s idle timeout: never reached by a working run (the harness times out a hung one). */
const IDLE_TIMEOUT = "10 minutes"

// -----------------------------------------------------------------------------------------------------
// payload and checks
// -----------------------------------------------------------------------------------------------------

/** One-byte pings `0x00` … `0xff`, allocated once; round trip `i` sends `PINGS[i & 0xff]`. */
const PINGS: ReadonlyArray<Uint8Array> = Array.from({ length: 256 }, (_, i) => Uint8Array.of(i))
const pingAt = (i: number): Uint8Array => PINGS[i & 0xff]!

// -----------------------------------------------------------------------------------------------------
// plain Node: server and clients
// -----------------------------------------------------------------------------------------------------

/** A `net` echo server on an ephemeral loopback port: `socket.pipe(socket)`. */
const listenNodeEcho = (): Promise<net.Server> =>
  new Promise((resolve, reject) => {
    const server = net.createServer({ noDelay: true }, (socket) => {
      socket.on("error", () => {}) // a reset is the client's business; it must not crash the bench
      socket.pipe(socket)
    })
    server.once("error", reject)
    server.listen({ host: HOST, port: 0 }, () => resolve(server))
  })

const portOf = (server: net.Server): number => (server.address() as net.AddressInfo).port

/** Closes the server; resolves once every connection it accepted is closed too. */
const closeServer = (server: net.Server): Promise<void> =>
  new Promise((resolve, reject) => server.close((err) => (err ? reject(err) : resolve())))

/** Runs `client` against a fresh `socket.pipe(socket)` server, then closes the server. */
const withNodeEchoServer = async (client: (port: number) => Promise<void>): Promise<void> => {
  const server = await listenNodeEcho()
  try {
    await client(portOf(server))
  } finally {
    await closeServer(server)
  }
}

export interface NodeEchoObservation {
  client: WriteProgress
  /** `'data'` events the client got. */
  reads: number
}

/**
 * The `net` echo client: writes `chunks` (waiting for `'drain'` whenever `write()` returns false), then
 * ends, while checking every `'data'` chunk; resolves once the socket is closed. Also the client of the
 * `proxy` row (`proxy.ts`).
 */
export const nodeEchoClient = (
  port: number,
  chunks: ReadonlyArray<Uint8Array>,
  payloadBytes: number,
  observation: NodeEchoObservation
): Promise<void> =>
  new Promise((resolve, reject) => {
    const socket = net.connect({ host: HOST, port, noDelay: true })
    const check = new EchoCheck()
    socket.on("data", (chunk: Buffer) => check.accept(chunk))
    socket.once("connect", () => {
      observation.client = writeAllThenEnd(socket, chunks)
    })
    socket.on("error", reject)
    socket.on("close", () => {
      observation.reads = check.chunks
      const error = check.error("net echo: bytes echoed back to the client", payloadBytes)
      if (error === undefined) resolve()
      else reject(error)
    })
  })

/** The `net` ping-pong client: writes one byte, waits for it in `'data'`, writes the next, then ends. */
const nodePingPongClient = (port: number, roundTrips: number): Promise<void> =>
  new Promise((resolve, reject) => {
    const socket = net.connect({ host: HOST, port, noDelay: true })
    let sent = 0
    let failure: Error | undefined
    const ping = () => socket.write(pingAt(sent++))
    socket.on("data", (chunk: Buffer) => {
      if (chunk.length !== 1 || chunk[0] !== pingAt(sent - 1)[0]) {
        failure = new Error(new PatternMismatch({ what: "net ping-pong", offset: sent - 1 }).message)
        socket.destroy()
      } else if (sent < roundTrips) ping()
      else socket.end()
    })
    socket.once("connect", ping)
    socket.on("error", reject)
    socket.on("close", () => {
      const error = failure ?? byteCountError("net ping-pong: round trips", roundTrips, sent)
      if (error === undefined) resolve()
      else reject(error)
    })
  })

// -----------------------------------------------------------------------------------------------------
// fullduplex: server and clients
// -----------------------------------------------------------------------------------------------------

interface FullduplexEchoObservation {
  /** Chunks the client's sink got. */
  reads: number
  /** Time the client's writes waited for the socket to drain. */
  writerBlockedMillis: number
}

const fullduplexEchoRun = (
  input: Stream.Stream<Uint8Array>,
  payloadBytes: number,
  observation: FullduplexEchoObservation
) =>
  Effect.scoped(
    Effect.gen(function* () {
      const server = yield* Echo.serve({ port: 0, idleTimeout: IDLE_TIMEOUT })
      const conn = yield* Tcp.connect(server.address)
      const check = yield* Duplex.exchange(conn, input, echoCheckSink)
      yield* check.verify("Tcp echo: bytes echoed back to the client", payloadBytes)
      const { outbound } = yield* conn.stats
      observation.reads = check.chunks
      observation.writerBlockedMillis = outbound.blockedMillis
    })
  )

const fullduplexPingPongRun = (roundTrips: number) =>
  Effect.scoped(
    Effect.gen(function* () {
      const server = yield* Echo.serve({ port: 0, idleTimeout: IDLE_TIMEOUT })
      const conn = yield* Tcp.connect(server.address)
      // `conn.read` is one chunk or None at EOF: the request/response way to read, without a Stream.
      for (let i = 0; i < roundTrips; i++) {
        const ping = pingAt(i)
        yield* conn.write(ping)
        const pong = yield* conn.read
        if (Option.isNone(pong) || pong.value.length !== 1 || pong.value[0] !== ping[0]) {
          return yield* new PatternMismatch({ what: "Tcp ping-pong", offset: i })
        }
      }
      yield* conn.end
      // After our FIN the server finishes and closes: its FIN must come with no byte before it.
      yield* verifyBytes(
        "Tcp ping-pong: bytes after the last round trip",
        0,
        yield* Stream.run(conn.readable, countBytes)
      )
    })
  )

// -----------------------------------------------------------------------------------------------------
// echo server processes (memory row)
// -----------------------------------------------------------------------------------------------------

type Memory = Extract<ToParent, { _tag: "Memory" }>

/** A forked `echoServerProcess.ts`: its port, and requests over IPC. */
class EchoServerProcess {
  private constructor(
    private readonly child: ChildProcess,
    readonly port: number
  ) {}

  static start(kind: ServerKind): Promise<EchoServerProcess> {
    const child = fork(fileURLToPath(new URL("./echoServerProcess.ts", import.meta.url)), [kind], {
      execArgv: ["--import", import.meta.resolve("tsx")],
      stdio: ["ignore", "inherit", "inherit", "ipc"]
    })
    return EchoServerProcess.reply(child, "Listening").then((listening) => new EchoServerProcess(child, listening.port))
  }

  private static reply<Tag extends ToParent["_tag"]>(child: ChildProcess, tag: Tag) {
    return replyOf<ToParent, Tag>(child, tag, "echo server process")
  }

  private send(message: ToChild): void {
    this.child.send(message)
  }

  /** Its highest RSS since the previous `measure` (or since it went idle). */
  measure(): Promise<Memory> {
    const memory = EchoServerProcess.reply(this.child, "Memory")
    this.send({ _tag: "Measure" })
    return memory
  }

  /** Asks it to close its server and exit; kills it if it has not exited within 5 s. */
  stop(): Promise<void> {
    return stopProcess(this.child, { _tag: "Stop" } satisfies ToChild)
  }
}

// -----------------------------------------------------------------------------------------------------
// cases
// -----------------------------------------------------------------------------------------------------

const echoCase = (): BenchCase => {
  const chunks = repeat(patternChunk(WRITE_SIZE), ECHO_PAYLOAD_BYTES)
  const input = Stream.fromIterable(chunks)
  const fullduplex: FullduplexEchoObservation = { reads: 0, writerBlockedMillis: 0 }
  const node: NodeEchoObservation = { client: { writes: 0, drainWaits: 0 }, reads: 0 }
  const average = (reads: number) => formatBytes(Math.round(ECHO_PAYLOAD_BYTES / Math.max(1, reads)))
  return {
    name: `tcp echo ${formatBytes(WRITE_SIZE)} writes`,
    writeSize: WRITE_SIZE,
    payloadBytes: ECHO_PAYLOAD_BYTES,
    description:
      `a client sends ${chunks.length} writes of one ${formatBytes(WRITE_SIZE)} chunk ` +
      `(${formatBytes(ECHO_PAYLOAD_BYTES)}) over loopback TCP to an echo server in the same process and ` +
      `reads the echo back as it writes, checking the byte count and each piece's first and last byte ` +
      `against the pattern sent; subject: \`Echo.serve({ port: 0 })\` (default streaming policy) and ` +
      `\`Tcp.connect\` + \`Duplex.exchange(conn, Stream.fromIterable(chunks), sink)\`; baseline: a \`net\` ` +
      `server doing \`socket.pipe(socket)\` and a \`net\` client writing with 'drain' handling, then \`end()\`, ` +
      `while it counts 'data' events. Both sides set \`TCP_NODELAY\`; each run opens and closes its own ` +
      `server and connection`,
    subject: {
      label: "Tcp + Echo.serve",
      run: () => Effect.runPromise(fullduplexEchoRun(input, ECHO_PAYLOAD_BYTES, fullduplex))
    },
    baseline: {
      label: "net + socket.pipe",
      run: () => withNodeEchoServer((port) => nodeEchoClient(port, chunks, ECHO_PAYLOAD_BYTES, node))
    },
    targets: { minRatio: 0.9 },
    observed: () =>
      `in the last runs the fullduplex client read the echo in ${fullduplex.reads} chunks (${average(fullduplex.reads)} ` +
      `on average) and its writes waited ${fullduplex.writerBlockedMillis.toFixed(0)} ms for 'drain'; the \`net\` ` +
      `client got ${node.reads} 'data' events (${average(node.reads)} on average) and \`write()\` returned false ` +
      `for ${node.client.drainWaits} of ${node.client.writes} writes`
  }
}

const pingPongCase = (): BenchCase => ({
  name: "tcp ping-pong 1 B",
  writeSize: 1,
  payloadBytes: ROUND_TRIPS,
  operation: "round trip",
  description:
    `${ROUND_TRIPS.toLocaleString("en-US")} round trips over one loopback TCP connection to an echo ` +
    `server in the same process: the client writes one byte, waits until it comes back (checking its value), ` +
    `and only then writes the next; subject: \`Echo.serve({ port: 0 })\` and a \`Tcp.connect\` client doing ` +
    `\`conn.write(byte)\` then \`conn.read\` per round trip; baseline: the ` +
    `\`socket.pipe(socket)\` server and a \`net\` client that writes the next byte from its 'data' handler. ` +
    `Both sides set \`TCP_NODELAY\` (\`net\` sockets with the \`noDelay: true\` option), so no write waits ` +
    `for Nagle's algorithm`,
  subject: { label: "Tcp + Echo.serve", run: () => Effect.runPromise(fullduplexPingPongRun(ROUND_TRIPS)) },
  baseline: {
    label: "net + socket.pipe",
    run: () => withNodeEchoServer((port) => nodePingPongClient(port, ROUND_TRIPS))
  },
  targets: { minRatio: 0.8 }
})

const memoryCase = (): BenchCase => {
  const chunks = repeat(patternChunk(WRITE_SIZE), ECHO_PAYLOAD_BYTES)
  const processes: { fullduplex?: EchoServerProcess; node?: EchoServerProcess } = {}
  const started = (which: keyof typeof processes): EchoServerProcess => {
    const p = processes[which]
    if (p === undefined) throw new Error(`the ${which} echo server process is not running`)
    return p
  }
  const memory = { fullduplex: emptyMemoryObservation(), node: emptyMemoryObservation() }
  const client: NodeEchoObservation = { client: { writes: 0, drainWaits: 0 }, reads: 0 }
  const runAgainst = (which: keyof typeof processes) => async () => {
    const server = started(which)
    await nodeEchoClient(server.port, chunks, ECHO_PAYLOAD_BYTES, client)
    recordMemory(await server.measure(), memory[which])
  }
  return {
    name: "tcp echo server memory",
    writeSize: WRITE_SIZE,
    payloadBytes: ECHO_PAYLOAD_BYTES,
    description:
      `the same ${formatBytes(ECHO_PAYLOAD_BYTES)} echo in ${formatBytes(WRITE_SIZE)} writes, to an echo ` +
      `server in a process of its own (\`benchmarks/echoServerProcess.ts\`, started once per side for all ` +
      `runs), driven by the baseline's \`net\` client from the bench process on both sides, so only the ` +
      `server differs; subject: \`Echo.serve({ port: 0 })\`; baseline: \`socket.pipe(socket)\`. The server ` +
      `process samples its RSS, and the memory held in \`ArrayBuffer\`s (where Node's \`Buffer\`s live, ` +
      `socket reads included), every 50 ms and reports the highest since the previous run; idle is 250 ms ` +
      `after it started listening, before any connection. The table shows throughput; the memory target is ` +
      `judged on the worst run, warm-up included`,
    subject: { label: "Echo.serve process", run: runAgainst("fullduplex") },
    baseline: { label: "socket.pipe process", run: runAgainst("node") },
    setUp: async () => {
      const [fullduplex, node] = await Promise.all([
        EchoServerProcess.start("fullduplex"),
        EchoServerProcess.start("node")
      ])
      processes.fullduplex = fullduplex
      processes.node = node
    },
    tearDown: async () => {
      await Promise.all([processes.fullduplex?.stop(), processes.node?.stop()])
    },
    observed: () =>
      `peak RSS above idle, warm-up first: ${describeMemory("Echo.serve process", memory.fullduplex)}; ` +
      `${describeMemory("socket.pipe process", memory.node)}`,
    checks: (): ReadonlyArray<Check> => [
      peakRssCheck(
        "the echo server",
        { label: "Echo.serve process", memory: memory.fullduplex },
        { label: "socket.pipe process", memory: memory.node }
      )
    ]
  }
}

export const cases: ReadonlyArray<BenchCase> = [echoCase(), pingPongCase(), memoryCase()]
