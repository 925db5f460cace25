/**
 * The hot path: pumps that copy without a fiber per chunk (Echo's stream policy, `splice`, `Proxy`),
 * sockets that read into a reused buffer while a pump consumes them, the Node writer, and the batched
 * reads of `exchange` and `pipeThrough`. Every transfer is checked byte for byte against a random payload,
 * so a read buffer reused while its bytes were still held would show.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Schedule, Sink, Stream } from "effect"
import { Duplex, Echo, Subprocess } from "fullduplex"
import { concatBytes, firstDifference, randomBytes, randomChunks, readAll } from "fullduplex/testkit"
import * as net from "node:net"
import * as NodeStream from "node:stream"
import { inboundPipeOf } from "../src/internal/bytePipe.js"
import { setLending } from "../src/internal/nodeReader.js"
import { duplexErrorOf, loopbackSockets, within } from "./helpers.js"

const KiB = 1024
const MiB = 1024 * KiB

const assertSameBytes = (got: Uint8Array, expected: Uint8Array, what: string) =>
  assert.strictEqual(
    firstDifference(got, expected),
    -1,
    `${what}: got ${got.length} bytes, expected ${expected.length}; first difference at ${firstDifference(got, expected)}`
  )

/**
 * A raw client: writes `payload` in random pieces (honouring 'drain'), half-closes, and reads everything
 * back, pausing for a moment now and then so that the far end's writes back meet a full window.
 */
const slowEchoClient = (socket: net.Socket, payload: Uint8Array, seed: number) =>
  Effect.callback<Uint8Array, Error>((resume) => {
    const got: Array<Uint8Array> = []
    let reads = 0
    socket.on("data", (chunk: Buffer) => {
      got.push(chunk)
      if (++reads % 16 === 0) {
        socket.pause()
        setTimeout(() => socket.resume(), 2)
      }
    })
    socket.once("end", () => resume(Effect.succeed(concatBytes(got))))
    socket.once("error", (err) => resume(Effect.fail(err)))
    const pieces = randomChunks(payload, 96 * KiB, seed)
    let i = 0
    const writeMore = () => {
      while (i < pieces.length) if (!socket.write(pieces[i++]!)) return void socket.once("drain", writeMore)
      socket.end()
    }
    writeMore()
  })

describe("Echo's spill policy over a socket", () => {
  it.live(
    "is a pump while the client keeps up, hands over to its queue at the first write that waits, and echoes every byte intact in order",
    () =>
      Effect.gen(function* () {
        const server = yield* Echo.serve({ host: "127.0.0.1", port: 0, policy: Echo.spill({ memoryBytes: 256 * KiB }) })
        const port = (server.address as { port: number }).port
        // A client that reads as it writes: the echo stays a pump (nothing queued).
        const quick = net.connect({ host: "127.0.0.1", port })
        const small = randomBytes(64 * KiB, 21)
        const quickBack = yield* Effect.callback<Uint8Array, Error>((resume) => {
          const got: Array<Uint8Array> = []
          quick.on("data", (chunk: Buffer) => got.push(chunk))
          quick.once("end", () => resume(Effect.succeed(concatBytes(got))))
          quick.once("error", (err) => resume(Effect.fail(err)))
          quick.end(small)
        }).pipe(within("10 seconds", "the quick client's echo"))
        assertSameBytes(quickBack, small, "quick echo")
        quick.destroy()
        assert.strictEqual((yield* server.echo).peakBufferedBytes, 0, "a client that kept up had its echo queued")
        // A client that reads nothing until it has written everything: a write back waits, the queue takes
        // over (and spills past 256 KiB), and reading goes on meanwhile, so the client's writes all complete.
        const slow = net.connect({ host: "127.0.0.1", port })
        const payload = randomBytes(24 * MiB, 22)
        const back = yield* Effect.callback<Uint8Array, Error>((resume) => {
          const got: Array<Uint8Array> = []
          slow.pause()
          slow.on("data", (chunk: Buffer) => got.push(chunk))
          slow.once("end", () => resume(Effect.succeed(concatBytes(got))))
          slow.once("error", (err) => resume(Effect.fail(err)))
          const pieces = randomChunks(payload, 96 * KiB, 23)
          let i = 0
          const writeMore = () => {
            while (i < pieces.length) if (!slow.write(pieces[i++]!)) return void slow.once("drain", writeMore)
            slow.end(() => slow.resume())
          }
          writeMore()
        }).pipe(within("20 seconds", "the slow client's echo"))
        assertSameBytes(back, payload, "slow echo")
        slow.destroy()
        const stats = yield* server.echo
        assert.isAbove(stats.peakBufferedBytes, 0, "the queue never took over (the test did not exercise it)")
      }).pipe(Effect.scoped)
  )
})

