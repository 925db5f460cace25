/**
 * The conformance suite every `Duplex` implementation runs: the contract of the model, checked on a
 * connected pair of your transport.
 *
 * @since 0.1.0
 */
import * as Data from "effect/Data"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { Duplex, DuplexError } from "fullduplex"
import { assertDeadlockFree, type Watch } from "./assertDeadlockFree.js"
import { collectBytes, readAll } from "./collect.js"
import { concatBytes, firstDifference, randomBytes, randomChunks } from "./random.js"

/**
 * A conformance case failed: `detail` says what was expected and what happened.
 *
 * **Example** (Reporting which case failed, and with which seed)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { ConformanceError } from "fullduplex/testkit"
 *
 * const report = (run: Effect.Effect<void, ConformanceError>) =>
 *   run.pipe(
 *     Effect.catchTag("ConformanceError", (error) =>
 *       Effect.fail(`${error.suite} / ${error.case}: ${error.detail}; rerun with FULLDUPLEX_SEED=${error.seed}`)
 *     )
 *   )
 * ```
 *
 * @category errors
 * @since 0.1.0
 */
export class ConformanceError extends Data.TaggedError("ConformanceError")<{
  readonly suite: string
  readonly case: string
  readonly detail: string
  readonly seed: number
}> {
  override get message(): string {
    return `[${this.suite}] ${this.case}: ${this.detail} (seed ${this.seed})`
  }
}

/**
 * Options of {@link conformance}.
 *
 * **Example** (A transport that buffers more, checked with a fixed seed)
 *
 * ```ts
 * import { Duplex } from "fullduplex"
 * import { conformance, type ConformanceOptions } from "fullduplex/testkit"
 *
 * const options: ConformanceOptions = { bufferBound: 1024 * 1024, seed: 42, bulkBytes: 4 * 1024 * 1024 }
 * const cases = conformance("roomy pair", Duplex.pair({ capacity: 512 * 1024 }), options)
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface ConformanceOptions {
  /**
   * The most bytes the implementation may hold in user space per direction of one duplex, as read from
   * `stats.*.peakBuffered`. Default 256 KiB.
   */
  readonly bufferBound?: number | undefined
  /** Seed of the random payloads and chunkings. Default 1, or the `FULLDUPLEX_SEED` environment variable. */
  readonly seed?: number | undefined
  /** Bytes each way in the bulk case. Default 1 MiB. */
  readonly bulkBytes?: number | undefined
  /** How long a case may go without a byte moving. Default 2 s. */
  readonly stallTimeout?: Duration.Input | undefined
  /**
   * How long a case may take in all. Default 4 s, so that a case fails with its own diagnostic inside
   * vitest's default test timeout (5 s). A larger value needs the test's timeout raised above it (the
   * third argument of `it.live`, or `testTimeout`).
   */
  readonly timeout?: Duration.Input | undefined
}

