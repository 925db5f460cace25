import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Fiber } from "effect"
import { TestClock } from "effect/testing"
import { Close, Duplex } from "fullduplex"
import { readAll } from "fullduplex/testkit"
import { duplexErrorOf } from "./helpers.js"

const text = (s: string) => new TextEncoder().encode(s)
const decode = (b: Uint8Array) => new TextDecoder().decode(b)

/** Lets forked fibers run until they block. */
const settle = Effect.gen(function* () {
  for (let i = 0; i < 20; i++) yield* Effect.yieldNow
})

/** Whether a write on `d` fails now, and with which reason (`"ok"` when it succeeds). */
const writeReason = (d: Duplex.Duplex) =>
  Effect.map(Effect.exit(d.write(text("x"))), (exit) =>
    exit._tag === "Success" ? "ok" : duplexErrorOf(exit, `write on ${d.label}`).reason._tag
  )

/**
 * In every test below `server` is the side being closed and `client` its peer, on a bounded in-memory
 * pair; time is the TestClock's, so timeouts fire exactly when the test moves the clock.
 */
const connected = Effect.map(Duplex.pair({ capacity: 64, label: "conn" }), ([server, client]) => ({ server, client }))

describe("Close.lingering", () => {
  it.effect("ends with eof when the peer half-closes, after the peer has read every byte written before it", () =>
    Effect.gen(function* () {
      const { server, client } = yield* connected
      yield* server.write(text("response"))
      const closing = yield* Effect.forkChild(Close.lingering(server, { lingerTimeout: "1 second" }), {
        startImmediately: true
      })
      assert.strictEqual(decode(yield* readAll(client)), "response", "the response, then our FIN")
      yield* client.write(new Uint8Array(10))
      yield* client.write(new Uint8Array(5))
      yield* client.end
      const outcome = yield* Fiber.join(closing)
      assert.deepStrictEqual(outcome, { ending: "eof", discardedBytes: 15, millis: 0 })
      const after = duplexErrorOf(yield* Effect.exit(server.write(text("x"))), "a write after the close").reason
      assert.strictEqual(after._tag === "Closed" ? after.after : after._tag, "end", "ended, not aborted")
    })
  )

  it.effect("gives up with lingerTimeout when the peer sends nothing, and aborts the duplex", () =>
    Effect.gen(function* () {
      const { server, client } = yield* connected
      const closing = yield* Effect.forkChild(Close.lingering(server, { lingerTimeout: "2 seconds" }), {
        startImmediately: true
      })
      yield* settle
      yield* TestClock.adjust("1999 millis")
      assert.isUndefined(closing.pollUnsafe(), "still waiting 1 ms before lingerTimeout")
      yield* TestClock.adjust("1 millis")
      const outcome = yield* Fiber.join(closing)
      assert.deepStrictEqual(outcome, { ending: "lingerTimeout", discardedBytes: 0, millis: 2000 })
      assert.strictEqual(yield* writeReason(server), "Closed", "our side was aborted")
      assert.strictEqual(yield* writeReason(client), "Broken", "the peer sees the abort")
    })
  )

  it.effect("counts lingerTimeout from the last byte, so a peer that keeps sending within it is waited for", () =>
    Effect.gen(function* () {
      const { server, client } = yield* connected
      const closing = yield* Effect.forkChild(Close.lingering(server, { lingerTimeout: "1 second" }), {
        startImmediately: true
      })
      for (let i = 0; i < 3; i++) {
        yield* TestClock.adjust("800 millis")
        yield* client.write(new Uint8Array(1))
        yield* settle
        assert.isUndefined(closing.pollUnsafe(), `a byte every 800 ms keeps the close going (byte ${i + 1})`)
      }
      yield* TestClock.adjust("500 millis")
      yield* client.end
      assert.deepStrictEqual(yield* Fiber.join(closing), { ending: "eof", discardedBytes: 3, millis: 2900 })
    })
  )

  it.effect("stops at maxLinger when the peer keeps trickling bytes, and aborts the duplex", () =>
    Effect.gen(function* () {
      const { server, client } = yield* connected
      const closing = yield* Effect.forkChild(
        Close.lingering(server, { lingerTimeout: "1 second", maxLinger: "5 seconds" }),
        { startImmediately: true }
      )
      const trickle = yield* Effect.forkChild(
        Effect.forever(Effect.andThen(client.write(new Uint8Array(1)), Effect.sleep("500 millis"))),
        { startImmediately: true }
      )
      for (let t = 0; t < 4900; t += 100) {
        yield* TestClock.adjust("100 millis")
        assert.isUndefined(closing.pollUnsafe(), `still lingering at ${t + 100} ms`)
      }
      yield* TestClock.adjust("100 millis")
      const outcome = yield* Fiber.join(closing)
      assert.strictEqual(outcome.ending, "maxLinger")
      assert.strictEqual(outcome.millis, 5000)
      assert.strictEqual(outcome.discardedBytes, 10, "one byte at 0, 500, …, 4500 ms")
      assert.strictEqual(yield* writeReason(server), "Closed", "our side was aborted")
      const trickled = yield* Fiber.await(trickle)
      assert.strictEqual(duplexErrorOf(trickled, "the trickling peer").reason._tag, "Broken")
    })
  )

  it.effect("uses 5 s for lingerTimeout and 30 s for maxLinger by default", () =>
    Effect.gen(function* () {
      assert.strictEqual(Duration.toMillis(Close.DEFAULT_LINGER_TIMEOUT), 5000)
      assert.strictEqual(Duration.toMillis(Close.DEFAULT_MAX_LINGER), 30_000)
      const quiet = yield* connected
      const idle = yield* Effect.forkChild(Close.lingering(quiet.server), { startImmediately: true })
      yield* settle
      yield* TestClock.adjust("4999 millis")
      assert.isUndefined(idle.pollUnsafe())
      yield* TestClock.adjust("1 millis")
      assert.strictEqual((yield* Fiber.join(idle)).ending, "lingerTimeout")

      const chatty = yield* connected
      const busy = yield* Effect.forkChild(Close.lingering(chatty.server), { startImmediately: true })
      yield* Effect.forkChild(
        Effect.forever(Effect.andThen(chatty.client.write(new Uint8Array(1)), Effect.sleep("4 seconds"))),
        { startImmediately: true }
      )
      for (let t = 0; t < 29; t++) yield* TestClock.adjust("1 second")
      assert.isUndefined(busy.pollUnsafe(), "a byte every 4 s keeps a default close going for 29 s")
      yield* TestClock.adjust("1 second")
      const outcome = yield* Fiber.join(busy)
      assert.strictEqual(outcome.ending, "maxLinger")
      assert.strictEqual(outcome.millis, 30_000)
    })
  )

  it.effect("reports a reset by the peer while discarding as outcome reset, not as an error", () =>
    Effect.gen(function* () {
      const { server, client } = yield* connected
      const closing = yield* Effect.forkChild(Close.lingering(server), { startImmediately: true })
      yield* client.write(new Uint8Array(7))
      yield* settle
      yield* client.abort
      const outcome = yield* Fiber.join(closing)
      assert.strictEqual(outcome.ending, "reset")
      assert.strictEqual(outcome.discardedBytes, 7)
    })
  )

  it.effect("fails with Closed when the duplex was already aborted", () =>
    Effect.gen(function* () {
      const { server } = yield* connected
      yield* server.abort
      const error = duplexErrorOf(yield* Effect.exit(Close.lingering(server)), "lingering after abort")
      assert.strictEqual(error.reason._tag, "Closed")
    })
  )

  it.effect("with options only, returns a strategy that closes the duplex it is given", () =>
    Effect.gen(function* () {
      const strategy: Close.Strategy = Close.lingering({ lingerTimeout: "1 second" })
      assert.isFunction(strategy)
      const { server, client } = yield* connected
      const closing = yield* Effect.forkChild(strategy(server), { startImmediately: true })
      yield* settle
      yield* TestClock.adjust("1 second")
      assert.strictEqual((yield* Fiber.join(closing)).ending, "lingerTimeout", "the options were applied")
      assert.strictEqual(yield* writeReason(client), "Broken")

      const defaults = Close.lingering()
      assert.isFunction(defaults)
      const other = yield* connected
      yield* other.client.end
      assert.strictEqual((yield* defaults(other.server)).ending, "eof")
    })
  )
})

