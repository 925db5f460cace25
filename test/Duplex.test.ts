import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Option, Scope, Sink, Stream } from "effect"
import { TestClock } from "effect/testing"
import * as net from "node:net"
import { Duplex as NodeDuplex, PassThrough } from "node:stream"
import { Duplex, DuplexError } from "fullduplex"
import {
  assertDeadlockFree,
  collectBytes,
  concatBytes,
  firstDifference,
  randomBytes,
  readAll
} from "fullduplex/testkit"
import { loopbackSockets } from "./helpers.js"

const echo = (d: Duplex.Duplex) => Effect.andThen(Stream.run(d.readable, d.sink), d.end)
const text = (s: string) => new TextEncoder().encode(s)
const decode = (b: Uint8Array) => new TextDecoder().decode(b)

/** The failure of an exit as a DuplexError reason tag, or "success"/"other". */
const reasonOf = <A, E>(exit: Exit.Exit<A, E>): string => {
  if (Exit.isSuccess(exit)) return "success"
  const fail = exit.cause.reasons.find((r) => r._tag === "Fail")
  const error = fail?._tag === "Fail" ? fail.error : undefined
  return DuplexError.isDuplexError(error) ? error.reason._tag : "other"
}

const errorOf = <A, E>(exit: Exit.Exit<A, E>): DuplexError.DuplexError => {
  assert.isTrue(Exit.isFailure(exit))
  const fail = Exit.isFailure(exit) ? exit.cause.reasons.find((r) => r._tag === "Fail") : undefined
  const error = fail?._tag === "Fail" ? fail.error : undefined
  assert.isTrue(DuplexError.isDuplexError(error), `expected a DuplexError, got ${String(error)}`)
  return error as DuplexError.DuplexError
}

/** Lets forked fibers run until they block. */
const settle = Effect.gen(function* () {
  for (let i = 0; i < 20; i++) yield* Effect.yieldNow
})