/**
 * One case of the suite: run it with any test runner; it fails with {@link ConformanceError} (or the
 * `DuplexError` that broke it) and never hangs.
 *
 * **Example** (Running every case in order, without a test runner)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Duplex, type DuplexError } from "fullduplex"
 * import { conformance, type ConformanceCase } from "fullduplex/testkit"
 *
 * const cases: ReadonlyArray<ConformanceCase<DuplexError.DuplexError>> = conformance("memory", Duplex.pair())
 * const all = Effect.forEach(cases, (c) => Effect.andThen(c.run, Effect.log(`ok: ${c.name}`)), { discard: true })
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface ConformanceCase<E> {
  readonly name: string
  readonly run: Effect.Effect<void, ConformanceError | DuplexError.DuplexError | E>
}

const KiB = 1024

/**
 * The conformance suite for a `Duplex` implementation, as a list of cases, in the spirit of Trio's
 * `check_half_closeable_stream`.
 *
 * **When to use**
 *
 * In the tests of every transport: the in-memory pair, TCP sockets, child processes, multiplexed
 * streams, and any adapter of your own built with `Duplex.make`.
 *
 * **Details**
 *
 * `makePair` opens two connected duplexes in the given scope; it runs once per case, and the scope is
 * closed after the case. The cases check that order is preserved both ways; that `read` and `readable`
 * share one position and `read` gives `None` at EOF; that EOF follows `end`, and
 * `end` is idempotent; that a half-close leaves the other direction working; that `stats` stays within
 * `bufferBound` while the reader is away; that a write after `end` fails `Closed`, even an empty one; that
 * `abort` makes the peer fail `Broken`, fails our own pending reads `Closed`, and wakes blocked reads and
 * writes; that 1 MiB moves both ways at once in random chunk sizes; and that closing the scope wakes
 * and fails everything still pending. Every case runs under `assertDeadlockFree`: no byte moving for
 * `stallTimeout` (2 s) or the case going on for `timeout` (4 s) fails it, with the suite, the case and
 * the seed in the message, inside vitest's default test timeout (5 s).
 *
 * **Example** (Running the suite with @effect/vitest)
 *
 * ```ts
 * import { describe, it } from "@effect/vitest"
 * import { Duplex } from "fullduplex"
 * import { conformance } from "fullduplex/testkit"
 *
 * describe("memory", () => {
 *   for (const c of conformance("memory", Duplex.pair({ capacity: 4096 }), { bufferBound: 4096 })) {
 *     it.live(c.name, () => c.run)
 *   }
 * })
 * ```
 *
 * @category conformance
 * @since 0.1.0
 */
