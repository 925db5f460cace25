/**
 * What `npm run bench` measures: the cases (one process layout each, fullduplex's or a baseline's) and the
 * rows that compare them (a subject case against one or more anchor cases run in the same rounds).
 *
 * A case's processes start in order; each that listens prints its port, which the next process gets
 * (`--target` for a proxy, `--port` for the client, always the last process). Every process is a fresh
 * `node` running a compiled endpoint from `benchmarks/build/endpoints/`.
 */
import { formatBytes } from "./lib/common.js"

/**
 * The name a process has in a case, and in the tables. An `attacker` (the bounds rows, `bounds.ts`) is told
 * the last server's port as a client is, but reports no payload count for the runner to check.
 */
export type Role = "client" | "server" | "proxy" | "echo" | "attacker"

export interface ProcessSpec {
  readonly role: Role
  /** The endpoint, a file of `benchmarks/endpoints/` without its extension. */
  readonly script: string
  readonly args: ReadonlyArray<string>
  /** It prints `READY {"port"}`; the next process connects to it. */
  readonly listens?: boolean
  /** The next listening process is told this one's port as `--target` (the proxy's echo server). */
  readonly isTarget?: boolean
  /** Run as `node --import effect …`: the same code in a process that has loaded Effect first. */
  readonly preloadEffect?: boolean
}

export type Metric = "mibps" | "rtps"

export interface Case {
  readonly id: string
  /** A short name for the tables. */
  readonly label: string
  readonly fullduplex: boolean
  readonly metric: Metric
  /** Payload bytes of one run (or round trips, for `rtps`): what CPU time is divided by. */
  readonly units: number
  readonly processes: ReadonlyArray<ProcessSpec>
  /** One sentence: what each process does. */
  readonly what: string
}

export interface Row {
  /** What `--row` takes, and RESULTS.md's rerun command uses. */
  readonly id: string
  /** The row's number in issue #12. */
  readonly issue: string
  readonly title: string
  readonly subject: string
  readonly anchors: ReadonlyArray<string>
  /** The processes whose CPU time and memory are compared (for several, CPU time is their sum). */
  readonly measured: ReadonlyArray<Role>
  /** Of the anchors, the better (higher median rate) is the target's anchor: rows 7 and 8. */
  readonly bestOf?: ReadonlyArray<string>
  /** The subject's server reports `peakBufferedBytes` against its bound: the Mux rows. */
  readonly peakBuffered?: boolean
  /**
   * Throughput targets, as ratios to an anchor (by anchor id; for `bestOf` rows, to the better anchor,
   * under the key `"best"`): issue #12's for its rows (≥ 0.95× the raw anchor, ping-pong with both ends
   * ≥ 0.9×), the Mux issue's (#15) for the Mux rows.
   */
  readonly targets?: Readonly<Record<string, number>>
  /** Issue #12: CPU time per GiB (or per round trip) of the measured process(es) at most this × the anchor's. */
  readonly maxCpuRatio?: number
  /** Issue #12: the measured process's peak RSS at most this many MiB above the target anchor's peak RSS. */
  readonly maxPeakRssAboveAnchorMiB?: number
}

export interface Settings {
  /** Payload of the byte-moving rows over TCP and pipes (`--bytes`, default 1 GiB). */
  readonly bytes: number
  /** Payload of the in-memory rows: 16 × `bytes` (see RESULTS.md: a 1 GiB run would last ~30 ms). */
  readonly memBytes: number
  readonly roundTrips: number
  readonly warmupRoundTrips: number
}

export const MEM_FACTOR = 16
const WINDOW_4M = "4m"

const client = (script: string, args: ReadonlyArray<string>, preloadEffect = false): ProcessSpec => ({
  role: "client",
  script,
  args,
  preloadEffect
})
const server = (script: string, args: ReadonlyArray<string>): ProcessSpec => ({
  role: "server",
  script,
  args,
  listens: true
})

