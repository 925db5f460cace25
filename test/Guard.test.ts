/**
 * The servers' time limits against hostile peers (issue #14): a peer that sends and never reads is cut by
 * `sendTimeout`, a peer that trickles a byte now and then by `minRate`, on `Echo.serve`, `Proxy.serve` and
 * `Shutdown.serve` alike, while a well-behaved client is served byte-exact meanwhile; every cut gives back
 * its sockets (the testkit's leak check). Before the guard, 20 such peers held 20 connections of each
 * server for as long as they liked.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Scope, Stream } from "effect"
import { Duplex, Echo, Proxy, Shutdown, Tcp } from "fullduplex"
import { randomBytes, withLeakCheck } from "fullduplex/testkit"
import * as net from "node:net"
import { eventually, rawClient, within } from "./helpers.js"

const KiB = 1024
/** Tricklers, and as many peers that never read, per server: hundreds of cuts, then the fds and handles are counted. */
const PEERS = 100

/** Limits small enough for a test, the idle limit out of the way: only the guard can cut these peers. */
const limits = {
  idleTimeout: "20 seconds",
  sendTimeout: "400 millis",
  minRate: { bytes: 400, window: "400 millis" }
} as const

interface Served {
  readonly name: string
  readonly port: number
  readonly stats: Effect.Effect<Tcp.ServerStats>
  /** Bytes that start a well-formed conversation, sent before a trickler's slow bytes. */
  readonly opening: Uint8Array
  /** What a peer writes each time: `bytes` of the server's protocol. */
  readonly chunk: (bytes: number) => Uint8Array
  /** A byte-exact check of a good client. */
  readonly goodClient: Effect.Effect<void, Error>
}

const echoRoundTrip = (port: number) =>
  Effect.gen(function* () {
    const upload = randomBytes(256 * KiB, port)
    const outcome = yield* rawClient({ port }, upload)
    if (outcome.error !== undefined || outcome.received.length !== upload.length)
      return yield* Effect.fail(new Error(`good client: ${outcome.error ?? ""} ${outcome.received.length} bytes back`))
    for (let i = 0; i < upload.length; i++)
      if (outcome.received[i] !== upload[i]) return yield* Effect.fail(new Error(`good client: byte ${i} differs`))
  })

const raw = (bytes: number) => new Uint8Array(bytes)

const echoHandler = (conn: Duplex.Duplex) => Stream.run(conn.readable, conn.sink).pipe(Effect.andThen(conn.end))

/** A server that echoes raw bytes: no opening, raw chunks, an echo round trip as its good client. */
const echoing = (name: string, server: Tcp.Server): Served => {
  const port = (server.address as Tcp.TcpAddress).port
  return { name, port, stats: server.stats, opening: new Uint8Array(0), chunk: raw, goodClient: echoRoundTrip(port) }
}

const servers: ReadonlyArray<readonly [string, Effect.Effect<Served, unknown, Scope.Scope>]> = [
  [
    "Echo.serve",
    Effect.gen(function* () {
      const server = yield* Echo.serve({ port: 0, onEvent: () => Effect.void, ...limits })
      return echoing("Echo.serve", server)
    })
  ],
  [
    "Proxy.serve",
    Effect.gen(function* () {
      const upstream = yield* Tcp.serve({ port: 0, onEvent: () => Effect.void }, echoHandler)
      const server = yield* Proxy.serve({
        listen: { port: 0, ...limits },
        target: { host: "127.0.0.1", port: (upstream.address as Tcp.TcpAddress).port },
        onEvent: () => Effect.void
      })
      return echoing("Proxy.serve", server)
    })
  ],
  [
    "Shutdown.serve",
    Effect.gen(function* () {
      const server = yield* Shutdown.serve({
        port: 0,
        onEvent: () => Effect.void,
        handle: (request) => Effect.succeed(request),
        ...limits
      })
      const port = (server.address as Tcp.TcpAddress).port
      const goodClient = Effect.scoped(
        Effect.gen(function* () {
          const client = yield* Shutdown.client(yield* Tcp.connect({ port }))
          const request = randomBytes(64 * KiB, port)
          const answer = yield* client.request(request)
          assert.deepStrictEqual(answer, request)
        })
      ).pipe(Effect.mapError((e) => new Error(`good client: ${String(e)}`)))
      // A data frame announcing 4 KiB, whose payload then comes a byte at a time.
      const opening = Uint8Array.of(0, 0, 0, 0x10, 0)
      // Requests of `bytes` in all, header included, so that their answers fill the peer's buffers.
      const chunk = (bytes: number) => {
        const frame = new Uint8Array(bytes)
        new DataView(frame.buffer).setUint32(1, bytes - 5)
        return frame
      }
      return { name: "Shutdown.serve", port, stats: server.stats, opening, chunk, goodClient }
    })
  ]
]

/** A raw peer that never reads: `opening`, then `chunk` every `everyMillis`. Destroyed with the scope. */
const hostilePeer = (port: number, opening: Uint8Array, chunk: Uint8Array, everyMillis: number) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const socket = net.connect({ host: "127.0.0.1", port })
      socket.on("error", () => {})
      socket.pause()
      let closed = false
      socket.on("close", () => (closed = true))
      socket.write(opening)
      const ticker = setInterval(() => {
        if (socket.writableLength < 4 * chunk.length) socket.write(chunk)
      }, everyMillis)
      socket.on("close", () => clearInterval(ticker))
      return { socket, ticker, closed: () => closed }
    }),
    ({ socket, ticker }) => Effect.sync(() => (clearInterval(ticker), socket.destroy()))
  )

describe("servers cut hostile peers by their time limits (issue #14)", () => {
  for (const [name, start] of servers) {
    it.live(
      `${name}: ${PEERS} tricklers and ${PEERS} peers that never read are cut, a good client is served meanwhile, nothing leaks`,
      () =>
        Effect.scoped(
          Effect.gen(function* () {
            const served = yield* start
            yield* withLeakCheck(
              Effect.scoped(
                Effect.gen(function* () {
                  // Tricklers: a byte every 100 ms (4 a window, 8 with an echo), far below 400.
                  const tricklers = yield* Effect.forEach(Array.from({ length: PEERS }), () =>
                    hostilePeer(served.port, served.opening, Uint8Array.of(0), 100)
                  )
                  // Never-readers: 64 KiB every 20 ms, never a byte read: the server's answers back up.
                  const deaf = yield* Effect.forEach(Array.from({ length: PEERS }), () =>
                    hostilePeer(served.port, new Uint8Array(0), served.chunk(64 * KiB), 20)
                  )
                  yield* served.goodClient
                  const stats = yield* eventually(
                    `${name}: all ${2 * PEERS} hostile peers cut`,
                    served.stats,
                    (s) => s.tooSlow + s.sendTimeouts + s.failed + s.idleTimeouts >= 2 * PEERS,
                    10_000
                  )
                  assert.isAtLeast(stats.tooSlow, PEERS, `the tricklers were cut by minRate: ${JSON.stringify(stats)}`)
                  assert.isAtLeast(stats.sendTimeouts, 1, `never-readers cut by sendTimeout: ${JSON.stringify(stats)}`)
                  assert.strictEqual(stats.idleTimeouts, 0, JSON.stringify(stats))
                  yield* eventually(
                    `${name}: the hostile peers see their connections closed`,
                    Effect.sync(() => [...tricklers, ...deaf].filter((p) => !p.closed()).length),
                    (open) => open === 0,
                    5_000
                  )
                })
              ),
              { label: name }
            )
          })
        ).pipe(within("40 seconds", name)),
      60_000
    )
  }
})