export const conformance = <E>(
  suite: string,
  makePair: Effect.Effect<readonly [Duplex.Duplex, Duplex.Duplex], E, Scope.Scope>,
  options: ConformanceOptions = {}
): ReadonlyArray<ConformanceCase<E>> => {
  const seed = options.seed ?? Number(process.env["FULLDUPLEX_SEED"] ?? 1)
  const bound = options.bufferBound ?? 256 * KiB
  const bulk = options.bulkBytes ?? 1024 * KiB

  const make = (
    name: string,
    body: (
      a: Duplex.Duplex,
      b: Duplex.Duplex,
      fail: (detail: string) => ConformanceError,
      watch: Watch
    ) => Effect.Effect<void, ConformanceError | DuplexError.DuplexError | E, Scope.Scope>
  ): ConformanceCase<E> => {
    const fail = (detail: string) => new ConformanceError({ suite, case: name, detail, seed })
    return {
      name,
      run: assertDeadlockFree(
        (watch) =>
          Effect.scoped(
            Effect.gen(function* () {
              const [a, b] = yield* makePair
              watch(a, b)
              yield* body(a, b, fail, watch)
            })
          ),
        {
          label: `[${suite}] ${name} (seed ${seed})`,
          stallTimeout: options.stallTimeout ?? "2 seconds",
          timeout: options.timeout ?? "4 seconds"
        }
      )
    }
  }

  return [
    make("preserves byte order both ways", (a, b, fail) =>
      Effect.gen(function* () {
        for (const [from, to, s] of [
          [a, b, seed],
          [b, a, seed + 1]
        ] as const) {
          const payload = randomBytes(256 * KiB, s)
          const got = yield* Effect.forkChild(readAll(to), { startImmediately: true })
          yield* from.writeAll(randomChunks(payload, 8 * KiB, s))
          yield* from.end
          yield* expectSame(yield* Fiber.join(got), payload, `${from.label} → ${to.label}`, fail)
        }
      })
    ),

    make("read and readable share one position, and read gives None at EOF", (a, b, fail) =>
      Effect.gen(function* () {
        const payload = randomBytes(64 * KiB, seed + 2)
        const writer = yield* Effect.forkChild(
          Effect.andThen(a.writeAll(randomChunks(payload, 4 * KiB, seed + 2)), a.end),
          {
            startImmediately: true
          }
        )
        // Alternate: one chunk by `read`, one by a run of `readable` that stops after a chunk.
        const got: Array<Uint8Array> = []
        for (let useRead = true; ; useRead = !useRead) {
          const next = useRead ? yield* b.read : yield* Stream.runHead(b.readable)
          if (next._tag === "None") break
          got.push(next.value)
        }
        yield* Fiber.join(writer)
        yield* expectSame(concatBytes(got), payload, "bytes read alternately by read and readable", fail)
        const after = yield* b.read
        if (after._tag !== "None") return yield* fail(`read after EOF gave ${after.value.length} bytes, not None`)
      })
    ),

    make("delivers EOF after end, and end is idempotent", (a, b, fail) =>
      Effect.gen(function* () {
        const hello = new TextEncoder().encode("hello")
        const got = yield* Effect.forkChild(readAll(b), { startImmediately: true })
        yield* a.write(hello)
        yield* a.end
        yield* a.end
        yield* expectSame(yield* Fiber.join(got), hello, "bytes before EOF", fail)
        const again = yield* readAll(b)
        if (again.length !== 0) return yield* fail(`a second run of readable after EOF gave ${again.length} bytes`)
      })
    ),

    make("half-close leaves the other direction working", (a, b, fail) =>
      Effect.gen(function* () {
        yield* a.end
        const none = yield* readAll(b)
        if (none.length !== 0) return yield* fail(`expected EOF, read ${none.length} bytes`)
        const reply = randomBytes(64 * KiB, seed)
        const got = yield* Effect.forkChild(readAll(a), { startImmediately: true })
        yield* b.writeAll(randomChunks(reply, 4 * KiB, seed))
        yield* b.end
        yield* expectSame(yield* Fiber.join(got), reply, "reply after the peer's half-close", fail)
      })
    ),

    make(`keeps buffered bytes within ${bound} bytes per direction`, (a, b, fail) =>
      Effect.gen(function* () {
        const payload = randomBytes(Math.max(bulk, 4 * bound), seed)
        const writer = yield* Effect.forkChild(
          Effect.andThen(a.writeAll(randomChunks(payload, 16 * KiB, seed)), a.end),
          { startImmediately: true }
        )
        yield* untilNoProgress(a, writer)
        yield* checkBound(a, b, bound, "while nobody reads", fail)
        yield* expectSame(yield* readAll(b), payload, "bytes after the reader came back", fail)
        yield* Fiber.join(writer)
        yield* checkBound(a, b, bound, "after the transfer", fail)
      })
    ),

    make("fails a write after end with Closed, even an empty one", (a, _b, fail) =>
      Effect.gen(function* () {
        yield* a.end
        yield* expectReason(a.write(new Uint8Array(3)), ["Closed"], "write after end", fail)
        yield* expectReason(a.write(new Uint8Array(0)), ["Closed"], "empty write after end", fail)
        yield* a.abort
        yield* expectReason(a.write(new Uint8Array(0)), ["Closed"], "empty write after abort", fail)
        yield* expectReason(a.end, ["Closed"], "end after abort", fail)
      })
    ),

    make("abort fails the peer's blocked read with Broken and our own with Closed", (a, b, fail) =>
      Effect.gen(function* () {
        const peerRead = yield* Effect.forkChild(readAll(b), { startImmediately: true })
        const ownRead = yield* Effect.forkChild(readAll(a), { startImmediately: true })
        yield* Effect.sleep(20)
        yield* a.abort
        yield* a.abort
        yield* expectReason(Fiber.join(peerRead), ["Broken"], "peer's blocked read after abort", fail)
        yield* expectReason(Fiber.join(ownRead), ["Closed"], "own blocked read after abort", fail)
        yield* expectReason(readAll(a), ["Closed"], "own read after abort", fail)
      })
    ),

    make("abort wakes the peer's blocked write with Broken", (a, b, fail) =>
      Effect.gen(function* () {
        const chunk = randomBytes(64 * KiB, seed)
        const writer = yield* Effect.forkChild(Effect.forever(b.write(chunk)), { startImmediately: true })
        yield* untilNoProgress(b, writer)
        if (writer.pollUnsafe() !== undefined) return yield* fail("the writer stopped before it was blocked")
        yield* a.abort
        yield* expectReason(Fiber.join(writer), ["Broken"], "peer's blocked write after abort", fail)
      })
    ),

    make(`moves ${bulk} bytes both ways at once in random chunk sizes`, (a, b, fail) =>
      Effect.gen(function* () {
        const up = randomBytes(bulk, seed)
        const down = randomBytes(bulk, seed + 1)
        const [gotDown, gotUp] = yield* Effect.all(
          [
            Duplex.exchange(a, Stream.fromIterable(randomChunks(up, 64 * KiB, seed)), collectBytes),
            Duplex.exchange(b, Stream.fromIterable(randomChunks(down, 64 * KiB, seed + 1)), collectBytes)
          ],
          { concurrency: 2 }
        )
        yield* expectSame(gotUp, up, `${a.label} → ${b.label}`, fail)
        yield* expectSame(gotDown, down, `${b.label} → ${a.label}`, fail)
      })
    ),

    make("closing the scope wakes and fails everything pending", (_a, _b, fail, watch) =>
      Effect.gen(function* () {
        const scope = yield* Scope.make()
        const [c, d] = yield* Scope.provide(makePair, scope)
        watch(c, d)
        // c waits for bytes d never sends, and writes bytes d never reads: both are blocked.
        const pendingRead = yield* Effect.forkChild(readAll(c), { startImmediately: true })
        const filler = randomBytes(64 * KiB, seed)
        const pendingWrite = yield* Effect.forkChild(Effect.forever(c.write(filler)), { startImmediately: true })
        yield* untilNoProgress(c, pendingWrite)
        yield* Scope.close(scope, Exit.void)
        yield* expectReason(Fiber.join(pendingRead), ["Closed", "Broken"], "blocked read at scope close", fail)
        yield* expectReason(Fiber.join(pendingWrite), ["Closed", "Broken"], "blocked write at scope close", fail)
        yield* expectReason(c.write(filler), ["Closed"], "write after scope close", fail)
        yield* expectReason(readAll(d), ["Closed"], "read after scope close", fail)
      })
    )
  ]
}