describe("Duplex.pair", () => {
  it.effect("rejects a negative or fractional capacity with InvalidOptions", () =>
    Effect.gen(function* () {
      for (const capacity of [-1, 1.5, Number.NaN]) {
        const error = errorOf(yield* Effect.exit(Duplex.pair({ capacity })))
        assert.strictEqual(error.reason._tag, "InvalidOptions")
        assert.include(error.message, "capacity")
      }
    })
  )

  it.effect("is a Duplex and nothing else is", () =>
    Effect.gen(function* () {
      const [a] = yield* Duplex.pair()
      assert.isTrue(Duplex.isDuplex(a))
      assert.isFalse(Duplex.isDuplex({ readable: a.readable }))
      assert.strictEqual(a.label, "pair.a")
    })
  )

  it.effect("holds a write larger than the capacity until a reader comes, buffering at most the capacity", () =>
    Effect.gen(function* () {
      const [a, b] = yield* Duplex.pair({ capacity: 10 })
      const payload = randomBytes(25, 1)
      const writer = yield* Effect.forkChild(a.write(payload), { startImmediately: true })
      yield* settle
      assert.isUndefined(writer.pollUnsafe(), "the write must wait for a reader")
      const stats = yield* a.stats
      assert.strictEqual(stats.outbound.buffered, 10)
      assert.strictEqual(stats.outbound.bytes, 10, "the piece that fits is accepted")
      assert.isTrue(stats.outbound.blocked)
      assert.isTrue((yield* b.stats).inbound.blocked, "the peer sees its reader holding the writer back")
      yield* a.end
      const got = yield* readAll(b)
      yield* Fiber.join(writer)
      assert.strictEqual(firstDifference(got, payload), -1)
      const after = yield* a.stats
      assert.strictEqual(after.outbound.peakBuffered, 10)
      assert.strictEqual(after.outbound.bytes, 25)
      assert.isFalse(after.outbound.blocked)
    })
  )

  it.effect("refills only a half-empty buffer, so a reader of small chunks does not cut writes into slivers", () =>
    Effect.gen(function* () {
      const [a, b] = yield* Duplex.pair({ capacity: 1024 })
      const reader = yield* Effect.forkChild(Stream.runCollect(b.readable), { startImmediately: true })
      yield* a.write(new Uint8Array(1)) // a 1-byte chunk sits in the buffer ahead of a large write
      yield* a.write(new Uint8Array(64 * 1024))
      yield* a.end
      const sizes = (yield* Fiber.join(reader)).map((c) => c.length)
      assert.strictEqual(
        sizes.reduce((x, y) => x + y, 0),
        64 * 1024 + 1
      )
      const slivers = sizes.slice(1, -1).filter((n) => n < 512)
      assert.deepStrictEqual(slivers, [], `pieces smaller than half the capacity: ${sizes.join(", ")}`)
    })
  )

  it.effect("with capacity 0 hands each write over in lockstep", () =>
    Effect.gen(function* () {
      const [a, b] = yield* Duplex.pair({ capacity: 0 })
      const writer = yield* Effect.forkChild(a.write(text("one")), { startImmediately: true })
      yield* settle
      assert.isUndefined(writer.pollUnsafe(), "no reader yet: the write waits")
      const pull = yield* Effect.forkChild(Stream.runHead(b.readable), { startImmediately: true })
      yield* Fiber.join(writer)
      const head = yield* Fiber.join(pull)
      assert.strictEqual(head._tag === "Some" ? decode(head.value) : "", "one")
      assert.strictEqual((yield* a.stats).outbound.peakBuffered, 0)
    })
  )

  it.effect("delivers EOF after the bytes already accepted", () =>
    Effect.gen(function* () {
      const [a, b] = yield* Duplex.pair({ capacity: 64 })
      yield* a.write(text("last words"))
      yield* a.end
      assert.strictEqual(decode(yield* readAll(b)), "last words")
    })
  )

  it.effect("counts time blocked on backpressure on the Clock", () =>
    Effect.gen(function* () {
      const [a, b] = yield* Duplex.pair({ capacity: 4 })
      const writer = yield* Effect.forkChild(a.write(new Uint8Array(8)), { startImmediately: true })
      yield* settle
      yield* TestClock.adjust("250 millis")
      assert.strictEqual((yield* a.stats).outbound.blockedMillis, 250)
      assert.strictEqual((yield* b.stats).inbound.blockedMillis, 250)
      yield* Stream.runHead(b.readable)
      yield* Fiber.join(writer)
      yield* TestClock.adjust("1 second")
      assert.strictEqual((yield* a.stats).outbound.blockedMillis, 250, "the clock stops when the writer is free")
    })
  )

  it.effect("fails a write after end with Closed, naming the duplex and what to do", () =>
    Effect.gen(function* () {
      const [a] = yield* Duplex.pair({ label: "conn" })
      yield* a.write(text("abc"))
      yield* a.end
      const error = errorOf(yield* Effect.exit(a.write(text("x"))))
      assert.strictEqual(error.reason._tag, "Closed")
      assert.include(error.message, "conn.a")
      assert.include(error.message, "after end")
      assert.include(error.message, "3 B written")
    })
  )

  it.effect("abort fails the peer's reads and writes with Broken and our own with Closed", () =>
    Effect.gen(function* () {
      const [a, b] = yield* Duplex.pair({ capacity: 4 })
      const peerRead = yield* Effect.forkChild(readAll(b), { startImmediately: true })
      yield* b.write(new Uint8Array(4))
      const peerWrite = yield* Effect.forkChild(b.write(new Uint8Array(8)), { startImmediately: true })
      yield* settle
      yield* a.abort
      assert.strictEqual(reasonOf(yield* Fiber.await(peerRead)), "Broken")
      assert.strictEqual(reasonOf(yield* Fiber.await(peerWrite)), "Broken")
      assert.strictEqual(reasonOf(yield* Effect.exit(b.write(new Uint8Array(1)))), "Broken")
      assert.strictEqual(reasonOf(yield* Effect.exit(readAll(a))), "Closed")
      assert.strictEqual(reasonOf(yield* Effect.exit(a.write(new Uint8Array(0)))), "Closed")
      assert.strictEqual(reasonOf(yield* Effect.exit(b.end)), "Broken")
    })
  )

  it.effect("abort drops bytes buffered for the peer, like a reset", () =>
    Effect.gen(function* () {
      const [a, b] = yield* Duplex.pair({ capacity: 64 })
      yield* a.write(text("in flight"))
      yield* a.abort
      assert.strictEqual(reasonOf(yield* Effect.exit(readAll(b))), "Broken")
    })
  )

  it.effect("an interrupted write keeps the prefix it had accepted and leaves no waiter behind", () =>
    Effect.gen(function* () {
      const [a, b] = yield* Duplex.pair({ capacity: 4 })
      const writer = yield* Effect.forkChild(a.write(text("abcdefgh")), { startImmediately: true })
      yield* settle
      yield* Fiber.interrupt(writer)
      assert.strictEqual((yield* a.stats).outbound.bytes, 4)
      assert.isFalse((yield* a.stats).outbound.blocked)
      const reader = yield* Effect.forkChild(readAll(b), { startImmediately: true })
      yield* a.write(text("XY"))
      yield* a.end
      assert.strictEqual(decode(yield* Fiber.join(reader)), "abcdXY")
    })
  )

  it.effect("serves concurrent writers in call order without interleaving their pieces", () =>
    Effect.gen(function* () {
      const [a, b] = yield* Duplex.pair({ capacity: 3 })
      const w1 = yield* Effect.forkChild(a.write(text("11111")), { startImmediately: true })
      const w2 = yield* Effect.forkChild(a.write(text("22222")), { startImmediately: true })
      const reader = yield* Effect.forkChild(readAll(b), { startImmediately: true })
      yield* Fiber.join(w1)
      yield* Fiber.join(w2)
      yield* a.end
      assert.strictEqual(decode(yield* Fiber.join(reader)), "1111122222")
    })
  )

  it.effect("closing the scope wakes a blocked reader with Closed", () =>
    Effect.gen(function* () {
      const fiber = yield* Effect.forkChild(
        Effect.scoped(
          Effect.gen(function* () {
            const [a] = yield* Duplex.pair()
            const reader = yield* Effect.forkDetach(readAll(a), { startImmediately: true })
            return reader
          })
        ),
        { startImmediately: true }
      )
      const reader = yield* Fiber.join(fiber)
      assert.strictEqual(reasonOf(yield* Fiber.await(reader)), "Closed")
    })
  )
})

