import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Option, Stream } from "effect"
import { TestClock } from "effect/testing"
import { Duplex, DuplexError, Watchdog } from "fullduplex"

/** Lets forked fibers run until they block. */
const settle = Effect.gen(function* () {
  for (let i = 0; i < 50; i++) yield* Effect.yieldNow
})

const stallOf = <A, E>(exit: Exit.Exit<A, E>): DuplexError.StallDetected => {
  assert.isTrue(Exit.isFailure(exit), "expected the watchdog to fire")
  const fail = Exit.isFailure(exit) ? exit.cause.reasons.find((r) => r._tag === "Fail") : undefined
  const error = fail?._tag === "Fail" ? fail.error : undefined
  assert.isTrue(DuplexError.isDuplexError(error), `expected a DuplexError, got ${String(error)}`)
  const reason = (error as DuplexError.DuplexError).reason
  assert.strictEqual(reason._tag, "StallDetected")
  return reason as DuplexError.StallDetected
}

/** An echo that reads a chunk, then writes it: it stops reading while its write is held back. */
const echo = (d: Duplex.Duplex) => Stream.run(d.readable, d.sink)

describe("Watchdog.watch", () => {
  it.effect("reports a peer that writes without reading, naming both directions' blocked times and buffers", () =>
    Effect.gen(function* () {
      const [client, server] = yield* Duplex.pair({ capacity: 1024 })
      yield* Effect.forkScoped(echo(server))
      yield* Effect.forkScoped(client.write(new Uint8Array(64 * 1024))) // never reads its echo
      const watchdog = yield* Effect.forkScoped(Watchdog.watch(server, { stallTimeout: "1 second" }))
      yield* settle
      yield* TestClock.adjust("500 millis")
      assert.isUndefined(watchdog.pollUnsafe(), "fired before the limit")
      yield* TestClock.adjust("1 second")
      const stall = stallOf(yield* Fiber.await(watchdog))
      assert.isAtLeast(stall.stalledMillis, 1000)
      const [outbound, inbound] = stall.directions
      assert.deepInclude(outbound, { label: "pair.b", direction: "outbound", blocked: true })
      assert.deepInclude(inbound, { label: "pair.b", direction: "inbound", blocked: true, buffered: 1024 })
      assert.isAtLeast(outbound!.blockedMillis!, 1000)
      assert.isAtLeast(inbound!.blockedMillis!, 1000)
      assert.match(stall.message, /BLOCKED \(\d+ ms blocked in all\)/)
      assert.include(stall.message, "zero window")
    })
  )

  it.effect("stays quiet while a slow reader keeps accepting bytes", () =>
    Effect.gen(function* () {
      const [client, server] = yield* Duplex.pair({ capacity: 1024 })
      yield* Effect.forkScoped(echo(server))
      yield* Effect.forkScoped(client.write(new Uint8Array(256 * 1024)))
      // The client reads one chunk every 300 ms: slow, never stalled for a whole second.
      yield* Effect.forkScoped(Stream.runForEach(client.readable, () => Effect.sleep("300 millis")))
      const watchdog = yield* Effect.forkScoped(Watchdog.watch(server, { stallTimeout: "1 second" }))
      for (let i = 0; i < 40; i++) {
        yield* settle
        yield* TestClock.adjust("100 millis")
      }
      assert.isUndefined(watchdog.pollUnsafe(), "a slow but living reader was reported as stalled")
    })
  )

  it.effect("does not count a one-way wait: a peer that only reads slowly or only sends is not a deadlock", () =>
    Effect.gen(function* () {
      // The server writes to a client that does not read, but the client sends nothing: outbound blocked,
      // inbound empty. And the reverse on a second pair: inbound full, nothing to write.
      const [c1, s1] = yield* Duplex.pair({ capacity: 1024 })
      yield* Effect.forkScoped(s1.write(new Uint8Array(64 * 1024)))
      const [c2, s2] = yield* Duplex.pair({ capacity: 1024 })
      yield* Effect.forkScoped(c2.write(new Uint8Array(64 * 1024)))
      const w1 = yield* Effect.forkScoped(Watchdog.watch(s1, { stallTimeout: "1 second" }))
      const w2 = yield* Effect.forkScoped(Watchdog.watch(s2, { stallTimeout: "1 second" }))
      yield* settle
      yield* TestClock.adjust("5 seconds")
      assert.isUndefined(w1.pollUnsafe())
      assert.isUndefined(w2.pollUnsafe())
      assert.isTrue((yield* s1.stats).outbound.blocked)
      assert.isTrue((yield* s2.stats).inbound.blocked)
      void c1
    })
  )

  it.effect("guard interrupts the guarded effect at the stall", () =>
    Effect.gen(function* () {
      const [client, server] = yield* Duplex.pair({ capacity: 1024 })
      yield* Effect.forkScoped(client.write(new Uint8Array(64 * 1024)))
      const guarded = yield* Effect.forkScoped(echo(server).pipe(Watchdog.guard(server, { stallTimeout: "1 second" })))
      yield* settle
      yield* TestClock.adjust("2 seconds")
      stallOf(yield* Fiber.await(guarded))
    })
  )

  it.effect("rejects a stall timeout that is not above zero", () =>
    Effect.gen(function* () {
      const [a] = yield* Duplex.pair()
      const exit = yield* Effect.exit(Watchdog.watch(a, { stallTimeout: 0 }))
      assert.isTrue(Exit.isFailure(exit))
      const outcome = yield* Effect.timeoutOption(Effect.flip(Watchdog.watch(a, { stallTimeout: -5 })), "1 millis")
      assert.isTrue(Option.isSome(outcome))
      assert.strictEqual(Option.getOrThrow(outcome).reason._tag, "InvalidOptions")
    })
  )
})
