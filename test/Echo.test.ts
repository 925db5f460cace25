import { assert, describe, it } from "@effect/vitest"
import { Cause, Effect, Exit, Fiber, Sink, Stream } from "effect"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { Duplex, DuplexError, Echo, Tcp } from "fullduplex"
import { assertDeadlockFree, concatBytes, firstDifference, randomBytes, readAll } from "fullduplex/testkit"
import { within } from "./helpers.js"
import { SpillQueue } from "../src/internal/spillQueue.js"

const MiB = 1024 * 1024
const PAYLOAD_BYTES = 64 * MiB
const CHUNK_BYTES = 64 * 1024

/** One 64 MiB random payload, shared by the tests, and its 64 KiB pieces. */
const payload = randomBytes(PAYLOAD_BYTES, 3)
const pieces = (bytes: Uint8Array, size = CHUNK_BYTES): Array<Uint8Array> => {
  const out: Array<Uint8Array> = []
  for (let at = 0; at < bytes.length; at += size) out.push(bytes.subarray(at, at + size))
  return out
}

const assertSameBytes = (got: Uint8Array, expected: Uint8Array, what: string) => {
  const diff = firstDifference(got, expected)
  assert.strictEqual(
    diff,
    -1,
    `${what}: got ${got.length} bytes, expected ${expected.length}; first difference at ${diff}`
  )
}

/** The naive client: write everything, half-close, and only then read. */
const naiveClient = (conn: Duplex.Duplex, bytes: Uint8Array) =>
  Effect.gen(function* () {
    yield* conn.writeAll(pieces(bytes))
    yield* conn.end
    return yield* readAll(conn)
  })

/** A fullduplex client: writes and reads concurrently. */
const exchangeClient = (conn: Duplex.Duplex, bytes: Uint8Array) =>
  Effect.map(Duplex.exchange(conn, Stream.fromIterable(pieces(bytes)), Sink.collect<Uint8Array>()), concatBytes)

/** Connects to `server` and runs `client` under the testkit's watchdog, in a scope of its own. */
const watchedClient = <A, E>(server: Tcp.Server, client: (conn: Duplex.Duplex) => Effect.Effect<A, E>) =>
  Effect.scoped(
    assertDeadlockFree(
      (watch) =>
        Effect.gen(function* () {
          const conn = yield* Tcp.connect(server.address)
          watch(conn)
          return yield* client(conn)
        }),
      { stallTimeout: "5 seconds", timeout: "60 seconds" }
    )
  )

const recordEvents = () => {
  const events: Array<Tcp.ServerEvent> = []
  return { events, onEvent: (e: Tcp.ServerEvent) => Effect.sync(() => void events.push(e)) }
}

const failureReason = (cause: Cause.Cause<unknown> | undefined): string | undefined => {
  const fail = cause?.reasons.find((r) => r._tag === "Fail")
  const error = fail?._tag === "Fail" ? fail.error : undefined
  return DuplexError.isDuplexError(error) ? error.reason._tag : undefined
}

/** Waits (bounded) until `check` holds, polling every 20 ms. */
const eventually = (what: string, check: () => boolean, millis = 10_000) =>
  Effect.gen(function* () {
    for (let waited = 0; waited < millis; waited += 20) {
      if (check()) return
      yield* Effect.sleep("20 millis")
    }
    assert.fail(`timed out after ${millis} ms waiting for ${what}`)
  })