describe("Duplex read", () => {
  it.effect("reads one chunk at a time, sharing its position with readable, and None at EOF", () =>
    Effect.gen(function* () {
      const [a, b] = yield* Duplex.pair({ capacity: 1024 })
      yield* a.writeAll([text("one"), text("two"), text("three")])
      yield* a.end
      const first = yield* b.read
      assert.strictEqual(Option.isSome(first) ? decode(first.value) : "none", "one")
      const second = yield* Stream.runHead(b.readable)
      assert.strictEqual(Option.isSome(second) ? decode(second.value) : "none", "two")
      const third = yield* b.read
      assert.strictEqual(Option.isSome(third) ? decode(third.value) : "none", "three")
      assert.isTrue(Option.isNone(yield* b.read))
      assert.isTrue(Option.isNone(yield* b.read), "EOF is sticky")
    })
  )

  it.effect("waits for bytes, and fails Broken after the peer's abort and Closed after our own", () =>
    Effect.gen(function* () {
      const [a, b] = yield* Duplex.pair({ capacity: 1024 })
      const pending = yield* Effect.forkChild(b.read, { startImmediately: true })
      yield* settle
      assert.isUndefined(pending.pollUnsafe(), "read returned before any byte was written")
      yield* a.write(text("x"))
      const got = yield* Fiber.join(pending)
      assert.strictEqual(Option.isSome(got) ? decode(got.value) : "none", "x")
      const blocked = yield* Effect.forkChild(b.read, { startImmediately: true })
      yield* settle
      yield* a.abort
      assert.strictEqual(reasonOf(yield* Fiber.await(blocked)), "Broken")
      yield* b.abort
      assert.strictEqual(reasonOf(yield* Effect.exit(b.read)), "Closed")
    })
  )

  it.effect("Duplex.make derives read from readable when a transport gives none", () =>
    Effect.gen(function* () {
      const [a, b] = yield* Duplex.pair({ capacity: 1024 })
      const wrapped = Duplex.make({
        label: "wrapped",
        readable: b.readable,
        write: b.write,
        end: b.end,
        abort: b.abort,
        stats: b.stats
      })
      yield* a.writeAll([text("p"), text("q")])
      yield* a.end
      const chunks: Array<string> = []
      while (true) {
        const next = yield* wrapped.read
        if (Option.isNone(next)) break
        chunks.push(decode(next.value))
      }
      assert.deepStrictEqual(chunks, ["p", "q"])
    })
  )
})