describe("Close.halfClose", () => {
  it.effect("succeeds with eof when the peer ends, discarding what it sent", () =>
    Effect.gen(function* () {
      const { server, client } = yield* connected
      yield* server.write(text("bye"))
      const closing = yield* Effect.forkChild(Close.halfClose(server, { timeout: "1 second" }), {
        startImmediately: true
      })
      assert.strictEqual(decode(yield* readAll(client)), "bye")
      yield* client.write(new Uint8Array(4))
      yield* client.end
      assert.deepStrictEqual(yield* Fiber.join(closing), { ending: "eof", discardedBytes: 4, millis: 0 })
    })
  )

  it.effect("fails with Timeout and aborts the duplex when the peer does not end in time", () =>
    Effect.gen(function* () {
      const { server, client } = yield* connected
      const closing = yield* Effect.forkChild(Close.halfClose(server, { timeout: "3 seconds" }), {
        startImmediately: true
      })
      yield* client.write(new Uint8Array(2))
      yield* settle
      yield* TestClock.adjust("2999 millis")
      assert.isUndefined(closing.pollUnsafe(), "still waiting 1 ms before the timeout")
      yield* TestClock.adjust("1 millis")
      const error = duplexErrorOf(yield* Fiber.await(closing), "halfClose")
      assert.strictEqual(error.reason._tag, "Timeout")
      if (error.reason._tag === "Timeout") {
        assert.strictEqual(error.reason.timeoutMillis, 3000)
        assert.strictEqual(error.reason.bytes, 2, "the bytes discarded before it expired")
      }
      assert.include(error.message, "conn.a")
      assert.strictEqual(yield* writeReason(server), "Closed", "our side was aborted")
      assert.strictEqual(yield* writeReason(client), "Broken", "the peer sees the abort")
    })
  )

  it.effect("fails with Broken when the peer resets instead of ending", () =>
    Effect.gen(function* () {
      const { server, client } = yield* connected
      const closing = yield* Effect.forkChild(Close.halfClose(server), { startImmediately: true })
      yield* settle
      yield* client.abort
      assert.strictEqual(duplexErrorOf(yield* Fiber.await(closing), "halfClose").reason._tag, "Broken")
    })
  )

  it.effect("with options only, returns a strategy", () =>
    Effect.gen(function* () {
      const strategy = Close.halfClose({ timeout: "1 second" })
      assert.isFunction(strategy)
      const { server } = yield* connected
      const closing = yield* Effect.forkChild(strategy(server), { startImmediately: true })
      yield* settle
      yield* TestClock.adjust("1 second")
      const error = duplexErrorOf(yield* Fiber.await(closing), "halfClose strategy")
      assert.strictEqual(error.reason._tag === "Timeout" ? error.reason.timeoutMillis : error.reason._tag, 1000)
    })
  )
})