export const makeCases = (s: Settings): ReadonlyArray<Case> => {
  const bytes = `--bytes=${s.bytes}`
  const memBytes = `--bytes=${s.memBytes}`
  const ping = [`--roundtrips=${s.roundTrips}`, `--warmup=${s.warmupRoundTrips}`]
  const size = formatBytes(s.bytes)
  const tcp = (
    id: string,
    label: string,
    fullduplex: boolean,
    srv: ProcessSpec,
    cli: ProcessSpec,
    what: string
  ): Case => ({ id, label, fullduplex, metric: "mibps", units: s.bytes, processes: [srv, cli], what })
  const discard = server("net-server", ["--mode=discard"])
  const rawEcho = server("net-server", ["--mode=echo"])
  const fdEcho = server("fd-server", ["--mode=echo"])
  const pingCase = (id: string, label: string, srv: ProcessSpec, cliScript: string, what: string): Case => ({
    id,
    label,
    fullduplex: srv.script.startsWith("fd-") || cliScript.startsWith("fd-"),
    metric: "rtps",
    units: s.roundTrips,
    processes: [srv, client(cliScript, ["--mode=pingpong", ...ping])],
    what
  })
  const proxyCase = (id: string, label: string, proxy: ProcessSpec, what: string): Case => ({
    id,
    label,
    fullduplex: proxy.script.startsWith("fd-"),
    metric: "mibps",
    units: s.bytes,
    processes: [
      { role: "echo", script: "net-server", args: ["--mode=echo"], listens: true, isTarget: true },
      proxy,
      client("net-client", ["--mode=echo", bytes])
    ],
    what
  })
  const single = (id: string, label: string, fullduplex: boolean, cli: ProcessSpec, units: number, what: string) => ({
    id,
    label,
    fullduplex,
    metric: "mibps" as const,
    units,
    processes: [cli],
    what
  })
  const mux = (id: string, label: string, peer: "fd" | "yamux" | "h2", streams: number, window: boolean): Case => {
    const common = [`--streams=${streams}`, ...(window ? [`--window=${WINDOW_4M}`] : [])]
    const [srvScript, srvArgs, cliScript, cliArgs] =
      peer === "fd"
        ? ["fd-server", ["--mode=mux", ...common], "fd-client", ["--mode=mux", bytes, ...common]]
        : [peer, ["--role=server", ...common], peer, ["--role=client", bytes, ...common]]
    const per = formatBytes(s.bytes / streams)
    const shape = streams === 1 ? `one stream of ${size}` : `${streams} concurrent streams of ${per}`
    const whats = {
      fd:
        `\`Tcp.connect\` + \`Mux.client\`, ${shape}, each written with \`stream.write\` then \`stream.end\`; ` +
        `\`Tcp.serve\` + \`Mux.server\` in its own process reads each with \`stream.read\` and replies with ` +
        `the count; ${window ? "`windowBytes: 4 MiB` on both sessions" : "default options"}`,
      yamux:
        `@chainsafe/libp2p-yamux 8 on both ends of a \`net\` socket, ${shape}, written with ` +
        `\`send()\`/\`onDrain()\` then \`close()\`, read with \`for await\`; default options`,
      h2:
        `\`node:http2\` h2c, one POST per stream (${shape}), written with \`write()\`/'drain', read with ` +
        `'data'; ${window ? "4 MiB initial window per stream, the server session's window 4 MiB × streams" : "Node's default windows (64 KiB − 1)"}`
    }
    return {
      id,
      label,
      fullduplex: peer === "fd",
      metric: "mibps",
      units: s.bytes,
      processes: [server(srvScript, srvArgs), client(cliScript, cliArgs)],
      what: whats[peer]
    }
  }
  return [
    // TCP one-way (rows 1, 2; the raw one-way is also an anchor of the Mux rows)
    tcp(
      "tcp-oneway-net",
      "net write/'drain'",
      false,
      discard,
      client("net-client", ["--mode=oneway", bytes]),
      `raw \`net\` client writing ${size} with \`write()\`/'drain', then \`end()\`; raw discard server (checks the pattern, replies with the count)`
    ),
    tcp(
      "tcp-oneway-fd-write",
      "conn.write loop",
      true,
      discard,
      client("fd-client", ["--mode=oneway-write", bytes]),
      "`Tcp.connect`, `for (…) yield* conn.write(chunk)`, `conn.end`, the reply read with `conn.read`; the same raw discard server"
    ),
    tcp(
      "tcp-oneway-fd-sink",
      "Stream.run(…, conn.sink)",
      true,
      discard,
      client("fd-client", ["--mode=oneway-sink", bytes]),
      "`Tcp.connect`, `Stream.run(Stream.fromIterable(chunks), conn.sink)`, `conn.end`, the reply read; the same raw discard server"
    ),
    // TCP echo (rows 3, 4, 5, 12)
    tcp(
      "tcp-echo-net",
      "net client · socket.pipe",
      false,
      rawEcho,
      client("net-client", ["--mode=echo", bytes]),
      "raw `net` client writing with `write()`/'drain' while counting and checking 'data'; `socket.pipe(socket)` server"
    ),
    tcp(
      "tcp-echo-net-effect",
      "net client (Effect loaded) · socket.pipe",
      false,
      rawEcho,
      client("net-client", ["--mode=echo", bytes], true),
      "the raw `net` echo client in a process started with `--import effect`; `socket.pipe(socket)` server"
    ),
    tcp(
      "tcp-echo-fd-client",
      "Tcp.connect + exchange · socket.pipe",
      true,
      rawEcho,
      client("fd-client", ["--mode=echo", bytes]),
      "`Tcp.connect` + `Duplex.exchange(conn, Stream.fromIterable(chunks), sink)`, the sink counting and checking; `socket.pipe(socket)` server"
    ),
    tcp(
      "tcp-echo-fd-server",
      "net client · Echo.serve",
      true,
      fdEcho,
      client("net-client", ["--mode=echo", bytes]),
      "the raw `net` echo client; `Echo.serve` (default stream policy, default options)"
    ),
    tcp(
      "tcp-echo-fd-both",
      "Tcp.connect + exchange · Echo.serve",
      true,
      fdEcho,
      client("fd-client", ["--mode=echo", bytes]),
      "the fullduplex echo client of `tcp-echo-fd-client`; `Echo.serve`"
    ),
    // proxy (row 6)
    proxyCase(
      "proxy-net",
      "a.pipe(b); b.pipe(a)",
      { role: "proxy", script: "net-server", args: ["--mode=proxy"], listens: true },
      "raw `net` echo client → raw pipe proxy (`a.pipe(b); b.pipe(a)`, `allowHalfOpen`, `noDelay`) → `socket.pipe` echo server, three processes"
    ),
    proxyCase(
      "proxy-fd",
      "Proxy.serve",
      { role: "proxy", script: "fd-server", args: ["--mode=proxy"], listens: true },
      "raw `net` echo client → `Proxy.serve` (default options) → `socket.pipe` echo server, three processes"
    ),
    // cat (rows 7, 8, 12)
    single(
      "cat-spawn",
      "child_process.spawn",
      false,
      client("cat-spawn", [bytes]),
      s.bytes,
      "`child_process.spawn(\"cat\")`, stdin written with `write()`/'drain', stdout counted and checked in 'data', until 'close'"
    ),
    single(
      "cat-spawn-effect",
      "child_process.spawn (Effect loaded)",
      false,
      client("cat-spawn", [bytes], true),
      s.bytes,
      "the `child_process.spawn` cat client in a process started with `--import effect`"
    ),
    single(
      "cat-execa",
      "execa duplex()",
      false,
      client("cat-execa", [bytes]),
      s.bytes,
      "execa 10 `execa(\"cat\", { buffer: false }).duplex()`, written with `write()`/'drain', read in 'data', then the subprocess awaited"
    ),
    single(
      "cat-fd-exchange",
      "Subprocess.spawn + exchange",
      true,
      client("fd-cat", ["--mode=exchange", bytes]),
      s.bytes,
      '`Subprocess.spawn("cat")` + `Duplex.exchange(proc, Stream.fromIterable(chunks), sink)`, then `proc.exit`'
    ),
    single(
      "cat-fd-pipethrough",
      "Subprocess.pipeThrough",
      true,
      client("fd-cat", ["--mode=pipethrough", bytes]),
      s.bytes,
      '`Stream.run(Stream.fromIterable(chunks).pipe(Subprocess.pipeThrough("cat")), sink)`'
    ),
    // ping-pong (row 9)
    pingCase(
      "ping-net",
      "net client · socket.pipe",
      rawEcho,
      "net-client",
      `raw \`net\` client: 1 byte written, its echo awaited in 'data', ${s.roundTrips} times after ${s.warmupRoundTrips} untimed; \`socket.pipe(socket)\` server`
    ),
    pingCase(
      "ping-fd-client",
      "Tcp.connect · socket.pipe",
      rawEcho,
      "fd-client",
      "`Tcp.connect`, then `yield* conn.write(ping); yield* conn.read` per round trip; `socket.pipe(socket)` server"
    ),
    pingCase(
      "ping-fd-server",
      "net client · Echo.serve",
      fdEcho,
      "net-client",
      "the raw ping-pong client; `Echo.serve`"
    ),
    pingCase(
      "ping-fd-both",
      "Tcp.connect · Echo.serve",
      fdEcho,
      "fd-client",
      "the fullduplex ping-pong client; `Echo.serve`"
    ),
    // in memory (row 10)
    single(
      "mem-pt-oneway",
      "PassThrough + for await",
      false,
      client("mem-node", ["--mode=oneway", memBytes]),
      s.memBytes,
      "a default `PassThrough` written with `write()`/'drain' and read with `for await`"
    ),
    single(
      "mem-fd-oneway",
      "Duplex.pair",
      true,
      client("fd-mem", ["--mode=oneway", memBytes]),
      s.memBytes,
      "`Duplex.pair()`: `a.write` loop then `a.end`, against `Stream.run(b.readable, sink)` in a second fiber"
    ),
    single(
      "mem-pt-echo",
      "2 PassThroughs + for-await echo",
      false,
      client("mem-node", ["--mode=echo", memBytes]),
      s.memBytes,
      "two default `PassThrough`s with a `for await` echo task between them; the client writes one and reads the other with `for await`"
    ),
    single(
      "mem-fd-echo",
      "Duplex.pair + exchange",
      true,
      client("fd-mem", ["--mode=echo", memBytes]),
      s.memBytes,
      "`Duplex.pair()`; peer `Stream.run(server.readable, server.sink)` then `server.end`; client `Duplex.exchange(client, Stream.fromIterable(chunks), sink)`"
    ),
    // Mux (row 11)
    mux("mux-fd-1", "Mux, 1 stream", "fd", 1, false),
    mux("mux-yamux-1", "libp2p-yamux, 1 stream", "yamux", 1, false),
    mux("mux-h2-1", "http2, 1 stream", "h2", 1, false),
    mux("mux-fd-16", "Mux, 16 streams", "fd", 16, false),
    mux("mux-yamux-16", "libp2p-yamux, 16 streams", "yamux", 16, false),
    mux("mux-h2-16", "http2, 16 streams", "h2", 16, false),
    mux("mux-fd4m-1", "Mux 4 MiB window, 1 stream", "fd", 1, true),
    mux("mux-h2-4m-1", "http2 4 MiB window, 1 stream", "h2", 1, true),
    mux("mux-fd4m-16", "Mux 4 MiB window, 16 streams", "fd", 16, true),
    mux("mux-h2-4m-16", "http2 4 MiB window, 16 streams", "h2", 16, true)
  ]
}