describe("Duplex.exchange", () => {
  it.live("moves a payload far larger than both buffers through an echo peer", () =>
    assertDeadlockFree(
      (watch) =>
        Effect.gen(function* () {
          const [client, server] = yield* Duplex.pair({ capacity: 1024 })
          watch(client, server)
          yield* Effect.forkScoped(echo(server))
          const payload = randomBytes(1024 * 1024, 2)
          const got = yield* Duplex.exchange(client, Stream.make(payload), collectBytes)
          assert.strictEqual(firstDifference(got, payload), -1)
        }),
      { stallTimeout: "2 seconds" }
    )
  )

  it.live("keeps writing after the peer's EOF: a half-closed peer may still read", () =>
    Effect.gen(function* () {
      const [a, b] = yield* Duplex.pair({ capacity: 8 })
      yield* b.end // the peer says it has nothing to send, but keeps reading
      const payload = randomBytes(4096, 3)
      const received = yield* Effect.forkChild(readAll(b), { startImmediately: true })
      const result = yield* Duplex.exchange(a, Stream.make(payload), collectBytes)
      assert.strictEqual(result.length, 0)
      assert.strictEqual(firstDifference(yield* Fiber.join(received), payload), -1)
    })
  )

  it.live("drains inbound bytes while the writer finishes after the sink stopped early", () =>
    assertDeadlockFree(
      (watch) =>
        Effect.gen(function* () {
          const [client, server] = yield* Duplex.pair({ capacity: 256 })
          watch(client, server)
          yield* Effect.forkScoped(echo(server))
          const payload = randomBytes(64 * 1024, 4)
          const head = yield* Duplex.exchange(client, Stream.make(payload), Sink.take<Uint8Array>(1))
          assert.strictEqual(head.length, 1)
          assert.strictEqual((yield* client.stats).outbound.bytes, payload.length, "the whole input was written")
        }),
      { stallTimeout: "2 seconds" }
    )
  )

  it.live("a failing input fails the exchange and stops the reader", () =>
    Effect.gen(function* () {
      const [client] = yield* Duplex.pair()
      const input = Stream.concat(Stream.make(text("a")), Stream.fail("input broke" as const))
      const exit = yield* Effect.exit(Duplex.exchange(client, input, collectBytes).pipe(Effect.timeout("2 seconds")))
      assert.isTrue(Exit.isFailure(exit))
      const fail = Exit.isFailure(exit) ? exit.cause.reasons.find((r) => r._tag === "Fail") : undefined
      assert.strictEqual(fail?._tag === "Fail" ? fail.error : undefined, "input broke")
    })
  )

  it.live("is dual: data-last through pipe", () =>
    Effect.gen(function* () {
      const [client, server] = yield* Duplex.pair({ capacity: 16 })
      yield* Effect.forkScoped(echo(server))
      const got = yield* client.pipe(Duplex.exchange(Stream.make(text("piped")), collectBytes))
      assert.strictEqual(decode(got), "piped")
    })
  )
})