describe("Close.abort", () => {
  it.effect(
    "closes at once with outcome aborted: blocked writes on our side fail Closed, the peer's reads Broken",
    () =>
      Effect.gen(function* () {
        const { server, client } = yield* connected
        const blocked = yield* Effect.forkChild(server.write(new Uint8Array(1024)), { startImmediately: true })
        yield* settle
        assert.isUndefined(blocked.pollUnsafe(), "the write waits: nobody reads")
        assert.deepStrictEqual(yield* Close.abort(server), { ending: "aborted", discardedBytes: 0, millis: 0 })
        assert.strictEqual(duplexErrorOf(yield* Fiber.await(blocked), "blocked write").reason._tag, "Closed")
        assert.strictEqual(duplexErrorOf(yield* Effect.exit(readAll(client)), "peer's read").reason._tag, "Broken")
        assert.strictEqual((yield* Close.abort(server)).ending, "aborted", "aborting twice is fine")
      })
  )

  it.effect("with no argument, returns a strategy", () =>
    Effect.gen(function* () {
      const strategy: Close.Strategy = Close.abort()
      assert.isFunction(strategy)
      const { server, client } = yield* connected
      assert.strictEqual((yield* strategy(server)).ending, "aborted")
      assert.strictEqual(yield* writeReason(client), "Broken")
    })
  )
})