export const ROWS: ReadonlyArray<Row> = [
  {
    id: "tcp-oneway-write",
    issue: "1",
    title: "TCP one-way, `conn.write` loop",
    subject: "tcp-oneway-fd-write",
    anchors: ["tcp-oneway-net"],
    measured: ["client"]
  },
  {
    id: "tcp-oneway-sink",
    issue: "2",
    title: "TCP one-way, `conn.sink`",
    subject: "tcp-oneway-fd-sink",
    anchors: ["tcp-oneway-net"],
    measured: ["client"]
  },
  {
    id: "tcp-echo-client",
    issue: "3",
    title: "TCP echo client",
    subject: "tcp-echo-fd-client",
    anchors: ["tcp-echo-net", "tcp-echo-net-effect"],
    measured: ["client"],
    targets: { "tcp-echo-net": 0.95 },
    maxCpuRatio: 1.2,
    maxPeakRssAboveAnchorMiB: 16
  },
  {
    id: "tcp-echo-effect-floor",
    issue: "12 (beside 3)",
    title: "raw Node in a process that loaded Effect: the `net` echo client",
    subject: "tcp-echo-net-effect",
    anchors: ["tcp-echo-net"],
    measured: ["client"]
  },
  {
    id: "tcp-echo-server",
    issue: "4",
    title: "TCP echo server, `Echo.serve`",
    subject: "tcp-echo-fd-server",
    anchors: ["tcp-echo-net"],
    measured: ["server"],
    targets: { "tcp-echo-net": 0.95 },
    maxCpuRatio: 1.2,
    maxPeakRssAboveAnchorMiB: 16
  },
  {
    id: "tcp-echo-both",
    issue: "5",
    title: "TCP echo, both ends fullduplex",
    subject: "tcp-echo-fd-both",
    anchors: ["tcp-echo-net"],
    measured: ["client", "server"],
    targets: { "tcp-echo-net": 0.95 },
    maxCpuRatio: 1.2,
    maxPeakRssAboveAnchorMiB: 16
  },
  {
    id: "proxy",
    issue: "6",
    title: "TCP proxy, `Proxy.serve`",
    subject: "proxy-fd",
    anchors: ["proxy-net"],
    measured: ["proxy"],
    targets: { "proxy-net": 0.95 },
    maxCpuRatio: 1.2,
    maxPeakRssAboveAnchorMiB: 16
  },
  {
    id: "cat-exchange",
    issue: "7",
    title: "cat, `Subprocess.spawn` + `exchange`",
    subject: "cat-fd-exchange",
    anchors: ["cat-spawn", "cat-execa", "cat-spawn-effect"],
    measured: ["client"],
    bestOf: ["cat-spawn", "cat-execa"],
    targets: { best: 0.95 },
    maxCpuRatio: 1.2,
    maxPeakRssAboveAnchorMiB: 16
  },
  {
    id: "cat-effect-floor",
    issue: "12 (beside 7)",
    title: "raw Node in a process that loaded Effect: the `spawn` cat client",
    subject: "cat-spawn-effect",
    anchors: ["cat-spawn"],
    measured: ["client"]
  },
  {
    id: "cat-pipethrough",
    issue: "8",
    title: "cat, `Subprocess.pipeThrough`",
    subject: "cat-fd-pipethrough",
    anchors: ["cat-execa", "cat-spawn"],
    measured: ["client"],
    bestOf: ["cat-spawn", "cat-execa"],
    targets: { best: 0.95 },
    maxCpuRatio: 1.2,
    maxPeakRssAboveAnchorMiB: 16
  },
  {
    id: "pingpong-client",
    issue: "9",
    title: "1-byte ping-pong, fullduplex client",
    subject: "ping-fd-client",
    anchors: ["ping-net"],
    measured: ["client"]
  },
  {
    id: "pingpong-server",
    issue: "9",
    title: "1-byte ping-pong, `Echo.serve`",
    subject: "ping-fd-server",
    anchors: ["ping-net"],
    measured: ["server"]
  },
  {
    id: "pingpong-both",
    issue: "9",
    title: "1-byte ping-pong, both ends fullduplex",
    subject: "ping-fd-both",
    anchors: ["ping-net"],
    measured: ["client", "server"],
    targets: { "ping-net": 0.9 },
    maxCpuRatio: 1.2,
    maxPeakRssAboveAnchorMiB: 16
  },
  {
    id: "mem-oneway",
    issue: "10",
    title: "in memory, one-way",
    subject: "mem-fd-oneway",
    anchors: ["mem-pt-oneway"],
    measured: ["client"],
    targets: { "mem-pt-oneway": 1.5 }
  },
  {
    id: "mem-echo",
    issue: "10",
    title: "in memory, echo",
    subject: "mem-fd-echo",
    anchors: ["mem-pt-echo"],
    measured: ["client"],
    targets: { "mem-pt-echo": 1.5 }
  },
  {
    id: "mux-1",
    issue: "11",
    title: "Mux over TCP, 1 stream, default windows",
    subject: "mux-fd-1",
    anchors: ["mux-yamux-1", "mux-h2-1", "tcp-oneway-net"],
    measured: ["client", "server"],
    peakBuffered: true,
    targets: { "mux-yamux-1": 1.2, "tcp-oneway-net": 0.9 }
  },
  {
    id: "mux-16",
    issue: "11",
    title: "Mux over TCP, 16 streams, default windows",
    subject: "mux-fd-16",
    anchors: ["mux-yamux-16", "mux-h2-16", "tcp-oneway-net"],
    measured: ["client", "server"],
    peakBuffered: true,
    targets: { "mux-yamux-16": 1.2, "tcp-oneway-net": 1.0 }
  },
  {
    id: "mux-1-4mib",
    issue: "11",
    title: "Mux over TCP, 1 stream, 4 MiB windows",
    subject: "mux-fd4m-1",
    anchors: ["mux-h2-4m-1"],
    measured: ["client", "server"],
    peakBuffered: true,
    targets: { "mux-h2-4m-1": 1.0 }
  },
  {
    id: "mux-16-4mib",
    issue: "11",
    title: "Mux over TCP, 16 streams, 4 MiB windows",
    subject: "mux-fd4m-16",
    anchors: ["mux-h2-4m-16"],
    measured: ["client", "server"],
    peakBuffered: true,
    targets: { "mux-h2-4m-16": 1.0 }
  }
]