describe("Echo over TCP, 64 MiB payloads", () => {
  it.live(
    "(a) control: a naive client against a naive socket.pipe(socket) server stalls, and the testkit says so",
    () =>
      Effect.gen(function* () {
        const server = net.createServer({ allowHalfOpen: true }, (socket) => {
          socket.on("error", () => {})
          socket.pipe(socket)
        })
        yield* Effect.addFinalizer(() =>
          Effect.sync(() => {
            server.close()
          })
        )
        yield* Effect.callback<void>((resume) => void server.listen(0, "127.0.0.1", () => resume(Effect.void)))
        const { port } = server.address() as net.AddressInfo
        const exit = yield* Effect.exit(
          Effect.scoped(
            assertDeadlockFree(
              (watch) =>
                Effect.gen(function* () {
                  const conn = yield* Tcp.connect({ port })
                  watch(conn)
                  return yield* naiveClient(conn, payload)
                }),
              { stallTimeout: "1 second", timeout: "30 seconds" }
            )
          )
        )
        assert.isTrue(Exit.isFailure(exit), "the naive pair should have stalled")
        assert.strictEqual(Exit.isFailure(exit) ? failureReason(exit.cause) : undefined, "StallDetected")
      })
  )

  it.live("(b) a client using exchange against the streaming echo gets every byte back", () =>
    Effect.gen(function* () {
      const { events, onEvent } = recordEvents()
      const server = yield* Echo.serve({ port: 0, onEvent })
      const echoed = yield* watchedClient(server, (conn) => exchangeClient(conn, payload))
      assertSameBytes(echoed, payload, "echo")
      yield* eventually("the connection's close event", () => events.some((e) => e._tag === "ConnectionClosed"))
      const closed = events.find((e) => e._tag === "ConnectionClosed")
      assert.strictEqual(closed?._tag === "ConnectionClosed" ? closed.ending : undefined, "completed")
    })
  )

  it.live(
    "(c) a naive client against the streaming echo is cut with StallDetected while other clients are served",
    () =>
      Effect.gen(function* () {
        const { events, onEvent } = recordEvents()
        const server = yield* Echo.serve({ port: 0, onEvent, policy: Echo.stream({ stallTimeout: "500 millis" }) })
        const naive = Effect.scoped(
          Effect.gen(function* () {
            const conn = yield* Tcp.connect(server.address)
            return yield* Effect.exit(naiveClient(conn, payload))
          })
        )
        const polite = Effect.scoped(
          Effect.gen(function* () {
            const conn = yield* Tcp.connect(server.address)
            return yield* exchangeClient(conn, payload.subarray(0, 8 * MiB))
          })
        )
        const [naiveExit, politeEcho] = yield* Effect.all([naive, polite], { concurrency: 2 }).pipe(
          Effect.timeout("30 seconds")
        )
        assertSameBytes(politeEcho, payload.subarray(0, 8 * MiB), "the polite client's echo")
        assert.isTrue(Exit.isFailure(naiveExit), "the naive client should have been cut")
        assert.strictEqual(Exit.isFailure(naiveExit) ? failureReason(naiveExit.cause) : undefined, "Broken")
        yield* eventually("both close events", () => events.filter((e) => e._tag === "ConnectionClosed").length === 2)
        const endings = events.flatMap((e) =>
          e._tag === "ConnectionClosed" ? [{ ending: e.ending, reason: failureReason(e.cause) }] : []
        )
        assert.sameDeepMembers(endings, [
          { ending: "completed", reason: undefined },
          { ending: "failed", reason: "StallDetected" }
        ])
        assert.strictEqual((yield* server.stats).failed, 1)
      })
  )

  it.live("(d) a naive client against the spill policy gets every byte back with bounded memory", () =>
    Effect.gen(function* () {
      const directory = fs.mkdtempSync(path.join(os.tmpdir(), "fullduplex-echo-test-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(directory, { recursive: true, force: true })))
      const memoryBytes = 4 * MiB
      const server = yield* Echo.serve({ port: 0, policy: Echo.spill({ memoryBytes, directory }) })
      const echoed = yield* watchedClient(server, (conn) => naiveClient(conn, payload))
      assertSameBytes(echoed, payload, "spilled echo")
      const stats = yield* server.echo
      assert.isAbove(stats.spilledBytes, 0, "nothing was spilled: the test did not exercise the file")
      assert.isAtMost(stats.peakBufferedBytes, memoryBytes + MiB, "the server buffered more than memoryBytes + 1 MiB")
      assert.isAtLeast(stats.peakBufferedBytes, memoryBytes / 2, "the memory backlog was never used")
      yield* eventually("the spill file to be gone", () => fs.readdirSync(directory).length === 0)
    })
  )

  it.live("(e) store-and-forward echoes a request within the limit and answers an error line beyond it", () =>
    Effect.gen(function* () {
      const within = yield* Echo.serve({ port: 0, policy: Echo.storeAndForward({ maxRequestBytes: PAYLOAD_BYTES }) })
      const echoed = yield* Effect.scoped(
        Effect.flatMap(Tcp.connect(within.address), (conn) => naiveClient(conn, payload))
      ).pipe(Effect.timeout("60 seconds"))
      assertSameBytes(echoed, payload, "stored echo")
      assert.isAtMost((yield* within.echo).peakBufferedBytes, PAYLOAD_BYTES + MiB)

      const limit = MiB
      const over = yield* Echo.serve({ port: 0, policy: Echo.storeAndForward({ maxRequestBytes: limit }) })
      const answer = yield* Effect.scoped(
        Effect.flatMap(Tcp.connect(over.address), (conn) => naiveClient(conn, payload))
      ).pipe(Effect.timeout("60 seconds"))
      assert.strictEqual(
        new TextDecoder().decode(answer),
        `fullduplex echo: request exceeds ${limit} bytes; nothing echoed\n`
      )
      const stats = yield* over.echo
      assert.strictEqual(stats.tooLarge, 1)
      assert.isAtMost(stats.peakBufferedBytes, limit + MiB)
    })
  )
})

describe("Echo.handler over an in-memory pair", () => {
  it.live("the spill policy keeps order across memory and file for many small chunks", () =>
    Effect.gen(function* () {
      const [client, server] = yield* Duplex.pair({ capacity: 4096 })
      const bytes = randomBytes(3 * MiB, 9)
      yield* Effect.forkScoped(Effect.andThen(Echo.handler(Echo.spill({ memoryBytes: 64 * 1024 }))(server), server.end))
      const echoed = yield* assertDeadlockFree(naiveClient(client, bytes), {
        duplexes: [client, server],
        stallTimeout: "5 seconds"
      })
      assertSameBytes(echoed, bytes, "spilled echo over a pair")
    })
  )

  it.effect("rejects a policy with out-of-range limits with InvalidOptions", () =>
    Effect.gen(function* () {
      const [, server] = yield* Duplex.pair()
      for (const policy of [
        Echo.stream({ stallTimeout: 0 }),
        Echo.stream({ stallTimeout: "-1 second" }),
        Echo.spill({ memoryBytes: 1024, stallTimeout: Infinity }),
        Echo.spill({ memoryBytes: -1 }),
        Echo.spill({ memoryBytes: 0, maxFileBytes: 10 }),
        Echo.storeAndForward({ maxRequestBytes: 1.5 })
      ]) {
        const error = yield* Effect.flip(Echo.handler(policy)(server))
        assert.strictEqual(error.reason._tag, "InvalidOptions")
      }
      const serveError = yield* Effect.flip(Echo.serve({ port: 0, policy: Echo.spill({ memoryBytes: -1 }) }))
      assert.strictEqual(serveError.reason._tag, "InvalidOptions")
      const stallError = yield* Effect.flip(Echo.serve({ port: 0, policy: Echo.stream({ stallTimeout: 0 }) }))
      assert.strictEqual(stallError.reason._tag, "InvalidOptions")
    })
  )
})

describe("Echo.serve checks", () => {
  it.live("rejects a spill directory that does not exist, before listening", () =>
    Effect.gen(function* () {
      const directory = path.join(os.tmpdir(), "fullduplex-no-such-directory", String(process.pid))
      const error = yield* Effect.flip(Echo.serve({ port: 0, policy: Echo.spill({ memoryBytes: 0, directory }) }))
      assert.strictEqual(error.reason._tag, "InvalidOptions")
      assert.include(error.message, "directory")
    })
  )
})

describe("SpillQueue (the spill policy's backlog)", () => {
  const KiB = 1024
  const tempDirectory = Effect.acquireRelease(
    Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "fullduplex-spill-test-"))),
    (d) => Effect.sync(() => fs.rmSync(d, { recursive: true, force: true }))
  )
  /** Descriptors of this process open on a spill file (Linux: /proc/self/fd). */
  const openSpillFiles = () =>
    fs.existsSync("/proc/self/fd")
      ? fs.readdirSync("/proc/self/fd").filter((fd) => {
          try {
            return fs.readlinkSync(`/proc/self/fd/${fd}`).includes("fullduplex-spill")
          } catch {
            return false
          }
        }).length
      : 0

  it.live("keeps the file within maxFileBytes when the consumer keeps up only partly, and keeps order", () =>
    Effect.gen(function* () {
      const directory = yield* tempDirectory
      const maxFileBytes = 256 * KiB
      const queue = new SpillQueue({ memoryBytes: 0, maxFileBytes, directory, label: "test" })
      yield* Effect.addFinalizer(() => queue.close)
      const chunks = 200
      const piece = (i: number) => new Uint8Array(64 * KiB).fill(i & 0xff)
      let peakFileBytes = 0
      const producer = Effect.gen(function* () {
        for (let i = 0; i < chunks; i++) yield* queue.push(piece(i))
        queue.end()
      })
      const consumer = Effect.gen(function* () {
        const seen: Array<number> = []
        while (true) {
          const chunk = yield* queue.take
          if (chunk === undefined) return seen
          for (let at = 0; at < chunk.length; at += 64 * KiB) seen.push(chunk[at]!)
          const size = (queue as unknown as { fileWritten: number }).fileWritten
          if (size > peakFileBytes) peakFileBytes = size
          yield* Effect.sleep(1) // slower than the producer: the file never drains on its own
        }
      })
      const [, seen] = yield* Effect.all([producer, consumer], { concurrency: 2 }).pipe(
        within("30 seconds", "spill producer and consumer")
      )
      assert.deepStrictEqual(
        seen,
        Array.from({ length: chunks }, (_, i) => i & 0xff)
      )
      assert.isAtMost(peakFileBytes, maxFileBytes, "the spill file grew past maxFileBytes")
      assert.strictEqual(queue.spilledBytes, chunks * 64 * KiB)
    })
  )

  it.live("a push interrupted while the file is being opened leaves no open file after close", () =>
    Effect.gen(function* () {
      const directory = yield* tempDirectory
      const before = openSpillFiles()
      const queue = new SpillQueue({ memoryBytes: 0, maxFileBytes: 1024 * KiB, directory, label: "test" })
      const push = yield* Effect.forkChild(queue.push(new Uint8Array(10)), { startImmediately: true })
      yield* Fiber.interrupt(push) // say, the client reset just as the first byte spilled
      yield* queue.close
      yield* Effect.sleep("200 millis") // the open that was in flight completes meanwhile
      assert.strictEqual(openSpillFiles() - before, 0, "a spill file was left open")
      assert.deepStrictEqual(fs.readdirSync(directory), [])
    })
  )
})
