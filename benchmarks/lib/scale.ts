/**
 * What the idle-connection servers of the scale rows (`benchmarks/scale.ts`) share: their memory after a
 * full collection, and the walk through the connection counts, with their load in a child of their own.
 *
 * A server endpoint listens, then calls {@link measureIdle}: it forks `scale-client.js` (a plain `node`, no
 * `effect`, no `fullduplex`), takes a snapshot of its own memory before the first connection, then for each
 * count N asks the client to hold N connections open (each wrote its request and got its answer), waits for
 * the server to settle, collects and takes a snapshot again. The figures per connection are the growth over
 * the snapshot before the first connection, divided by N.
 *
 * The mux rows fork `scale-mux-client.js` instead (`client`), whose unit is a yamux session or a stream
 * (`shape`), and count what they count the same way.
 *
 * This module imports nothing but `node:` modules: a baseline endpoint that imports it loads neither
 * `effect` nor `fullduplex`.
 */
import { type ChildProcess, fork } from "node:child_process"
import { once } from "node:events"
import * as v8 from "node:v8"
import * as vm from "node:vm"

/** One snapshot of the process's memory, in bytes, after a full collection. */
export interface Memory {
  readonly rss: number
  readonly heapUsed: number
  readonly heapTotal: number
  readonly external: number
  readonly arrayBuffers: number
}

/** The memory at N open connections, and how many the server reported it had then. */
export interface Point {
  readonly n: number
  readonly open: number
  readonly memory: Memory
}

export interface IdleFigures {
  /** After listening, before the first connection. */
  readonly base: Memory
  readonly points: ReadonlyArray<Point>
  /** Connections the client could not open or that got no answer (they count as a failed run). */
  readonly failed: number
}

v8.setFlagsFromString("--expose-gc")
const gc = vm.runInNewContext("gc") as () => void

const settle = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** The process's memory after two full collections (the second frees what the first's finalizers let go). */
export const memoryNow = async (): Promise<Memory> => {
  gc()
  await settle(50)
  gc()
  const m = process.memoryUsage()
  return {
    rss: m.rss,
    heapUsed: m.heapUsed,
    heapTotal: m.heapTotal,
    external: m.external,
    arrayBuffers: m.arrayBuffers
  }
}

/** What the client is asked to do. */
export type ClientMessage =
  | {
      readonly _tag: "Open"
      /** The total to hold open. */
      readonly total: number
      readonly port: number
      /** Bytes each new connection writes (0: it waits for the server to speak first). */
      readonly send: number
      /** It waits for the server's first bytes before it counts as open (not for a server that answers at FIN). */
      readonly awaitAnswer: boolean
      /** For `scale-mux-client.js`: N mux sessions of one stream each, or N streams over one session. */
      readonly shape?: "sessions" | "streams"
    }
  | { readonly _tag: "Upstream" }
  | { readonly _tag: "Exit" }

/** What the client answers. */
export type ClientReply =
  | { readonly _tag: "Opened"; readonly open: number; readonly failed: number }
  | { readonly _tag: "Listening"; readonly port: number }

/**
 * A child running `scale-client.js` (or `client`, a script of `endpoints/` that speaks the same messages),
 * and a way to ask it something and get its answer.
 */
export class ScaleChild {
  private readonly child: ChildProcess
  constructor(client: string = "scale-client.js") {
    this.child = fork(new URL(`../endpoints/${client}`, import.meta.url), [], {
      stdio: ["ignore", "inherit", "inherit", "ipc"]
    })
  }

  async ask(message: ClientMessage): Promise<ClientReply> {
    const reply = once(this.child, "message") as Promise<[ClientReply]>
    const exited = once(this.child, "exit").then(([code]) => {
      throw new Error(`scale client exited (${String(code)}) before answering ${message._tag}`)
    })
    this.child.send(message)
    const [answer] = await Promise.race([reply, exited])
    return answer
  }

  async exit(): Promise<void> {
    const exited = once(this.child, "exit")
    this.child.send({ _tag: "Exit" } satisfies ClientMessage)
    const kill = setTimeout(() => this.child.kill("SIGKILL"), 5000)
    await exited
    clearTimeout(kill)
  }
}

/** A raw `net` echo server in a child of its own: the upstream of the proxy rows. Returns it and its port. */
export const startUpstream = async (): Promise<{ readonly child: ScaleChild; readonly port: number }> => {
  const child = new ScaleChild()
  const reply = await child.ask({ _tag: "Upstream" })
  if (reply._tag !== "Listening") throw new Error(`upstream answered ${reply._tag}`)
  return { child, port: reply.port }
}

/** How long the server is left alone after the client has its connections, before the snapshot. */
const SETTLE_MS = 1000

/**
 * Walks `counts` (ascending): the client holds that many connections to `port` open, then the server's
 * memory is taken. `open()` is the server's own count of open connections (checked against N).
 */
export const measureIdle = async (options: {
  readonly port: number
  readonly counts: ReadonlyArray<number>
  readonly send: number
  /** Default `true`: each connection waits for the server's first bytes. */
  readonly awaitAnswer?: boolean
  readonly open: () => number
  /** The client script under `endpoints/`. Default `scale-client.js`. */
  readonly client?: string
  /** Passed in each `Open` message (for `scale-mux-client.js`). */
  readonly shape?: "sessions" | "streams"
}): Promise<IdleFigures> => {
  const client = new ScaleChild(options.client)
  await settle(200)
  const base = await memoryNow()
  const points: Array<Point> = []
  let failed = 0
  for (const n of options.counts) {
    const reply = await client.ask({
      _tag: "Open",
      total: n,
      port: options.port,
      send: options.send,
      awaitAnswer: options.awaitAnswer ?? true,
      ...(options.shape === undefined ? {} : { shape: options.shape })
    })
    if (reply._tag !== "Opened") throw new Error(`client answered ${reply._tag}`)
    failed = reply.failed
    await settle(SETTLE_MS)
    const memory = await memoryNow()
    points.push({ n, open: options.open(), memory })
  }
  await client.exit()
  return { base, points, failed }
}