describe("Echo's stream policy over a socket", () => {
  it.live("reads into a reused buffer and echoes every byte intact to a client that reads slowly", () =>
    Effect.gen(function* () {
      const [client, accepted] = yield* loopbackSockets
      const conn = yield* Duplex.fromNodeDuplex(accepted)
      const echo = yield* Effect.forkChild(Effect.andThen(Echo.handler()(conn), conn.end), { startImmediately: true })
      const payload = randomBytes(24 * MiB, 11)
      const back = yield* slowEchoClient(client, payload, 12).pipe(within("10 seconds", "the echo"))
      yield* Fiber.join(echo)
      assertSameBytes(back, payload, "echo")
      const pipe = inboundPipeOf(conn)!
      assert.isAbove(pipe.lentChunks, 0, "the socket never read into a reused buffer")
      assert.isAbove(pipe.keptLentChunks, 0, "no write back was held by the socket (the test did not exercise it)")
      assert.isBelow(pipe.copiedLentChunks, pipe.lentChunks, "every lent chunk was copied")
      client.destroy()
    })
  )

  it.live("without Node's onread fields stays on 'data' events and echoes every byte intact", () =>
    Effect.gen(function* () {
      setLending(false)
      yield* Effect.addFinalizer(() => Effect.sync(() => setLending(true)))
      const [client, accepted] = yield* loopbackSockets
      const conn = yield* Duplex.fromNodeDuplex(accepted)
      const echo = yield* Effect.forkChild(Effect.andThen(Echo.handler()(conn), conn.end), { startImmediately: true })
      const payload = randomBytes(8 * MiB, 13)
      const back = yield* slowEchoClient(client, payload, 14).pipe(within("10 seconds", "the echo"))
      yield* Fiber.join(echo)
      assertSameBytes(back, payload, "echo")
      assert.strictEqual(inboundPipeOf(conn)!.lentChunks, 0)
      client.destroy()
    })
  )

  it.live("a client that only sends small messages keeps the socket on 'data' events", () =>
    Effect.gen(function* () {
      const [client, accepted] = yield* loopbackSockets
      const conn = yield* Duplex.fromNodeDuplex(accepted)
      const echo = yield* Effect.forkChild(Effect.andThen(Echo.handler()(conn), conn.end), { startImmediately: true })
      const payload = randomBytes(64 * KiB, 15)
      const back = yield* Effect.callback<Uint8Array, Error>((resume) => {
        const got: Array<Uint8Array> = []
        let at = 0
        client.on("data", (chunk: Buffer) => {
          got.push(chunk)
          if (at < payload.length) client.write(payload.subarray(at, (at += 100)))
          else if (concatBytes(got).length === payload.length) client.end()
        })
        client.once("end", () => resume(Effect.succeed(concatBytes(got))))
        client.write(payload.subarray(at, (at += 100)))
      }).pipe(within("10 seconds", "the ping-pong"))
      yield* Fiber.join(echo)
      assertSameBytes(back, payload, "echo")
      assert.strictEqual(inboundPipeOf(conn)!.lentChunks, 0)
      client.destroy()
    })
  )
})