describe("Duplex.pipeThrough", () => {
  it.live("runs a duplex as a stream transformer, both call forms", () =>
    Effect.gen(function* () {
      for (const form of ["data-first", "data-last"] as const) {
        const [client, server] = yield* Duplex.pair({ capacity: 8 })
        yield* Effect.forkScoped(echo(server))
        const input = Stream.fromIterable([text("hello, "), text("world")])
        const output =
          form === "data-first" ? Duplex.pipeThrough(input, client) : input.pipe(Duplex.pipeThrough(client))
        assert.strictEqual(decode(concatBytes(yield* Stream.runCollect(output))), "hello, world", form)
      }
    })
  )

  it.live("holds the writer back while the output is not consumed", () =>
    Effect.gen(function* () {
      const [client, server] = yield* Duplex.pair({ capacity: 1024 })
      yield* Effect.forkScoped(echo(server))
      const chunks = Array.from({ length: 1024 }, (_, i) => randomBytes(1024, i))
      const output = Duplex.pipeThrough(Stream.fromIterable(chunks), client)
      const head = yield* Stream.runHead(output)
      assert.isTrue(head._tag === "Some")
      yield* Effect.sleep(20)
      const written = (yield* client.stats).outbound.bytes
      assert.isBelow(written, 64 * 1024, "a stopped consumer must hold back the writer")
    })
  )
})

describe("Duplex.splice", () => {
  it.live("relays both ways and passes a half-close on while the other direction flows", () =>
    assertDeadlockFree(
      (watch) =>
        Effect.gen(function* () {
          const [client, relayIn] = yield* Duplex.pair({ capacity: 512, label: "front" })
          const [relayOut, origin] = yield* Duplex.pair({ capacity: 512, label: "back" })
          watch(client, relayIn, relayOut, origin)
          const relay = yield* Effect.forkScoped(Duplex.splice(relayIn, relayOut))
          const up = randomBytes(200_000, 6)
          const down = randomBytes(300_000, 7)
          // The origin only answers after the client's EOF reached it through the relay.
          const originSide = Effect.gen(function* () {
            const got = yield* readAll(origin)
            yield* origin.writeAll([down])
            yield* origin.end
            return got
          })
          const [gotDown, gotUp] = yield* Effect.all(
            [Duplex.exchange(client, Stream.make(up), collectBytes), originSide],
            { concurrency: 2 }
          )
          assert.strictEqual(firstDifference(gotUp, up), -1)
          assert.strictEqual(firstDifference(gotDown, down), -1)
          assert.deepStrictEqual(yield* Fiber.join(relay), { aToB: up.length, bToA: down.length })
        }),
      { stallTimeout: "2 seconds" }
    )
  )

  it.live("a failure on one side aborts both", () =>
    Effect.gen(function* () {
      const [client, relayIn] = yield* Duplex.pair({ label: "front" })
      const [relayOut, origin] = yield* Duplex.pair({ label: "back" })
      const relay = yield* Effect.forkScoped(Duplex.splice(relayIn, relayOut))
      yield* client.abort
      assert.strictEqual(reasonOf(yield* Fiber.await(relay)), "Broken")
      assert.strictEqual(reasonOf(yield* Effect.exit(readAll(origin))), "Broken", "the other leg was aborted too")
    })
  )
})