const expectSame = (got: Uint8Array, want: Uint8Array, what: string, fail: (d: string) => ConformanceError) => {
  const at = firstDifference(got, want)
  return at < 0
    ? Effect.void
    : Effect.fail(fail(`${what}: got ${got.length} bytes, want ${want.length}; first difference at byte ${at}`))
}

const expectReason = <A, E>(
  effect: Effect.Effect<A, E>,
  tags: ReadonlyArray<DuplexError.DuplexErrorReason["_tag"]>,
  what: string,
  fail: (d: string) => ConformanceError
): Effect.Effect<void, ConformanceError> =>
  Effect.flatMap(Effect.exit(effect), (exit) => {
    if (Exit.isSuccess(exit)) return Effect.fail(fail(`${what}: succeeded, expected ${tags.join(" or ")}`))
    const error = exit.cause.reasons.find((r) => r._tag === "Fail")
    const value = error?._tag === "Fail" ? error.error : undefined
    if (DuplexError.isDuplexError(value) && tags.includes(value.reason._tag)) return Effect.void
    return Effect.fail(fail(`${what}: expected DuplexError ${tags.join(" or ")}, got ${String(value ?? exit.cause)}`))
  })

/** Waits until `d` stops accepting outbound bytes for 100 ms, or the writer fiber ends. */
const untilNoProgress = (d: Duplex.Duplex, writer: Fiber.Fiber<unknown, unknown>) =>
  Effect.gen(function* () {
    let last = -1
    let still = 0
    while (still < 5 && writer.pollUnsafe() === undefined) {
      yield* Effect.sleep(20)
      const { bytes } = (yield* d.stats).outbound
      still = bytes === last ? still + 1 : 0
      last = bytes
    }
  })

const checkBound = (
  a: Duplex.Duplex,
  b: Duplex.Duplex,
  bound: number,
  when: string,
  fail: (d: string) => ConformanceError
) =>
  Effect.gen(function* () {
    const sa = yield* a.stats
    const sb = yield* b.stats
    if (sa.outbound.peakBuffered > bound)
      return yield* fail(`${a.label} buffered ${sa.outbound.peakBuffered} outbound bytes ${when}, bound ${bound}`)
    if (sb.inbound.peakBuffered > bound)
      return yield* fail(`${b.label} buffered ${sb.inbound.peakBuffered} inbound bytes ${when}, bound ${bound}`)
  })