describe("splice between Node-backed duplexes", () => {
  it.live("relays both ways at once over two TCP connections, byte-exact, with reused read buffers", () =>
    Effect.gen(function* () {
      const [clientA, acceptedA] = yield* loopbackSockets
      const [clientB, acceptedB] = yield* loopbackSockets
      const a = yield* Duplex.fromNodeDuplex(acceptedA)
      const b = yield* Duplex.fromNodeDuplex(acceptedB)
      const relay = yield* Effect.forkChild(Duplex.splice(a, b), { startImmediately: true })
      const up = randomBytes(16 * MiB, 21)
      const down = randomBytes(12 * MiB, 22)
      // clientA sends `up` and reads slowly what clientB sends; clientB the other way round.
      const exchangeRaw = (socket: net.Socket, send: Uint8Array, seed: number) =>
        Effect.callback<Uint8Array, Error>((resume) => {
          const got: Array<Uint8Array> = []
          let reads = 0
          socket.on("data", (chunk: Buffer) => {
            got.push(chunk)
            if (++reads % 8 === 0) {
              socket.pause()
              setTimeout(() => socket.resume(), 1)
            }
          })
          socket.once("end", () => resume(Effect.succeed(concatBytes(got))))
          socket.once("error", (err) => resume(Effect.fail(err)))
          const pieces = randomChunks(send, 80 * KiB, seed)
          let i = 0
          const writeMore = () => {
            while (i < pieces.length) if (!socket.write(pieces[i++]!)) return void socket.once("drain", writeMore)
            socket.end()
          }
          writeMore()
        })
      const [gotB, gotA] = yield* Effect.all([exchangeRaw(clientA, up, 23), exchangeRaw(clientB, down, 24)], {
        concurrency: 2
      }).pipe(within("15 seconds", "the relay"))
      const counts = yield* Fiber.join(relay)
      assertSameBytes(gotB, down, "b → a")
      assertSameBytes(gotA, up, "a → b")
      assert.deepStrictEqual(counts, { aToB: up.length, bToA: down.length })
      assert.isAbove(inboundPipeOf(a)!.lentChunks + inboundPipeOf(b)!.lentChunks, 0)
      clientA.destroy()
      clientB.destroy()
    })
  )

  it.live("a destination that holds lent bytes while the source reads on gets them intact", () =>
    Effect.gen(function* () {
      // The destination's own mark is 1 MiB, so writes it has not finished leave room for more: the
      // source reads on while the destination still holds the bytes of earlier reads.
      const server = net.createServer({ allowHalfOpen: true })
      yield* Effect.addFinalizer(() => Effect.sync(() => server.close()))
      const accepted: Array<net.Socket> = []
      const port = yield* Effect.callback<number>((resume) => {
        server.on("connection", (socket) => accepted.push(socket))
        server.listen(0, "127.0.0.1", () => resume(Effect.succeed((server.address() as net.AddressInfo).port)))
      })
      const connect = (options: net.SocketConstructorOpts & NodeStream.DuplexOptions) =>
        Effect.callback<net.Socket>((resume) => {
          const socket = new net.Socket({ allowHalfOpen: true, ...options })
          socket.on("error", () => {}).connect(port, "127.0.0.1", () => resume(Effect.succeed(socket)))
        })
      const sender = yield* connect({})
      const destination = yield* connect({ writableHighWaterMark: MiB })
      yield* Effect.sleep(20) // both accepted
      const [fromSender, toReader] = accepted as [net.Socket, net.Socket]
      const a = yield* Duplex.fromNodeDuplex(fromSender)
      const b = yield* Duplex.fromNodeDuplex(destination)
      toReader.end() // nothing comes back the other way
      const relay = yield* Effect.forkChild(Duplex.splice(a, b), { startImmediately: true })
      const payload = randomBytes(16 * MiB, 71)
      const got = Effect.callback<Uint8Array>((resume) => {
        const chunks: Array<Uint8Array> = []
        let reads = 0
        toReader.on("data", (chunk: Buffer) => {
          chunks.push(chunk)
          if (++reads % 4 === 0) {
            toReader.pause()
            setTimeout(() => toReader.resume(), 3)
          }
        })
        toReader.once("end", () => resume(Effect.succeed(concatBytes(chunks))))
      })
      const reading = yield* Effect.forkChild(got, { startImmediately: true })
      const pieces = randomChunks(payload, 64 * KiB, 72)
      yield* Effect.callback<void>((resume) => {
        let i = 0
        const writeMore = () => {
          while (i < pieces.length) if (!sender.write(pieces[i++]!)) return void sender.once("drain", writeMore)
          sender.end(() => resume(Effect.void))
        }
        writeMore()
      })
      const back = yield* Fiber.join(reading).pipe(within("15 seconds", "the relay"))
      yield* Fiber.join(relay)
      assertSameBytes(back, payload, "relayed")
      assert.isAbove(inboundPipeOf(a)!.keptLentChunks, 0, "the destination never held lent bytes")
      for (const socket of [sender, destination, ...accepted]) socket.destroy()
    })
  )

  it.live("relays a socket through a child process and back, byte-exact", () =>
    Effect.gen(function* () {
      const [client, accepted] = yield* loopbackSockets
      const conn = yield* Duplex.fromNodeDuplex(accepted)
      const cat = yield* Subprocess.spawn("cat")
      const relay = yield* Effect.forkChild(Duplex.splice(conn, cat), { startImmediately: true })
      const payload = randomBytes(16 * MiB, 31)
      const back = yield* slowEchoClient(client, payload, 32).pipe(within("15 seconds", "the relay through cat"))
      yield* Fiber.join(relay)
      assertSameBytes(back, payload, "through cat")
      assert.isAbove(inboundPipeOf(cat)!.lentChunks, 0, "cat's stdout never read into a reused buffer")
      client.destroy()
    })
  )

  it.live("relays between in-memory pairs of any capacity, byte-exact, half-closing each way", () =>
    Effect.gen(function* () {
      for (const capacity of [0, 1, 7, 64 * KiB]) {
        const [outerA, a] = yield* Duplex.pair({ capacity, label: `left${capacity}` })
        const [b, outerB] = yield* Duplex.pair({ capacity, label: `right${capacity}` })
        const relay = yield* Effect.forkChild(Duplex.splice(a, b), { startImmediately: true })
        const up = randomBytes(capacity === 0 ? 64 * KiB : 1 * MiB, capacity + 1)
        const down = randomBytes(capacity === 0 ? 32 * KiB : 512 * KiB, capacity + 2)
        const side = (d: Duplex.Duplex, send: Uint8Array, seed: number) =>
          Duplex.exchange(d, Stream.fromIterable(randomChunks(send, 5000, seed)), Sink.collect()).pipe(
            Effect.map(concatBytes)
          )
        const [gotA, gotB] = yield* Effect.all([side(outerA, up, 3), side(outerB, down, 4)], {
          concurrency: 2
        }).pipe(within("15 seconds", `the relay at capacity ${capacity}`))
        yield* Fiber.join(relay)
        assertSameBytes(gotB, up, `a → b at capacity ${capacity}`)
        assertSameBytes(gotA, down, `b → a at capacity ${capacity}`)
      }
    })
  )

  it.live("an abort of one side mid-transfer fails the splice and aborts the other", () =>
    Effect.gen(function* () {
      const [clientA, acceptedA] = yield* loopbackSockets
      const [clientB, acceptedB] = yield* loopbackSockets
      const a = yield* Duplex.fromNodeDuplex(acceptedA)
      const b = yield* Duplex.fromNodeDuplex(acceptedB)
      const relay = yield* Effect.forkChild(Duplex.splice(a, b), { startImmediately: true })
      // clientB reads from the start, so the pump is not held back when clientA resets (a paused source
      // socket would not see the reset until it reads again: the test below covers a paused pump).
      clientB.on("data", () => {})
      const bClosed = Effect.callback<void>((resume) => {
        if (clientB.destroyed) return resume(Effect.void)
        clientB.once("close", () => resume(Effect.void))
      })
      clientA.write(randomBytes(4 * MiB, 41))
      yield* Effect.sleep(20)
      clientA.resetAndDestroy()
      const exit = yield* Fiber.await(relay).pipe(within("5 seconds", "the failed relay"))
      assert.strictEqual(duplexErrorOf(exit, "the splice").reason._tag, "Broken")
      yield* bClosed.pipe(within("5 seconds", "the other leg's close"))
    })
  )

  it.live(
    "a source that fails while the pump waits on a destination whose peer never reads fails the splice at once",
    () =>
      Effect.gen(function* () {
        const [clientA, acceptedA] = yield* loopbackSockets
        const [clientB, acceptedB] = yield* loopbackSockets
        const a = yield* Duplex.fromNodeDuplex(acceptedA)
        const b = yield* Duplex.fromNodeDuplex(acceptedB)
        const relay = yield* Effect.forkChild(Duplex.splice(a, b), { startImmediately: true })
        // clientB never reads: b's socket fills and the pump pauses acceptedA.
        clientA.on("error", () => {})
        clientA.write(randomBytes(32 * MiB, 43))
        yield* Effect.suspend(() => (acceptedA.isPaused() ? Effect.void : Effect.fail("flowing"))).pipe(
          Effect.retry({ schedule: Schedule.spaced("5 millis") }),
          within("5 seconds", "the pump pausing on a full destination")
        )
        acceptedA.destroy(new Error("a local failure of the source socket"))
        const exit = yield* Fiber.await(relay).pipe(within("2 seconds", "the splice after its source failed"))
        assert.strictEqual(duplexErrorOf(exit, "the splice").reason._tag, "Broken")
        assert.isTrue(acceptedB.destroyed, "the other leg is aborted")
        clientA.destroy()
        clientB.destroy()
      })
  )
})

