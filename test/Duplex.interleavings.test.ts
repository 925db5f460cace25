/**
 * Races that only show when a fiber yields at an unlucky point. Effect may suspend a fiber between any
 * two operations (every `MaxOpsBeforeYield` of them); these tests sweep that budget so that the yield
 * falls at every step of a read, a write and an exchange.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Scheduler, Sink, Stream } from "effect"
import { Duplex } from "fullduplex"

const bytes = (chunks: ReadonlyArray<Uint8Array>) => chunks.reduce((n, c) => n + c.length, 0)

describe("Duplex interleavings", () => {
  it.live("a reader that yields between its check and its wait still sees the write and the EOF", () =>
    Effect.gen(function* () {
      const hung: Array<number> = []
      for (let ops = 3; ops <= 64; ops++) {
        yield* Effect.scoped(
          Effect.gen(function* () {
            const [a, b] = yield* Duplex.pair({ capacity: 1024 })
            const reader = yield* Effect.forkChild(Stream.runCollect(b.readable), { startImmediately: true })
            yield* a.write(new Uint8Array(10))
            yield* a.end
            const got = yield* Fiber.join(reader).pipe(Effect.timeoutOption("200 millis"))
            if (got._tag === "None") hung.push(ops)
          })
        ).pipe(Effect.provideService(Scheduler.MaxOpsBeforeYield, ops))
      }
      assert.deepStrictEqual(hung, [], "the reader missed its wake-up at these op budgets")
    })
  )

  it.live("a write interrupted at any step leaves no waiter and delivers only what it had accepted", () =>
    Effect.gen(function* () {
      const bad: Array<string> = []
      let interrupted = 0
      for (let ops = 3; ops <= 24; ops++) {
        for (let pre = 0; pre <= 12; pre++) {
          yield* Effect.scoped(
            Effect.gen(function* () {
              const [a, b] = yield* Duplex.pair({ capacity: 4 })
              const busy = Effect.forEach(Array.from({ length: pre }), () => Effect.void)
              const writer = yield* Effect.forkChild(Effect.andThen(busy, a.write(new Uint8Array(16))), {
                startImmediately: true
              })
              yield* Fiber.interrupt(writer)
              if (!Exit.hasInterrupts(yield* Fiber.await(writer))) return
              interrupted++
              const { outbound } = yield* a.stats
              yield* a.end
              const got = bytes(yield* Stream.runCollect(b.readable).pipe(Effect.timeout("1 second")))
              if (outbound.blocked || got !== outbound.bytes) {
                bad.push(`ops=${ops} pre=${pre}: blocked=${outbound.blocked}, accepted ${outbound.bytes}, read ${got}`)
              }
            })
          ).pipe(Effect.provideService(Scheduler.MaxOpsBeforeYield, ops))
        }
      }
      assert.isAbove(interrupted, 0, "no write was interrupted while waiting: the sweep tested nothing")
      assert.deepStrictEqual(bad.slice(0, 3), [])
    })
  )

  it.effect("a run of readable that stops early leaves every later byte for the next run", () =>
    Effect.gen(function* () {
      const [a, b] = yield* Duplex.pair({ capacity: 1024 })
      yield* a.writeAll([Uint8Array.of(1), Uint8Array.of(2), Uint8Array.of(3)])
      yield* a.end
      const head = yield* Stream.runHead(b.readable)
      const rest = yield* Stream.runCollect(b.readable)
      const all = [...(head._tag === "Some" ? [head.value] : []), ...rest].flatMap((c) => [...c])
      assert.deepStrictEqual(all, [1, 2, 3])
    })
  )

  it.live("a failed exchange stops its writer", () =>
    Effect.gen(function* () {
      const [a, b] = yield* Duplex.pair({ capacity: 1024 })
      yield* Effect.forkScoped(Stream.runDrain(b.readable)) // the peer takes everything a sends
      yield* Effect.forkScoped(Effect.andThen(Effect.sleep(20), b.write(new Uint8Array(1))))
      const endless = Stream.fromEffectRepeat(Effect.succeed(new Uint8Array(512)))
      const failingSink = Sink.forEach((_: Uint8Array) => Effect.fail("sink failed" as const))
      const result = yield* Effect.result(Duplex.exchange(a, endless, failingSink))
      assert.strictEqual(result._tag, "Failure")
      const before = (yield* a.stats).outbound.bytes
      yield* Effect.sleep("100 millis")
      assert.strictEqual((yield* a.stats).outbound.bytes, before, "the writer went on after the exchange failed")
    }).pipe(Effect.timeout("5 seconds"))
  )
})