describe("Duplex.fromNodeDuplex", () => {
  it.effect("rejects a highWaterMark below one byte with InvalidOptions", () =>
    Effect.gen(function* () {
      const error = errorOf(yield* Effect.exit(Duplex.fromNodeDuplex(new PassThrough(), { highWaterMark: 0 })))
      assert.strictEqual(error.reason._tag, "InvalidOptions")
    })
  )

  it.live("pauses the stream when its inbound buffer is full", () =>
    Effect.gen(function* () {
      const stream = new PassThrough()
      const d = yield* Duplex.fromNodeDuplex(stream, { highWaterMark: 1024 })
      // A PassThrough loops our writes back to our reads: write without reading until paused.
      for (let i = 0; i < 8; i++) stream.push(new Uint8Array(512))
      yield* Effect.sleep(10)
      assert.isTrue(stream.isPaused())
      const stats = yield* d.stats
      assert.isAtMost(stats.inbound.peakBuffered, 1024 + 512)
      assert.isTrue(stats.inbound.blocked)
      const head = yield* Stream.runHead(d.readable)
      assert.isTrue(head._tag === "Some")
      assert.isFalse(stream.isPaused(), "a read that empties the buffer resumes the stream")
    })
  )

  it.live("turns a stream error into Broken with its code, after the bytes already received", () =>
    Effect.gen(function* () {
      const stream = new PassThrough()
      const d = yield* Duplex.fromNodeDuplex(stream, { label: "flaky" })
      stream.push(text("partial"))
      yield* Effect.sleep(5)
      stream.destroy(Object.assign(new Error("read ECONNRESET"), { code: "ECONNRESET" }))
      const chunks: Array<Uint8Array> = []
      const exit = yield* Effect.exit(Stream.runForEach(d.readable, (c) => Effect.sync(() => chunks.push(c))))
      assert.strictEqual(decode(concatBytes(chunks)), "partial")
      const error = errorOf(exit)
      assert.strictEqual(error.reason._tag, "Broken")
      assert.strictEqual(error.reason._tag === "Broken" ? error.reason.code : "", "ECONNRESET")
      assert.include(error.message, "flaky")
    })
  )

  it.live("abort resets a TCP connection: the peer reads ECONNRESET", () =>
    Effect.gen(function* () {
      const [client, accepted] = yield* loopbackSockets
      const ours = yield* Duplex.fromNodeDuplex(client, { label: "client" })
      const theirs = yield* Duplex.fromNodeDuplex(accepted, { label: "server" })
      const reading = yield* Effect.forkChild(readAll(theirs), { startImmediately: true })
      yield* Effect.sleep(10)
      yield* ours.abort
      const error = errorOf(yield* Fiber.await(reading))
      assert.strictEqual(error.reason._tag === "Broken" ? error.reason.code : error.reason._tag, "ECONNRESET")
    }).pipe(Effect.timeout("5 seconds"))
  )

  it.live("reads a stream that was handed over paused", () =>
    Effect.gen(function* () {
      const stream = new PassThrough()
      stream.pause()
      const d = yield* Duplex.fromNodeDuplex(stream)
      yield* d.write(text("hello"))
      yield* d.end
      const got = yield* readAll(d).pipe(Effect.timeout("1 second"))
      assert.strictEqual(decode(got), "hello")
    })
  )

  it.live("abort wakes a write waiting for 'drain' and an end waiting for 'finish', even without 'close'", () =>
    Effect.gen(function* () {
      // A stream that never completes a write and never emits 'close': only our own abort can wake us.
      const stuck = () => new NodeDuplex({ emitClose: false, writableHighWaterMark: 4, read() {}, write() {} })
      const a = yield* Duplex.fromNodeDuplex(stuck(), { highWaterMark: 4 })
      const writer = yield* Effect.forkChild(a.write(new Uint8Array(8)), { startImmediately: true })
      const b = yield* Duplex.fromNodeDuplex(stuck())
      yield* b.write(new Uint8Array(1))
      const ender = yield* Effect.forkChild(b.end, { startImmediately: true })
      yield* Effect.sleep(20)
      yield* a.abort
      yield* b.abort
      assert.strictEqual(reasonOf(yield* Fiber.await(writer).pipe(Effect.timeout("1 second"))), "Closed")
      assert.strictEqual(reasonOf(yield* Fiber.await(ender).pipe(Effect.timeout("1 second"))), "Closed")
    })
  )

  it.live("closing the scope destroys a socket that is still connecting", () =>
    Effect.gen(function* () {
      const server = net.createServer()
      yield* Effect.addFinalizer(() => Effect.sync(() => server.close()))
      yield* Effect.callback<void>((resume) => void server.listen(0, "127.0.0.1", () => resume(Effect.void)))
      const socket = net.connect({ host: "127.0.0.1", port: (server.address() as net.AddressInfo).port })
      socket.on("error", () => {})
      const scope = yield* Scope.make()
      yield* Scope.provide(Duplex.fromNodeDuplex(socket), scope)
      assert.isTrue(socket.connecting)
      yield* Scope.close(scope, Exit.void)
      assert.isTrue(socket.destroyed)
    })
  )

  it.live("does not report a broken stream as held back", () =>
    Effect.gen(function* () {
      const stream = new PassThrough()
      const d = yield* Duplex.fromNodeDuplex(stream, { highWaterMark: 4 })
      stream.push(new Uint8Array(8))
      yield* Effect.sleep(20)
      assert.isTrue((yield* d.stats).inbound.blocked, "a full buffer holds the stream back")
      stream.destroy(new Error("boom"))
      yield* Effect.sleep(20)
      assert.isFalse((yield* d.stats).inbound.blocked)
    })
  )
})