/** A Node duplex whose writable side calls back at once (`sync`) or after a macrotask, and records writes. */
const recordingStream = (options: { readonly sync: boolean; readonly highWaterMark: number }) => {
  const written: Array<Uint8Array> = []
  const stream = new NodeStream.Duplex({
    writableHighWaterMark: options.highWaterMark,
    read() {},
    write(chunk: Buffer, _encoding, callback) {
      written.push(Uint8Array.from(chunk))
      if (options.sync) callback()
      else setImmediate(callback)
    },
    final(callback) {
      callback()
    }
  })
  return { stream, written }
}

describe("the Node writer", () => {
  it.live("a write the stream takes at once completes in the same step, without waiting for 'drain'", () =>
    Effect.gen(function* () {
      const { stream, written } = recordingStream({ sync: true, highWaterMark: 16 })
      const conn = yield* Duplex.fromNodeDuplex(stream, { highWaterMark: 64 })
      // 64 bytes is four times the stream's mark: `write()` answers false, yet the bytes are gone already.
      for (let i = 0; i < 10; i++) Effect.runSync(conn.write(new Uint8Array(64).fill(i)))
      assert.strictEqual(concatBytes(written).length, 640)
      assert.isFalse((yield* conn.stats).outbound.blocked)
    })
  )

  it.live("concurrent writes larger than the mark reach the stream in call order, never interleaved", () =>
    Effect.gen(function* () {
      const { stream, written } = recordingStream({ sync: false, highWaterMark: 100 })
      const conn = yield* Duplex.fromNodeDuplex(stream, { highWaterMark: 100 })
      const writers = yield* Effect.forEach(
        [1, 2, 3],
        (n) => Effect.forkChild(conn.write(new Uint8Array(1000).fill(n)), { startImmediately: true }),
        { concurrency: 1 }
      )
      yield* Fiber.joinAll(writers).pipe(within("5 seconds", "the writes"))
      const all = concatBytes(written)
      assert.strictEqual(all.length, 3000)
      for (let i = 0; i < 3000; i++) assert.strictEqual(all[i], 1 + Math.floor(i / 1000), `byte ${i}`)
      assert.isTrue(
        written.every((piece) => piece.length <= 100),
        "a piece larger than highWaterMark"
      )
    })
  )

  it.live("end waits for the writes queued before it, then finishes the stream", () =>
    Effect.gen(function* () {
      const { stream, written } = recordingStream({ sync: false, highWaterMark: 10 })
      const conn = yield* Duplex.fromNodeDuplex(stream, { highWaterMark: 10 })
      const writer = yield* Effect.forkChild(conn.write(new Uint8Array(500).fill(7)), { startImmediately: true })
      yield* conn.end.pipe(within("5 seconds", "the end"))
      assert.strictEqual(concatBytes(written).length, 500)
      assert.isTrue(stream.writableFinished)
      yield* Fiber.join(writer)
      const late = yield* Effect.exit(conn.write(new Uint8Array(1)))
      assert.strictEqual(duplexErrorOf(late, "a write after end").reason._tag, "Closed")
    })
  )

  it.live("an interrupted write keeps the pieces handed over and drops the rest", () =>
    Effect.gen(function* () {
      // A stream that never calls back: the first piece is handed over, then the write waits for room.
      const stream = new NodeStream.Duplex({ writableHighWaterMark: 16, read() {}, write() {} })
      const conn = yield* Duplex.fromNodeDuplex(stream, { highWaterMark: 100 })
      const writer = yield* Effect.forkChild(conn.write(new Uint8Array(1000)), { startImmediately: true })
      yield* Effect.sleep(5)
      yield* Fiber.interrupt(writer)
      const stats = yield* conn.stats
      assert.strictEqual(stats.outbound.bytes, 100)
      assert.isFalse(stats.outbound.blocked, "the interrupted write still counts as held back")
    })
  )
})

describe("batched reads", () => {
  it.live("pipeThrough fails at once when its input fails, though the peer never answers", () =>
    Effect.gen(function* () {
      const [near, far] = yield* Duplex.pair()
      yield* Effect.forkChild(Stream.runDrain(far.readable))
      const input = Stream.concat(
        Stream.make(new Uint8Array(10)),
        Stream.fromEffect(Effect.andThen(Effect.sleep(10), Effect.fail("input broke" as const)))
      )
      const exit = yield* Effect.exit(Stream.runDrain(Duplex.pipeThrough(input, near))).pipe(
        within("5 seconds", "the failed pipeThrough")
      )
      assert.isTrue(Exit.isFailure(exit))
      if (Exit.isFailure(exit)) assert.include(String(exit.cause), "input broke")
    })
  )

  it.live("exchange over a socket receives every byte in order while the peer echoes", () =>
    Effect.gen(function* () {
      const [client, accepted] = yield* loopbackSockets
      accepted.pipe(accepted)
      const conn = yield* Duplex.fromNodeDuplex(client)
      const payload = randomBytes(8 * MiB, 51)
      const back = yield* Duplex.exchange(
        conn,
        Stream.fromIterable(randomChunks(payload, 70 * KiB, 52)),
        Sink.collect()
      ).pipe(Effect.map(concatBytes), within("10 seconds", "the exchange"))
      assertSameBytes(back, payload, "exchange")
      accepted.destroy()
    })
  )

  it.live("pipeThrough a child process delivers every byte in order", () =>
    Effect.gen(function* () {
      const payload = randomBytes(8 * MiB, 61)
      const back = yield* Stream.fromIterable(randomChunks(payload, 50 * KiB, 62)).pipe(
        Subprocess.pipeThrough("cat"),
        Stream.runCollect,
        Effect.map(concatBytes),
        within("10 seconds", "cat")
      )
      assertSameBytes(back, payload, "through cat")
      // The same through readAll, which reads one chunk at a time.
      const proc = yield* Subprocess.spawn("cat")
      const reader = yield* Effect.forkChild(readAll(proc), { startImmediately: true })
      yield* Effect.andThen(proc.writeAll(randomChunks(payload, 50 * KiB, 63)), proc.end)
      assertSameBytes(yield* Fiber.join(reader), payload, "readAll")
    })
  )
})
