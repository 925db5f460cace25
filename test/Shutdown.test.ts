import { assert, describe, it } from "@effect/vitest"
import { Cause, Deferred, Duration, Effect, Exit, Fiber, Option, Queue, Scope } from "effect"
import { TestClock } from "effect/testing"
import { Duplex, DuplexError, Framing, Shutdown, Tcp } from "fullduplex"
import { assertNoLeaks, concatBytes, resources, withLeakCheck } from "fullduplex/testkit"
import * as net from "node:net"
import { Worker } from "node:worker_threads"
import { duplexErrorOf, EventLog, within } from "./helpers.js"

const idBytes = (id: number): Uint8Array => {
  const bytes = new Uint8Array(8)
  new DataView(bytes.buffer).setUint32(0, id)
  return bytes
}
const idOf = (bytes: Uint8Array): number => new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(0)

/** A raw framed peer in the server role's place: it sends the preface, as a Shutdown server does first. */
const servingPeer = (duplex: Duplex.Duplex) =>
  Effect.tap(Framing.make(duplex), (peer) => peer.send(Framing.control(Shutdown.PREFACE)))

/** A raw framed peer in the client role's place: it reads (and checks) the server's preface first. */
const askingPeer = (duplex: Duplex.Duplex) =>
  Effect.tap(Framing.make(duplex), (peer) =>
    Effect.map(peer.read, (frame) => {
      const preface = Option.getOrThrow(frame)
      assert.strictEqual(preface._tag, "Control", "the server's first frame is a control frame")
      assert.deepStrictEqual([...preface.payload], [...Shutdown.PREFACE], "the server's first frame is its preface")
    })
  )

/** Lets forked fibers run until they block. */
const settle = Effect.gen(function* () {
  for (let i = 0; i < 20; i++) yield* Effect.yieldNow
})

/** Moves the TestClock `millis` forward in steps of `step`, letting fibers run after each. */
const stepClock = (millis: number, step: number) =>
  Effect.gen(function* () {
    for (let moved = 0; moved < millis; moved += step) {
      yield* TestClock.adjust(Duration.millis(step))
      yield* settle
    }
  })

/**
 * What happened to every request of a run: what the server read, and what each caller was told. The
 * handshake's promise is that these agree exactly: a request is answered if and only if the server read
 * it, every other one is `NotProcessed`, and nothing ends any other way.
 */
class Ledger {
  readonly serverRead = new Set<number>()
  readonly answered = new Set<number>()
  readonly notProcessed = new Set<number>()
  /** Requests that ended any other way: an ambiguous end, the failure the handshake exists to prevent. */
  readonly other: Array<string> = []
  issued = 0

  /** A handler that records what the server read and answers with the request itself. */
  readonly handle = (request: Uint8Array) =>
    Effect.sync(() => {
      this.serverRead.add(idOf(request))
      return request
    })

  /** A caller that sends requests back to back until one is refused or fails. */
  caller(client: Shutdown.Client): Effect.Effect<void> {
    const self = this
    return Effect.gen(function* () {
      while (true) {
        const id = self.issued++
        const result = yield* Effect.exit(client.request(idBytes(id)))
        if (Exit.isSuccess(result)) {
          if (idOf(result.value) !== id) self.other.push(`request ${id} got the answer of ${idOf(result.value)}`)
          else self.answered.add(id)
          continue
        }
        const error = Cause.squash(result.cause) as DuplexError.DuplexError
        if (error.reason?._tag === "NotProcessed") self.notProcessed.add(id)
        else self.other.push(`request ${id}: ${String(error.message ?? error)}`)
        return
      }
    })
  }

  /** The handshake's promise, with the facts in the message when it is broken. */
  check(what: string): void {
    const summary = `${what}: issued ${this.issued}, read ${this.serverRead.size}, answered ${this.answered.size}, not processed ${this.notProcessed.size}`
    assert.deepStrictEqual(this.other, [], `${summary}; requests that ended ambiguously`)
    const readNotAnswered = [...this.serverRead].filter((id) => !this.answered.has(id))
    assert.deepStrictEqual(readNotAnswered, [], `${summary}; read by the server and never answered`)
    const refusedButRead = [...this.notProcessed].filter((id) => this.serverRead.has(id))
    assert.deepStrictEqual(refusedButRead, [], `${summary}; reported not processed, yet the server read them`)
    assert.strictEqual(this.answered.size + this.notProcessed.size, this.issued, `${summary}; some never ended`)
  }
}

const random = (seed: number) => {
  let state = seed >>> 0 || 1
  return (n: number): number => {
    state ^= state << 13
    state ^= state >>> 17
    state ^= state << 5
    return (state >>> 0) % n
  }
}

const SEED = Number(process.env.SHUTDOWN_SEED ?? Date.now() % 2 ** 31)

describe("Shutdown, one connection", () => {
  it.effect("answers pipelined requests from several fibers, each with its own response, in order", () =>
    Effect.gen(function* () {
      const [a, b] = yield* Duplex.pair({ capacity: 256 })
      const ledger = new Ledger()
      const served = yield* Shutdown.server(b, { handle: ledger.handle })
      const client = yield* Shutdown.client(a, { maxQueued: 4 })
      const answers = yield* Effect.forEach(
        Array.from({ length: 200 }, (_, i) => i),
        (i) => Effect.map(client.request(idBytes(i)), idOf),
        { concurrency: 16 }
      )
      assert.deepStrictEqual(
        answers,
        Array.from({ length: 200 }, (_, i) => i)
      )
      const report = yield* client.close
      assert.deepStrictEqual(report, { sent: 200, answered: 200, notProcessed: 0, noticeReceived: false })
      const done = yield* served.done
      assert.strictEqual(done.answered, 200)
      assert.isFalse(done.noticeSent)
    })
  )

  it.effect(
    "after the notice the connection still works: a client that keeps sending is answered until it half-closes",
    () =>
      Effect.gen(function* () {
        const [a, b] = yield* Duplex.pair({ capacity: 64 })
        const served = yield* Shutdown.server(b, { handle: (r) => Effect.succeed(r), grace: "10 seconds" })
        // A raw framed peer, so the test sees the notice itself and can keep sending after it.
        const peer = yield* askingPeer(a)
        yield* peer.send(Framing.data(idBytes(1)))
        assert.strictEqual(idOf(Option.getOrThrow(yield* peer.read).payload), 1)
        yield* served.goingAway
        const notice = Option.getOrThrow(yield* peer.read)
        assert.strictEqual(notice._tag, "Control", "the notice is a control frame")
        assert.deepStrictEqual([...notice.payload], [...Shutdown.GOING_AWAY])
        for (const id of [2, 3, 4]) {
          yield* peer.send(Framing.data(idBytes(id)))
          const answer = Option.getOrThrow(yield* peer.read)
          assert.strictEqual(answer._tag, "Data")
          assert.strictEqual(idOf(answer.payload), id, "answered after the notice")
        }
        yield* TestClock.adjust("5 seconds") // within the grace
        yield* peer.end
        assert.isTrue(Option.isNone(yield* peer.read), "the server's EOF comes after the client's")
        const done = yield* served.done
        assert.strictEqual(done.answered, 4)
        assert.isTrue(done.noticeSent)
        assert.strictEqual(done.drainMillis, 5000)
      })
  )

  it.effect("the server never half-closes before the client does, however long after the notice", () =>
    Effect.gen(function* () {
      const [a, b] = yield* Duplex.pair({ capacity: 64 })
      const served = yield* Shutdown.server(b, { handle: (r) => Effect.succeed(r), grace: "1 minute" })
      const peer = yield* askingPeer(a)
      yield* served.goingAway
      yield* served.goingAway // idempotent: one notice
      assert.strictEqual(Option.getOrThrow(yield* peer.read)._tag, "Control")
      yield* TestClock.adjust("59 seconds")
      const early = yield* Effect.forkChild(peer.read, { startImmediately: true })
      yield* settle
      assert.isUndefined(early.pollUnsafe(), "no EOF (nor anything else) while the client has not half-closed")
      yield* peer.end
      assert.isTrue(Option.isNone(yield* Fiber.join(early)))
      assert.isTrue((yield* served.done).noticeSent)
    })
  )

  it.effect("a client that ignores the notice is aborted once the grace is over and it has been silent 250 ms", () =>
    Effect.gen(function* () {
      const [a, b] = yield* Duplex.pair({ capacity: 64 })
      const served = yield* Shutdown.server(b, { handle: (r) => Effect.succeed(r), grace: "3 seconds" })
      const peer = yield* askingPeer(a)
      yield* served.goingAway
      assert.strictEqual(Option.getOrThrow(yield* peer.read)._tag, "Control")
      yield* peer.send(Framing.data(idBytes(7))) // still answered within the grace
      assert.strictEqual(idOf(Option.getOrThrow(yield* peer.read).payload), 7)
      yield* TestClock.adjust("2999 millis")
      const done = yield* Effect.forkChild(served.done, { startImmediately: true })
      yield* settle
      assert.isUndefined(done.pollUnsafe(), "not cut before the grace")
      yield* TestClock.adjust("1 millis") // the grace is over: now the client is judged by its silence
      yield* stepClock(200, 50)
      assert.isUndefined(done.pollUnsafe(), "not cut before 250 ms of silence")
      yield* stepClock(50, 50)
      const error = duplexErrorOf(yield* Fiber.await(done), "done")
      assert.strictEqual(error.reason._tag, "Timeout")
      assert.include(error.message, "did not half-close")
      const afterCut = duplexErrorOf(yield* Effect.exit(peer.read), "the peer's read after the cut")
      assert.strictEqual(afterCut.reason._tag, "Broken", "the client sees the abort")
    })
  )

  it.effect("goingAway after the client's half-close sends nothing and changes nothing", () =>
    Effect.gen(function* () {
      const [a, b] = yield* Duplex.pair({ capacity: 64 })
      const served = yield* Shutdown.server(b, { handle: (r) => Effect.succeed(r), grace: "1 second" })
      const peer = yield* askingPeer(a)
      yield* peer.end
      const report = yield* served.done
      yield* served.goingAway
      yield* TestClock.adjust("10 seconds")
      assert.isTrue(Option.isNone(yield* peer.read), "EOF, with no notice before it")
      assert.isFalse(report.noticeSent)
    })
  )

  it.effect(
    "on the notice the client refuses new requests as NotProcessed goingAway, answers the ones in flight, then half-closes",
    () =>
      Effect.gen(function* () {
        const [a, b] = yield* Duplex.pair({ capacity: 4096 })
        const release = yield* Deferred.make<void>()
        const read: Array<number> = []
        // The server holds the first request until released, so that later ones queue behind it.
        const served = yield* Shutdown.server(b, {
          handle: (r) =>
            Effect.gen(function* () {
              read.push(idOf(r))
              if (idOf(r) === 0) yield* Deferred.await(release)
              return r
            })
        })
        const client = yield* Shutdown.client(a, { maxQueued: 64 })
        const requests = yield* Effect.forkChild(
          Effect.forEach([0, 1, 2], (i) => Effect.exit(client.request(idBytes(i))), { concurrency: "unbounded" }),
          { startImmediately: true }
        )
        yield* settle
        yield* served.goingAway
        yield* settle
        yield* client.goingAway // the notice has arrived
        const refused = duplexErrorOf(yield* Effect.exit(client.request(idBytes(9))), "a request after the notice")
        assert.strictEqual(refused.reason._tag, "NotProcessed")
        assert.strictEqual(refused.reason._tag === "NotProcessed" && refused.reason.why, "goingAway")
        assert.isTrue(refused.reason._tag === "NotProcessed" && refused.reason.retryable)
        yield* Deferred.succeed(release, undefined)
        const exits = yield* Fiber.join(requests)
        assert.deepStrictEqual(
          exits.map((e) => Exit.isSuccess(e)),
          [true, true, true],
          "the three were sent before the notice"
        )
        const report = yield* client.close
        assert.deepStrictEqual(report, { sent: 3, answered: 3, notProcessed: 1, noticeReceived: true })
        assert.deepStrictEqual(read, [0, 1, 2])
        assert.strictEqual((yield* served.done).answered, 3)
      })
  )

  it.effect("requests still queued when the notice arrives are NotProcessed and never reach the server", () =>
    Effect.gen(function* () {
      // A tiny pair: the client's writer blocks after a few requests, so most of them wait in its queue.
      const [a, b] = yield* Duplex.pair({ capacity: 16 })
      const peer = yield* servingPeer(b)
      const client = yield* Shutdown.client(a, { maxQueued: 64 })
      const exits = yield* Effect.forkChild(
        Effect.forEach(
          Array.from({ length: 20 }, (_, i) => i),
          (i) => Effect.exit(client.request(idBytes(i))),
          { concurrency: "unbounded" }
        ),
        { startImmediately: true }
      )
      yield* settle
      yield* peer.send(Framing.control(Shutdown.GOING_AWAY))
      yield* settle
      // Now read what was sent, answer it, and half-close when the client has.
      const seen: Array<number> = []
      while (true) {
        const frame = yield* peer.read
        if (Option.isNone(frame)) break
        seen.push(idOf(frame.value.payload))
        yield* peer.send(Framing.data(frame.value.payload))
      }
      yield* peer.end
      const results = yield* Fiber.join(exits)
      const answered = results.flatMap((e, i) => (Exit.isSuccess(e) ? [i] : []))
      const refused = results.flatMap((e, i) =>
        Exit.isFailure(e) && duplexErrorOf(e).reason._tag === "NotProcessed" ? [i] : []
      )
      assert.deepStrictEqual(answered, seen, "answered exactly what the server saw")
      assert.isAbove(refused.length, 0, "some requests were still queued")
      assert.strictEqual(answered.length + refused.length, 20)
      const report = yield* client.close
      assert.isTrue(report.noticeReceived)
    })
  )

  it.effect(
    "close sends what was queued, half-closes, and reads every answer; later requests are NotProcessed closing",
    () =>
      Effect.gen(function* () {
        const [a, b] = yield* Duplex.pair({ capacity: 32 })
        const served = yield* Shutdown.server(b, { handle: (r) => Effect.succeed(r) })
        const client = yield* Shutdown.client(a)
        const exits = yield* Effect.forkChild(
          Effect.forEach(
            Array.from({ length: 30 }, (_, i) => i),
            (i) => Effect.exit(client.request(idBytes(i))),
            { concurrency: "unbounded" }
          ),
          { startImmediately: true }
        )
        yield* settle
        const report = yield* client.close
        assert.deepStrictEqual(report, { sent: 30, answered: 30, notProcessed: 0, noticeReceived: false })
        assert.isTrue((yield* Fiber.join(exits)).every(Exit.isSuccess))
        const late = duplexErrorOf(yield* Effect.exit(client.request(idBytes(99))), "a request after close")
        assert.strictEqual(late.reason._tag === "NotProcessed" && late.reason.why, "closing")
        assert.deepStrictEqual(yield* client.close, { ...report, notProcessed: 1 }, "close is idempotent")
        assert.strictEqual((yield* served.done).answered, 30)
      })
  )

  it.effect(
    "when the connection breaks, sent requests fail with the break and queued ones NotProcessed connectionLost",
    () =>
      Effect.gen(function* () {
        const [a, b] = yield* Duplex.pair({ capacity: 16 })
        const peer = yield* servingPeer(b)
        const client = yield* Shutdown.client(a)
        const exits = yield* Effect.forkChild(
          Effect.forEach(
            Array.from({ length: 10 }, (_, i) => i),
            (i) => Effect.exit(client.request(idBytes(i))),
            { concurrency: "unbounded" }
          ),
          { startImmediately: true }
        )
        yield* settle
        const first = Option.getOrThrow(yield* peer.read)
        yield* peer.send(Framing.data(first.payload)) // one answered
        yield* settle
        yield* b.abort
        const reasons = (yield* Fiber.join(exits)).map((e) =>
          Exit.isSuccess(e) ? "answered" : duplexErrorOf(e).reason._tag === "NotProcessed" ? "notProcessed" : "broken"
        )
        assert.strictEqual(reasons[0], "answered")
        assert.include(reasons, "broken", "requests written before the reset")
        assert.include(reasons, "notProcessed", "requests still queued")
        assert.deepStrictEqual([...reasons].sort(), reasons.slice().sort(), "each request ends once")
        const lostWhy = duplexErrorOf(yield* Effect.exit(client.request(idBytes(50))))
        assert.strictEqual(lostWhy.reason._tag === "NotProcessed" && lostWhy.reason.why, "connectionLost")
      })
  )

  it.effect("a server that closes with requests unanswered fails them ProtocolError, not NotProcessed", () =>
    Effect.gen(function* () {
      const [a, b] = yield* Duplex.pair({ capacity: 1024 })
      const peer = yield* servingPeer(b)
      const client = yield* Shutdown.client(a)
      const pending = yield* Effect.forkChild(Effect.exit(client.request(idBytes(1))), { startImmediately: true })
      assert.strictEqual(idOf(Option.getOrThrow(yield* peer.read).payload), 1, "the request reached the server")
      yield* peer.end // the symmetric mistake: close without answering
      const error = duplexErrorOf(yield* Fiber.join(pending), "the unanswered request")
      assert.strictEqual(error.reason._tag, "ProtocolError")
      assert.include(error.message, "may or may not have been processed")
    })
  )

  it.effect(
    "protocol violations fail typed: an unknown control frame, an answer nobody asked for, a control frame to the server",
    () =>
      Effect.gen(function* () {
        const [a1, b1] = yield* Duplex.pair({ capacity: 1024 })
        const peer1 = yield* servingPeer(b1)
        const client1 = yield* Shutdown.client(a1)
        yield* peer1.send(Framing.control(Uint8Array.of(0x7f)))
        assert.strictEqual(duplexErrorOf(yield* Effect.exit(client1.close)).reason._tag, "ProtocolError")

        const [a2, b2] = yield* Duplex.pair({ capacity: 1024 })
        const peer2 = yield* servingPeer(b2)
        const client2 = yield* Shutdown.client(a2)
        yield* peer2.send(Framing.data(idBytes(5)))
        const unasked = duplexErrorOf(yield* Effect.exit(client2.close))
        assert.strictEqual(unasked.reason._tag, "ProtocolError")
        assert.include(unasked.message, "no request outstanding")

        const [a3, b3] = yield* Duplex.pair({ capacity: 1024 })
        const served = yield* Shutdown.server(b3, { handle: (r) => Effect.succeed(r) })
        const peer3 = yield* askingPeer(a3)
        yield* peer3.send(Framing.control(Shutdown.GOING_AWAY))
        assert.strictEqual(duplexErrorOf(yield* Effect.exit(served.done)).reason._tag, "ProtocolError")
      })
  )

  it.effect("closing the client's scope fails every pending request instead of leaving it waiting", () =>
    Effect.gen(function* () {
      const [a, b] = yield* Duplex.pair({ capacity: 16 })
      const peer = yield* servingPeer(b) // reads nothing, answers nothing
      const outcome = yield* Effect.scoped(
        Effect.gen(function* () {
          const client = yield* Shutdown.client(a)
          return yield* Effect.forkDetach(
            Effect.forEach([1, 2, 3, 4, 5, 6, 7, 8], (i) => Effect.exit(client.request(idBytes(i))), {
              concurrency: "unbounded"
            }),
            { startImmediately: true }
          )
        }).pipe(Effect.tap(() => settle))
      )
      const exits = yield* Fiber.join(outcome)
      assert.isTrue(exits.every(Exit.isFailure), "every request failed")
      assert.isTrue(
        exits.every((e) => ["NotProcessed", "Closed"].includes(duplexErrorOf(e).reason._tag)),
        "NotProcessed if unsent, Closed if sent"
      )
      yield* peer.abort
    })
  )

  it.effect("bad options fail InvalidOptions before anything runs", () =>
    Effect.gen(function* () {
      const [a, b] = yield* Duplex.pair()
      const grace = duplexErrorOf(
        yield* Effect.exit(Shutdown.server(b, { handle: (r) => Effect.succeed(r), grace: Duration.millis(-1) }))
      )
      assert.strictEqual(grace.reason._tag, "InvalidOptions")
      const queued = duplexErrorOf(yield* Effect.exit(Shutdown.client(a, { maxQueued: 0 })))
      assert.strictEqual(queued.reason._tag, "InvalidOptions")
      const frame = duplexErrorOf(yield* Effect.exit(Shutdown.client(a, { maxFrameBytes: -1 })))
      assert.strictEqual(frame.reason._tag, "InvalidOptions")
    })
  )
})

/** One connection under continuous requests; the server announces at `delayMillis`, the client may close at the same instant. */
const oneShutdown = (
  conn: { readonly client: Duplex.Duplex; readonly server: Duplex.Duplex },
  options: {
    readonly delayMillis: number
    readonly simultaneous: boolean
    readonly callers: number
    /** Whether the handler yields once per request, so that requests are still in flight when the shutdown lands. */
    readonly slowHandler?: boolean
  }
) =>
  Effect.scoped(
    Effect.gen(function* () {
      const ledger = new Ledger()
      const handle = options.slowHandler
        ? (request: Uint8Array) => Effect.andThen(Effect.sleep(0), ledger.handle(request))
        : ledger.handle
      const served = yield* Shutdown.server(conn.server, { handle, grace: "5 seconds" })
      const client = yield* Shutdown.client(conn.client, { maxQueued: 8 })
      const callers = yield* Effect.forkChild(
        Effect.all(
          Array.from({ length: options.callers }, () => ledger.caller(client)),
          { concurrency: "unbounded" }
        ),
        { startImmediately: true }
      )
      if (options.delayMillis > 0) yield* Effect.sleep(options.delayMillis)
      else yield* Effect.yieldNow
      if (options.simultaneous) {
        // Both ends shut down at the same instant: the client half-closes as the server announces.
        yield* Effect.all([served.goingAway, Effect.asVoid(client.close)], { concurrency: 2 })
      } else {
        yield* served.goingAway
      }
      yield* Fiber.join(callers)
      yield* client.close
      const report = yield* served.done
      return { ledger, report }
    })
  )

describe("Shutdown under load", () => {
  it.live(
    "every request is answered or NotProcessed when the server announces at a random moment (pair, 200 runs)",
    () =>
      Effect.gen(function* () {
        const next = random(SEED)
        for (let run = 0; run < 200; run++) {
          const [client, server] = yield* Duplex.pair({ capacity: [16, 256, 4096, 65536][next(4)]! })
          const { ledger } = yield* oneShutdown(
            { client, server },
            { delayMillis: next(4), simultaneous: false, callers: 1 + next(4) }
          ).pipe(within("5 seconds", `run ${run}, seed ${SEED}`))
          ledger.check(`run ${run} (SHUTDOWN_SEED=${SEED})`)
        }
      }),
    60_000
  )

  it.live(
    "both peers shutting down at the same moment lose nothing: 500 runs over TCP loopback",
    () =>
      Effect.gen(function* () {
        const next = random(SEED + 1)
        // One listener; each run takes the next accepted connection's duplex from the queue.
        const accepted = yield* Queue.unbounded<{ duplex: Duplex.Duplex; done: Deferred.Deferred<void> }>()
        const server = yield* Tcp.serve({ port: 0, idleTimeout: 0 }, (duplex) =>
          Effect.gen(function* () {
            const done = yield* Deferred.make<void>()
            yield* Queue.offer(accepted, { duplex, done })
            yield* Deferred.await(done)
          })
        )
        let notProcessedRuns = 0
        let answered = 0
        for (let run = 0; run < 500; run++) {
          yield* Effect.scoped(
            Effect.gen(function* () {
              const client = yield* Tcp.connect(server.address)
              const { duplex, done } = yield* Queue.take(accepted)
              const { ledger, report } = yield* oneShutdown(
                { client, server: duplex },
                { delayMillis: next(3), simultaneous: true, callers: 1 + next(3), slowHandler: run % 2 === 1 }
              ).pipe(
                within("10 seconds", `run ${run}, seed ${SEED + 1}`),
                Effect.ensuring(Deferred.succeed(done, undefined))
              )
              ledger.check(`run ${run} (SHUTDOWN_SEED=${SEED})`)
              assert.strictEqual(report.answered, ledger.answered.size)
              if (ledger.notProcessed.size > 0) notProcessedRuns++
              answered += ledger.answered.size
            })
          )
        }
        assert.isAbove(answered, 500, "requests were flowing when the shutdowns landed")
        assert.isAbove(notProcessedRuns, 0, "some shutdowns landed with requests still unsent")
      }),
    120_000
  )

  it.live(
    "the control: a symmetric shutdown (the server half-closes at once) leaves requests ambiguous",
    () =>
      Effect.gen(function* () {
        // The same load against a server that closes the way TCP alone would: stop reading, FIN. The
        // ledger must catch it, or the tests above prove nothing.
        let ambiguousRuns = 0
        for (let run = 0; run < 20; run++) {
          yield* Effect.scoped(
            Effect.gen(function* () {
              const [client, server] = yield* Duplex.pair({ capacity: 4096 })
              const ledger = new Ledger()
              const framed = yield* servingPeer(server)
              const stop = yield* Deferred.make<void>()
              const naive = Effect.gen(function* () {
                while (true) {
                  // Checked first: a read that is ready at once would always win the race below.
                  if (yield* Deferred.isDone(stop)) break
                  const frame = yield* Effect.raceFirst(
                    framed.read,
                    Effect.as(Deferred.await(stop), Option.none<Framing.Frame>())
                  )
                  if (Option.isNone(frame)) break
                  // A handler that takes a moment, so that requests wait in the pipe behind it.
                  yield* Effect.sleep(1)
                  yield* framed.send(Framing.data(yield* ledger.handle(frame.value.payload)))
                }
                yield* framed.end
              })
              const serving = yield* Effect.forkChild(Effect.ignore(naive), { startImmediately: true })
              const shutdownClient = yield* Shutdown.client(client, { maxQueued: 8 })
              const callers = yield* Effect.forkChild(
                Effect.all([ledger.caller(shutdownClient), ledger.caller(shutdownClient)], { concurrency: 2 }),
                { startImmediately: true }
              )
              yield* Effect.sleep(2)
              yield* Deferred.succeed(stop, undefined)
              yield* Fiber.join(callers).pipe(within("5 seconds", "the callers against the naive server"))
              yield* Fiber.join(serving)
              if (ledger.other.length > 0) ambiguousRuns++
            })
          )
        }
        assert.isAbove(ambiguousRuns, 0, "the ledger detects requests lost to a symmetric shutdown")
      }),
    60_000
  )
})

describe("Shutdown.serve: server-wide graceful shutdown", () => {
  it.live(
    "shutdown tells every connection and drains each within the grace; nothing is aborted",
    () =>
      Effect.gen(function* () {
        const log = new EventLog()
        const ledgers = Array.from({ length: 8 }, () => new Ledger())
        const handle = (request: Uint8Array) =>
          Effect.sync(() => {
            ledgers[idOf(request.subarray(4)) % 8]!.serverRead.add(idOf(request))
            return request
          })
        const server = yield* Shutdown.serve({ port: 0, grace: "5 seconds", onEvent: log.onEvent, handle })
        const clients = yield* Effect.forEach(ledgers, (ledger, index) =>
          Effect.gen(function* () {
            const conn = yield* Tcp.connect(server.address)
            const client = yield* Shutdown.client(conn)
            // Each request carries its id and its client's index, so the server's handler can file it.
            const tagged: Shutdown.Client = {
              ...client,
              request: (payload) => {
                const bytes = new Uint8Array(8)
                bytes.set(payload.subarray(0, 4))
                new DataView(bytes.buffer).setUint32(4, index)
                return Effect.map(client.request(bytes), (answer) => answer.subarray(0, 4))
              }
            }
            const callers = yield* Effect.forkChild(
              Effect.all([ledger.caller(tagged), ledger.caller(tagged)], { concurrency: 2 }),
              { startImmediately: true }
            )
            return { client, callers }
          })
        )
        yield* Effect.sleep(50)
        const started = Date.now()
        yield* server.shutdown.pipe(within("8 seconds", "the server's shutdown"))
        const took = Date.now() - started
        for (const { client, callers } of clients) {
          yield* Fiber.join(callers).pipe(within("2 seconds", "the callers after shutdown"))
          assert.isTrue((yield* client.report).noticeReceived, "every client got the notice")
        }
        ledgers.forEach((ledger, i) => ledger.check(`client ${i}`))
        assert.isAbove(
          ledgers.reduce((n, l) => n + l.answered.size, 0),
          100,
          "requests were flowing"
        )
        const stats = yield* server.stats
        assert.deepInclude(stats, { completed: 8, failed: 0, shutdownAborts: 0, active: 0 }, log.describe())
        assert.isBelow(took, 5000, "the drain did not need the grace")
      }),
    30_000
  )

  it.live(
    "a client that ignores the notice is cut at the grace and reported; the others drain",
    () =>
      Effect.gen(function* () {
        const log = new EventLog()
        const ledger = new Ledger()
        const server = yield* Shutdown.serve({
          port: 0,
          grace: "300 millis",
          onEvent: log.onEvent,
          handle: ledger.handle
        })
        const good = yield* Shutdown.client(yield* Tcp.connect(server.address))
        const callers = yield* Effect.forkChild(ledger.caller(good), { startImmediately: true })
        // The deaf client: frames, but never looks for the notice and never half-closes.
        const deaf = yield* askingPeer(yield* Tcp.connect(server.address))
        yield* deaf.send(Framing.data(idBytes(1_000_000)))
        assert.strictEqual(Option.getOrThrow(yield* deaf.read)._tag, "Data")
        yield* server.shutdown.pipe(within("3 seconds", "the shutdown"))
        yield* Fiber.join(callers).pipe(within("2 seconds", "the good client's callers"))
        ledger.serverRead.delete(1_000_000)
        ledger.check("the good client")
        const closed = yield* log.waitFor("ConnectionClosed", { count: 2 })
        const cut = closed.filter((e) => e.ending === "failed")
        assert.strictEqual(cut.length, 1, log.describe())
        const reason = Cause.squash(cut[0]!.cause!) as DuplexError.DuplexError
        assert.strictEqual(reason.reason._tag, "Timeout", log.describe())
        assert.deepInclude(yield* server.stats, { completed: 1, failed: 1, shutdownAborts: 0 })
        // The deaf client read the notice, then the abort.
        const notice = yield* deaf.read
        assert.strictEqual(Option.getOrThrow(notice)._tag, "Control")
        const after = yield* Effect.exit(deaf.read)
        assert.isTrue(Exit.isFailure(after), "the deaf client is cut")
      }),
    30_000
  )
})

/** The outcome of a request's exit: `answered`, or its failure's reason. */
const outcomeOf = (exit: Exit.Exit<unknown, unknown> | undefined): string =>
  exit === undefined
    ? "pending"
    : Exit.isSuccess(exit)
      ? "answered"
      : ((Cause.squash(exit.cause) as DuplexError.DuplexError).reason?._tag ?? String(Cause.squash(exit.cause)))

/** The outcomes of forked `Effect.exit(request)` fibers, as they stand. */
const outcomesOf = (fibers: ReadonlyArray<Fiber.Fiber<Exit.Exit<Uint8Array, DuplexError.DuplexError>>>) =>
  fibers.map((f) => {
    const polled = f.pollUnsafe()
    return polled === undefined ? "pending" : Exit.isSuccess(polled) ? outcomeOf(polled.value) : "interrupted"
  })

describe("Shutdown, the cases a review found", () => {
  it.effect("a client that half-closed at once is not cut while the server is still answering its requests", () =>
    Effect.gen(function* () {
      const [a, b] = yield* Duplex.pair({ capacity: 4096 })
      // Each request takes 2 s to handle; the grace is 3 s; the three take 6 s in all.
      const served = yield* Shutdown.server(b, {
        handle: (r) => Effect.as(Effect.sleep("2 seconds"), r),
        grace: "3 seconds"
      })
      const peer = yield* askingPeer(a)
      for (const id of [1, 2, 3]) yield* peer.send(Framing.data(idBytes(id)))
      yield* peer.end // the client has done everything asked of it
      yield* settle
      yield* served.goingAway
      const answers: Array<number> = []
      const reading = yield* Effect.forkChild(
        Effect.gen(function* () {
          while (true) {
            const frame = yield* peer.read
            if (Option.isNone(frame)) return
            if (frame.value._tag === "Data") answers.push(idOf(frame.value.payload))
          }
        }),
        { startImmediately: true }
      )
      for (let second = 0; second < 8; second++) {
        yield* TestClock.adjust("1 second")
        yield* settle
      }
      const done = yield* Effect.exit(served.done)
      assert.strictEqual(outcomeOf(done), "answered", `done; answers so far [${answers.join(", ")}]`)
      assert.deepStrictEqual(answers, [1, 2, 3])
      yield* Fiber.join(reading)
    })
  )

  it.live(
    "over TCP, a compliant client's pipelined requests behind a slow handler are all answered at shutdown",
    () =>
      Effect.gen(function* () {
        const server = yield* Shutdown.serve({
          port: 0,
          grace: "300 millis",
          onEvent: () => Effect.void,
          handle: (r) => Effect.as(Effect.sleep("100 millis"), r) // 8 requests: 800 ms, beyond the grace
        })
        const client = yield* Shutdown.client(yield* Tcp.connect(server.address))
        const requests = yield* Effect.forEach(
          Array.from({ length: 8 }, (_, i) => i),
          (i) => Effect.forkChild(Effect.exit(client.request(idBytes(i))), { startImmediately: true })
        )
        yield* Effect.sleep(20) // all 8 sent; the server is answering the first
        yield* server.shutdown.pipe(within("5 seconds", "the shutdown"))
        yield* Fiber.joinAll(requests).pipe(within("2 seconds", "the requests"))
        assert.deepStrictEqual(outcomesOf(requests), Array(8).fill("answered"))
        assert.isTrue((yield* client.report).noticeReceived)
      }),
    20_000
  )

  it.effect(
    "when the grace ends while the server is behind, a client that never half-closes is cut once it is waited on",
    () =>
      Effect.gen(function* () {
        const [a, b] = yield* Duplex.pair({ capacity: 4096 })
        // A read-ahead of one request: the reader is held back while the handler works.
        const served = yield* Shutdown.server(b, {
          handle: (r) => Effect.as(Effect.sleep("2 seconds"), r),
          grace: "1 second",
          maxPendingBytes: 1
        })
        const peer = yield* askingPeer(a)
        for (const id of [1, 2, 3]) yield* peer.send(Framing.data(idBytes(id)))
        yield* settle
        yield* served.goingAway
        const done = yield* Effect.forkChild(served.done, { startImmediately: true })
        yield* TestClock.adjust("1 second") // the grace ends with the reader held back by the backlog
        yield* settle
        assert.isUndefined(done.pollUnsafe(), "not cut while the server is behind")
        yield* stepClock(6000, 50) // the three are answered (one at a time: the reader reads the next only
        // once an answer makes room); the reader now waits on the client, silent
        const error = duplexErrorOf(yield* Fiber.await(done), "done")
        assert.strictEqual(error.reason._tag, "Timeout")
        assert.include(error.message, "did not half-close")
      })
  )

  it.effect(
    "a client that half-closed but stops reading its answers is cut at drainTimeout, not waited on forever",
    () =>
      Effect.gen(function* () {
        const [a, b] = yield* Duplex.pair({ capacity: 16 })
        const served = yield* Shutdown.server(b, {
          handle: (r) => Effect.succeed(r),
          grace: "3 seconds",
          drainTimeout: "20 seconds",
          stallTimeout: "1 minute" // the drain timeout is under test here, not the stall limit
        })
        const peer = yield* askingPeer(a)
        yield* peer.send(Framing.data(idBytes(1))) // its 13-byte answer leaves 3 bytes of room
        yield* settle
        yield* served.goingAway // the notice waits for room, holding the send lock
        yield* settle
        yield* peer.end // the client complies, and then reads nothing
        const done = yield* Effect.forkChild(served.done, { startImmediately: true })
        yield* TestClock.adjust("19 seconds")
        yield* settle
        assert.isUndefined(done.pollUnsafe(), "still within the drain timeout")
        yield* TestClock.adjust("1 second")
        yield* settle
        const error = duplexErrorOf(yield* Fiber.await(done), "done")
        assert.strictEqual(error.reason._tag, "Timeout")
        assert.include(error.message, "did not finish")
      })
  )

  it.effect("a drainTimeout shorter than the grace is refused", () =>
    Effect.gen(function* () {
      const [, b] = yield* Duplex.pair()
      const error = duplexErrorOf(
        yield* Effect.exit(
          Shutdown.server(b, { handle: (r) => Effect.succeed(r), grace: "10 seconds", drainTimeout: "5 seconds" })
        )
      )
      assert.strictEqual(error.reason._tag, "InvalidOptions")
      assert.include(error.message, "drainTimeout")
    })
  )

  it.effect("requests waiting for room in the queue end when the connection breaks, and when the scope closes", () =>
    Effect.gen(function* () {
      const [a1, b1] = yield* Duplex.pair({ capacity: 16 })
      const client1 = yield* Shutdown.client(a1, { maxQueued: 1 })
      const broken = yield* Effect.forEach(
        Array.from({ length: 6 }, (_, i) => i),
        (i) => Effect.forkChild(Effect.exit(client1.request(idBytes(i))), { startImmediately: true })
      )
      yield* settle
      yield* b1.abort
      yield* settle
      assert.notInclude(outcomesOf(broken), "pending", "after a reset")
      assert.include(outcomesOf(broken), "NotProcessed", "the ones never sent")

      const [a2, b2] = yield* Duplex.pair({ capacity: 16 })
      const closed = yield* Effect.scoped(
        Effect.gen(function* () {
          const client2 = yield* Shutdown.client(a2, { maxQueued: 1 })
          const fibers = yield* Effect.forEach(
            Array.from({ length: 6 }, (_, i) => i),
            (i) => Effect.forkDetach(Effect.exit(client2.request(idBytes(i))), { startImmediately: true })
          )
          yield* settle
          return fibers
        })
      )
      yield* settle
      assert.notInclude(outcomesOf(closed), "pending", "after the scope closed")
      yield* b2.abort
    })
  )

  it.effect(
    "a request over maxFrameBytes fails FrameTooLarge alone: nothing is counted sent, the others are answered",
    () =>
      Effect.gen(function* () {
        const [a, b] = yield* Duplex.pair({ capacity: 4096 })
        const peer = yield* servingPeer(b)
        const client = yield* Shutdown.client(a, { maxFrameBytes: 64 })
        const first = yield* Effect.forkChild(Effect.exit(client.request(idBytes(1))), { startImmediately: true })
        yield* settle
        assert.strictEqual(outcomeOf(yield* Effect.exit(client.request(new Uint8Array(65)))), "FrameTooLarge")
        assert.strictEqual((yield* client.report).sent, 1, "the oversized request was never sent")
        yield* peer.send(Framing.data(Option.getOrThrow(yield* peer.read).payload))
        yield* settle
        assert.deepStrictEqual(outcomesOf([first]), ["answered"])
        const third = yield* Effect.forkChild(Effect.exit(client.request(idBytes(3))), { startImmediately: true })
        assert.strictEqual(idOf(Option.getOrThrow(yield* peer.read).payload), 3, "the connection still works")
        yield* peer.send(Framing.data(idBytes(3)))
        yield* settle
        assert.deepStrictEqual(outcomesOf([third]), ["answered"])
      })
  )

  it.effect("a request of which no byte was written when the peer resets is NotProcessed, not Broken", () =>
    Effect.gen(function* () {
      // Room for exactly two 13-byte frames: requests 0 and 1 are written, 2 waits with nothing accepted.
      const [a, b] = yield* Duplex.pair({ capacity: 26 })
      yield* servingPeer(b)
      const client = yield* Shutdown.client(a)
      const requests = yield* Effect.forEach([0, 1, 2, 3], (i) =>
        Effect.forkChild(Effect.exit(client.request(idBytes(i))), { startImmediately: true })
      )
      yield* settle
      yield* b.abort
      yield* settle
      assert.strictEqual((yield* a.stats).outbound.bytes, 26)
      assert.deepStrictEqual(outcomesOf(requests), ["Broken", "Broken", "NotProcessed", "NotProcessed"])
    })
  )

  it.effect(
    "a request waiting for room in flight is NotProcessed at the notice, and the client half-closes at once",
    () =>
      Effect.gen(function* () {
        const [a, b] = yield* Duplex.pair({ capacity: 4096 })
        const peer = yield* servingPeer(b)
        const client = yield* Shutdown.client(a, { maxInFlight: 1 })
        const requests = yield* Effect.forEach([1, 2], (i) =>
          Effect.forkChild(Effect.exit(client.request(idBytes(i))), { startImmediately: true })
        )
        yield* settle
        assert.strictEqual(idOf(Option.getOrThrow(yield* peer.read).payload), 1)
        yield* peer.send(Framing.control(Shutdown.GOING_AWAY))
        yield* settle
        assert.isTrue(Option.isNone(yield* peer.read), "the client's EOF comes next, before any answer")
        yield* peer.send(Framing.data(idBytes(1)))
        yield* settle
        assert.deepStrictEqual(outcomesOf(requests), ["answered", "NotProcessed"])
      })
  )

  it.effect("a request whose caller gave up while it waited for room in flight is never sent", () =>
    Effect.gen(function* () {
      const [a, b] = yield* Duplex.pair({ capacity: 4096 })
      const peer = yield* servingPeer(b)
      const client = yield* Shutdown.client(a, { maxInFlight: 1 })
      const first = yield* Effect.forkChild(Effect.exit(client.request(idBytes(1))), { startImmediately: true })
      const second = yield* Effect.forkChild(client.request(idBytes(2)), { startImmediately: true })
      yield* settle
      yield* Fiber.interrupt(second)
      assert.strictEqual(idOf(Option.getOrThrow(yield* peer.read).payload), 1)
      yield* peer.send(Framing.data(idBytes(1)))
      yield* Fiber.join(first)
      yield* settle
      assert.strictEqual((yield* client.report).sent, 1)
    })
  )

  it.effect("closing the scope ends every request, those waiting for room in flight included", () =>
    Effect.gen(function* () {
      const [a, b] = yield* Duplex.pair({ capacity: 4096 })
      yield* servingPeer(b)
      const requests = yield* Effect.scoped(
        Effect.gen(function* () {
          const client = yield* Shutdown.client(a, { maxInFlight: 1 })
          const fibers = yield* Effect.forEach([1, 2, 3], (i) =>
            Effect.forkDetach(Effect.exit(client.request(idBytes(i))), { startImmediately: true })
          )
          yield* settle
          return fibers
        })
      )
      yield* settle
      assert.deepStrictEqual(outcomesOf(requests), ["Closed", "NotProcessed", "NotProcessed"])
    })
  )

  it.live("the server's EOF racing close with a request queued ends that request instead of leaving it waiting", () =>
    Effect.gen(function* () {
      const [a, b] = yield* Duplex.pair({ capacity: 4096 })
      const peer = yield* servingPeer(b)
      const client = yield* Shutdown.client(a)
      const request = yield* Effect.forkChild(Effect.exit(client.request(idBytes(7))), { startImmediately: true })
      const closing = yield* Effect.forkChild(Effect.exit(client.close), { startImmediately: true })
      yield* peer.end
      yield* Fiber.join(request).pipe(within("1 second", "the queued request"))
      yield* Fiber.join(closing).pipe(within("1 second", "the close"))
      assert.notInclude(outcomesOf([request]), "answered")
    })
  )

  it.effect("goingAway after the client's half-close still bounds the drain by drainTimeout", () =>
    Effect.gen(function* () {
      const [a, b] = yield* Duplex.pair({ capacity: 16 })
      const served = yield* Shutdown.server(b, {
        handle: (r) => Effect.succeed(r),
        grace: "3 seconds",
        drainTimeout: "20 seconds",
        stallTimeout: "1 minute" // the drain timeout is under test here, not the stall limit
      })
      const peer = yield* askingPeer(a)
      yield* peer.send(Framing.data(idBytes(1)))
      yield* peer.send(Framing.data(idBytes(2))) // two 13-byte answers do not fit in 16 bytes
      yield* peer.end // then it reads nothing
      yield* settle
      yield* served.goingAway
      const done = yield* Effect.forkChild(served.done, { startImmediately: true })
      yield* stepClock(20_000, 1000)
      const error = duplexErrorOf(yield* Fiber.await(done), "done")
      assert.include(error.message, "did not finish")
    })
  )

  it.effect(
    "a client that half-closed is not cut when its last bytes take a moment to be delivered after the grace",
    () =>
      Effect.gen(function* () {
        const [a, inner] = yield* Duplex.pair({ capacity: 4096 })
        // A socket paused by a full buffer takes a moment, once resumed, to deliver bytes already sent.
        const slow = Duplex.make({
          label: "slow delivery",
          readable: inner.readable,
          read: Effect.andThen(Effect.sleep("10 millis"), inner.read),
          write: inner.write,
          end: inner.end,
          abort: inner.abort,
          stats: inner.stats
        })
        const served = yield* Shutdown.server(slow, {
          handle: (r) => Effect.as(Effect.sleep("2 seconds"), r),
          grace: "2015 millis",
          maxPendingBytes: 1
        })
        const peer = yield* askingPeer(a)
        for (const id of [1, 2, 3]) yield* peer.send(Framing.data(idBytes(id)))
        yield* peer.end
        yield* served.goingAway
        const reading = yield* Effect.forkChild(Effect.ignore(Effect.forever(peer.read)), { startImmediately: true })
        const done = yield* Effect.forkChild(Effect.exit(served.done), { startImmediately: true })
        yield* stepClock(8000, 5)
        assert.strictEqual(outcomeOf(yield* Fiber.join(done)), "answered")
        yield* Fiber.interrupt(reading)
      })
  )

  it.effect("when a write breaks the connection, close fails with that cause, not with our own abort", () =>
    Effect.gen(function* () {
      const [a, b] = yield* Duplex.pair({ capacity: 4096 })
      yield* servingPeer(b)
      let writes = 0
      const epipe = new DuplexError.DuplexError({
        reason: new DuplexError.Broken({
          label: "x",
          direction: "outbound",
          operation: "write",
          bytes: 13,
          code: "EPIPE"
        })
      })
      const breaking = Duplex.make({
        label: "x",
        readable: a.readable,
        read: a.read,
        write: (chunk) => (++writes === 1 ? a.write(chunk) : Effect.fail(epipe)),
        end: a.end,
        abort: a.abort,
        stats: a.stats
      })
      const client = yield* Shutdown.client(breaking)
      const first = yield* Effect.forkChild(Effect.exit(client.request(idBytes(1))), { startImmediately: true })
      yield* settle
      const second = yield* Effect.forkChild(Effect.exit(client.request(idBytes(2))), { startImmediately: true })
      yield* settle
      // The first was written and may have been read; of the second no byte left.
      assert.deepStrictEqual(outcomesOf([first, second]), ["Broken", "NotProcessed"])
      assert.strictEqual(outcomeOf(yield* Effect.exit(client.close)), "Broken")
    })
  )

  it.effect("at most maxInFlight requests are out unanswered: the writer waits for answers", () =>
    Effect.gen(function* () {
      const [a, b] = yield* Duplex.pair({ capacity: 65536 })
      const peer = yield* servingPeer(b)
      const client = yield* Shutdown.client(a, { maxInFlight: 4 })
      const requests = yield* Effect.forEach(
        Array.from({ length: 10 }, (_, i) => i),
        (i) => Effect.forkChild(Effect.exit(client.request(idBytes(i))), { startImmediately: true })
      )
      yield* settle
      assert.strictEqual((yield* client.report).sent, 4, "four out, the rest wait")
      for (let i = 0; i < 10; i++) {
        const frame = Option.getOrThrow(yield* peer.read)
        yield* peer.send(Framing.data(frame.payload))
      }
      yield* settle
      assert.deepStrictEqual(outcomesOf(requests), Array(10).fill("answered"))
    })
  )
})

// ---------------------------------------------------------------------------------------------------------
// Issue #20, fault 5: a client that sends and never reads is bounded and cut
// ---------------------------------------------------------------------------------------------------------

/** `count` requests (8-byte ids) as the bytes a framed client would send. */
const requestBytes = (count: number): Uint8Array =>
  concatBytes(Array.from({ length: count }, (_, i) => Framing.encode(Framing.data(idBytes(i)))))

/**
 * A raw `net` client that writes `upload` and never reads: the socket is paused from the start, so the
 * kernel's receive window closes once its buffer is full. `closed` completes with the error code (or
 * `"EOF"`) once the socket has closed; the scope destroys it.
 */
const neverReadingPeer = (address: Tcp.Address, upload: Uint8Array) =>
  Effect.gen(function* () {
    const closed = yield* Deferred.make<string>()
    const socket = yield* Effect.acquireRelease(
      Effect.sync(() => {
        const socket = net.connect({ host: (address as Tcp.TcpAddress).host, port: (address as Tcp.TcpAddress).port })
        let code: string | undefined
        socket.pause()
        socket.on("error", (err: NodeJS.ErrnoException) => {
          code ??= err.code ?? err.message
        })
        socket.on("close", () => Deferred.doneUnsafe(closed, Exit.succeed(code ?? "EOF")))
        socket.once("connect", () => socket.write(upload))
        return socket
      }),
      (socket) => Effect.sync(() => socket.destroy())
    )
    return { socket, closed: Deferred.await(closed) }
  })

/** A handler whose answers are large (64 KiB), so that a client that does not read fills its buffers fast. */
const bigAnswers = () => Effect.succeed(new Uint8Array(64 * 1024))

describe("Shutdown: a client that sends and never reads (issue #20, fault 5)", () => {
  it.effect("the server reads ahead at most maxPendingRequests requests while its answers are blocked", () =>
    Effect.gen(function* () {
      const [a, b] = yield* Duplex.pair({ capacity: 64 })
      const served = yield* Shutdown.server(b, {
        handle: () => Effect.succeed(new Uint8Array(100)),
        maxPendingRequests: 3,
        stallTimeout: "1 minute"
      })
      // 40 requests written (the pair takes them as the server reads), none of their answers read.
      const peer = yield* Framing.make(a)
      const sending = yield* Effect.forkChild(
        Effect.forEach(
          Array.from({ length: 40 }, (_, i) => i),
          (i) => peer.send(Framing.data(idBytes(i)))
        ),
        { startImmediately: true }
      )
      yield* settle
      const readAhead = yield* served.readAhead
      assert.strictEqual(readAhead.peakRequests, 3, "three read ahead, and no more")
      assert.strictEqual(readAhead.peakBytes, 3 * 8)
      assert.isUndefined(sending.pollUnsafe(), "the client is held back: the server stopped reading")
      assert.isTrue((yield* a.stats).outbound.blocked, "by backpressure, not by a buffer")
    })
  )

  it.effect("the server reads ahead while the requests total less than maxPendingBytes", () =>
    Effect.gen(function* () {
      const [a, b] = yield* Duplex.pair({ capacity: 64 })
      const served = yield* Shutdown.server(b, {
        handle: () => Effect.succeed(new Uint8Array(100)),
        maxPendingBytes: 20, // the third 8-byte request reaches it: the last one read
        stallTimeout: "1 minute"
      })
      const peer = yield* Framing.make(a)
      yield* Effect.forkChild(
        Effect.forEach(
          Array.from({ length: 40 }, (_, i) => i),
          (i) => peer.send(Framing.data(idBytes(i)))
        ),
        { startImmediately: true }
      )
      yield* settle
      assert.deepStrictEqual(yield* served.readAhead, { peakRequests: 3, peakBytes: 24 })
    })
  )

  it.effect("an answer that waits stallTimeout for the client to read cuts the connection with StallDetected", () =>
    Effect.gen(function* () {
      const [a, b] = yield* Duplex.pair({ capacity: 64 })
      const served = yield* Shutdown.server(b, {
        handle: () => Effect.succeed(new Uint8Array(100)),
        stallTimeout: "2 seconds"
      })
      const peer = yield* Framing.make(a)
      yield* Effect.forkChild(Effect.ignore(peer.send(Framing.data(idBytes(1)))), { startImmediately: true })
      const done = yield* Effect.forkChild(served.done, { startImmediately: true })
      yield* stepClock(1800, 100)
      assert.isUndefined(done.pollUnsafe(), "not cut before the stall limit")
      yield* stepClock(600, 100)
      const exit = done.pollUnsafe()
      assert.isDefined(exit, "cut once the stall limit has passed")
      const error = duplexErrorOf(exit!, "done")
      assert.strictEqual(error.reason._tag, "StallDetected", error.message)
      assert.include(error.message, "does not read its answers")
      const afterCut = duplexErrorOf(yield* Effect.exit(peer.read), "the peer's read after the cut")
      assert.strictEqual(afterCut.reason._tag, "Broken", "the connection was aborted")
    })
  )

  it.effect("a client that reads its answers, however long the handler takes, is never cut by the stall limit", () =>
    Effect.gen(function* () {
      const [a, b] = yield* Duplex.pair({ capacity: 64 })
      const served = yield* Shutdown.server(b, {
        handle: (r) => Effect.as(Effect.sleep("5 seconds"), r),
        stallTimeout: "1 second"
      })
      const client = yield* Shutdown.client(a)
      const answers = yield* Effect.forkChild(
        Effect.forEach([1, 2, 3], (i) => Effect.map(client.request(idBytes(i)), idOf), { concurrency: 3 }),
        { startImmediately: true }
      )
      yield* stepClock(16_000, 250)
      assert.deepStrictEqual(yield* Fiber.join(answers), [1, 2, 3])
      yield* client.close
      assert.strictEqual((yield* served.done).answered, 3)
    })
  )

  it.effect("bad read-ahead and stall options fail InvalidOptions", () =>
    Effect.gen(function* () {
      const [, b] = yield* Duplex.pair()
      const bads: Array<Partial<Shutdown.ServerOptions<never, never>>> = [
        { maxPendingRequests: 0 },
        { maxPendingRequests: 1.5 },
        { stallTimeout: Duration.zero },
        { stallTimeout: Duration.infinity }
      ]
      for (const bad of bads) {
        const error = duplexErrorOf(
          yield* Effect.exit(Shutdown.server(b, { handle: (r: Uint8Array) => Effect.succeed(r), ...bad }))
        )
        assert.strictEqual(error.reason._tag, "InvalidOptions", JSON.stringify(bad))
      }
    })
  )

  it.live(
    "Shutdown.serve frees a peer that sends many requests and never reads: StallDetected after the stall limit, read-ahead bounded",
    () =>
      Effect.gen(function* () {
        const log = new EventLog()
        const maxPendingRequests = 8
        const server = yield* Shutdown.serve({
          port: 0,
          stallTimeout: "300 millis",
          maxPendingRequests,
          onEvent: log.onEvent,
          handle: bigAnswers
        })
        const peer = yield* neverReadingPeer(server.address, requestBytes(5000))
        const [closed] = yield* log.waitFor("ConnectionClosed", { timeout: "10 seconds" })
        assert.strictEqual(closed!.ending, "failed", log.describe())
        const error = Cause.squash(closed!.cause!) as DuplexError.DuplexError
        assert.strictEqual(error.reason._tag, "StallDetected", log.describe())
        const stall = error.reason as DuplexError.StallDetected
        assert.isAtLeast(stall.stalledMillis, 300)
        assert.isTrue(stall.directions.find((d) => d.direction === "outbound")!.blocked, "the answers were blocked")
        // The bound: what the server read of the 5000 requests while its answers waited.
        const readAhead = yield* server.readAhead
        assert.isAtMost(readAhead.peakRequests, maxPendingRequests, JSON.stringify(readAhead))
        assert.isAtMost(readAhead.peakBytes, maxPendingRequests * 8, JSON.stringify(readAhead))
        // The server destroyed its socket: the peer, reading now, sees the reset.
        peer.socket.resume()
        const end = yield* peer.closed.pipe(within("5 seconds", "the peer's socket after the cut"))
        assert.include(["ECONNRESET", "EOF", "EPIPE"], end)
        assert.deepInclude(yield* server.stats, { failed: 1, active: 0 })
      }),
    20_000
  )

  it.live(
    "200 non-reading peers ended by the stall limit leave no fd or handle behind",
    () =>
      Effect.gen(function* () {
        const log = new EventLog()
        const scope = yield* Scope.make()
        const server = yield* Shutdown.serve({
          port: 0,
          stallTimeout: "300 millis",
          maxPendingRequests: 4,
          onEvent: log.onEvent,
          handle: bigAnswers
        }).pipe(Scope.provide(scope))
        // Counted with the server listening: what each cut connection leaves, not what the server holds.
        const before = resources()
        const upload = requestBytes(1000)
        const batches = 8
        const perBatch = 25
        for (let batch = 0; batch < batches; batch++) {
          yield* Effect.scoped(
            Effect.gen(function* () {
              const peers = yield* Effect.forEach(
                Array.from({ length: perBatch }),
                () => neverReadingPeer(server.address, upload),
                { concurrency: "unbounded" }
              )
              yield* log.waitFor("ConnectionClosed", { count: (batch + 1) * perBatch, timeout: "20 seconds" })
              for (const peer of peers) peer.socket.destroy()
              yield* Effect.forEach(peers, (peer) => peer.closed, { discard: true }).pipe(
                within("5 seconds", "the peers' sockets")
              )
            })
          )
        }
        const closed = log.of("ConnectionClosed")
        assert.strictEqual(closed.length, batches * perBatch)
        const reasons = closed.map((e) =>
          e.cause === undefined ? e.ending : ((Cause.squash(e.cause) as DuplexError.DuplexError).reason?._tag ?? "?")
        )
        assert.deepStrictEqual([...new Set(reasons)], ["StallDetected"], log.describe().slice(0, 2000))
        assert.isAtMost((yield* server.readAhead).peakRequests, 4)
        yield* assertNoLeaks(before, { timeout: "1 second", label: "200 peers cut by the stall limit" })
        yield* Scope.close(scope, Exit.void)
      }).pipe((program) => withLeakCheck(program, { timeout: "1 second", label: "the server and its 200 peers" })),
    60_000
  )
})

// ---------------------------------------------------------------------------------------------------------
// Issue #20, fault 7: the server's preface; connections caught in the listen backlog at shutdown
// ---------------------------------------------------------------------------------------------------------

describe("Shutdown: the server's preface (issue #20, fault 7)", () => {
  it.effect("the client sends nothing before the server's preface, then what was queued", () =>
    Effect.gen(function* () {
      const [a, b] = yield* Duplex.pair({ capacity: 4096 })
      const peer = yield* Framing.make(b)
      const client = yield* Shutdown.client(a)
      const request = yield* Effect.forkChild(Effect.map(client.request(idBytes(7)), idOf), {
        startImmediately: true
      })
      yield* settle
      assert.strictEqual((yield* a.stats).outbound.bytes, 0, "not a byte before the preface")
      yield* peer.send(Framing.control(Shutdown.PREFACE))
      const frame = Option.getOrThrow(yield* peer.read)
      assert.strictEqual(idOf(frame.payload), 7)
      yield* peer.send(Framing.data(frame.payload))
      assert.strictEqual(yield* Fiber.join(request), 7)
    })
  )

  it.effect("the server's first frame is its preface, before the notice even when goingAway comes at once", () =>
    Effect.gen(function* () {
      const [a, b] = yield* Duplex.pair({ capacity: 4096 })
      const served = yield* Shutdown.server(b, { handle: (r) => Effect.succeed(r) })
      yield* served.goingAway
      const peer = yield* Framing.make(a)
      const first = Option.getOrThrow(yield* peer.read)
      assert.deepStrictEqual([first._tag, [...first.payload]], ["Control", [...Shutdown.PREFACE]])
      const second = Option.getOrThrow(yield* peer.read)
      assert.deepStrictEqual([second._tag, [...second.payload]], ["Control", [...Shutdown.GOING_AWAY]])
      yield* peer.end
      assert.strictEqual((yield* served.done).answered, 0)
    })
  )

  it.effect("a connection reset or closed before the preface fails every queued request NotProcessed", () =>
    Effect.gen(function* () {
      for (const end of ["abort", "end"] as const) {
        const [a, b] = yield* Duplex.pair({ capacity: 4096 })
        const client = yield* Shutdown.client(a)
        const requests = yield* Effect.forEach([1, 2, 3, 4], (i) =>
          Effect.forkChild(Effect.exit(client.request(idBytes(i))), { startImmediately: true })
        )
        yield* settle
        yield* end === "abort" ? b.abort : b.end
        yield* settle
        assert.deepStrictEqual(outcomesOf(requests), Array(4).fill("NotProcessed"), end)
        assert.strictEqual((yield* client.report).sent, 0)
        const later = duplexErrorOf(yield* Effect.exit(client.request(idBytes(5))), "a request after the end")
        assert.strictEqual(later.reason._tag === "NotProcessed" && later.reason.why, "connectionLost")
        yield* b.abort
      }
    })
  )

  it.effect(
    "a preface that does not come within prefaceTimeout: the queued requests are NotProcessed, close fails Timeout",
    () =>
      Effect.gen(function* () {
        const [a, b] = yield* Duplex.pair({ capacity: 4096 })
        yield* Framing.make(b) // a peer that never speaks
        const client = yield* Shutdown.client(a, { prefaceTimeout: "3 seconds" })
        const requests = yield* Effect.forEach([1, 2], (i) =>
          Effect.forkChild(Effect.exit(client.request(idBytes(i))), { startImmediately: true })
        )
        yield* TestClock.adjust("2999 millis")
        yield* settle
        assert.deepStrictEqual(outcomesOf(requests), ["pending", "pending"])
        yield* TestClock.adjust("1 millis")
        yield* settle
        assert.deepStrictEqual(outcomesOf(requests), ["NotProcessed", "NotProcessed"])
        const closed = duplexErrorOf(yield* Effect.exit(client.close), "close")
        assert.strictEqual(closed.reason._tag, "Timeout")
        assert.include(closed.message, "preface")
      })
  )

  it.effect("anything but the preface first is a ProtocolError, and nothing is sent", () =>
    Effect.gen(function* () {
      for (const first of [Framing.data(idBytes(1)), Framing.control(Shutdown.GOING_AWAY)]) {
        const [a, b] = yield* Duplex.pair({ capacity: 4096 })
        const peer = yield* Framing.make(b)
        const client = yield* Shutdown.client(a)
        const request = yield* Effect.forkChild(Effect.exit(client.request(idBytes(9))), { startImmediately: true })
        yield* peer.send(first)
        yield* settle
        assert.deepStrictEqual(outcomesOf([request]), ["NotProcessed"], first._tag)
        const error = duplexErrorOf(yield* Effect.exit(client.close))
        assert.strictEqual(error.reason._tag, "ProtocolError")
        assert.include(error.message, "preface")
      }
    })
  )

  it.live(
    "connections the kernel completed but the server had not accepted when shutdown began: every request is answered or NotProcessed",
    () =>
      Effect.gen(function* () {
        // The server runs in a worker thread, so that its event loop can be held (Atomics.wait) while the
        // kernel completes connections into its listen backlog; it starts its shutdown on waking, before
        // its loop accepts any of them, and the kernel resets them as the listener closes.
        const shared = new SharedArrayBuffer(8)
        const flags = new Int32Array(shared) // [0]: 1 = wake up and shut down; [1]: 1 = holding
        const source = `
          import { Effect } from "effect"
          import { Shutdown } from ${JSON.stringify(new URL("../src/index.ts", import.meta.url).href)}
          import { parentPort, workerData } from "node:worker_threads"
          const flags = new Int32Array(workerData)
          Effect.runFork(Effect.scoped(Effect.gen(function* () {
            const server = yield* Shutdown.serve({ port: 0, grace: "2 seconds", backlog: 512, handle: (r) => Effect.succeed(r), onEvent: () => Effect.void })
            parentPort.once("message", () => {
              Atomics.store(flags, 1, 1)
              Atomics.wait(flags, 0, 0) // no accept while this thread waits
              // Woken: shut down at once, before the loop polls the listener again.
              Effect.runPromise(server.shutdown).then(() => Effect.runPromise(server.stats)).then((stats) => parentPort.postMessage({ stats }))
            })
            parentPort.postMessage({ port: server.address.port })
            return yield* Effect.never
          })))`
        const worker = yield* Effect.acquireRelease(
          Effect.sync(() => new Worker(source, { eval: true, workerData: shared, execArgv: ["--import", "tsx"] })),
          (w) =>
            Effect.andThen(
              Effect.sync(() => {
                Atomics.store(flags, 0, 1)
                Atomics.notify(flags, 0)
              }),
              Effect.promise(() => w.terminate())
            )
        )
        const messages = yield* Queue.unbounded<{ port?: number; stats?: Tcp.ServerStats }>()
        worker.on("message", (m) => Queue.offerUnsafe(messages, m))
        worker.on("error", (e) => Queue.offerUnsafe(messages, { stats: { error: String(e) } as never }))
        const { port } = yield* Queue.take(messages).pipe(within("20 seconds", "the worker's server"))
        const address = { host: "127.0.0.1", port: port! }

        // Some connections accepted and busy before the hold: they get the notice and drain.
        const early = yield* Effect.forEach(Array.from({ length: 4 }), () =>
          Effect.gen(function* () {
            const ledger = new Ledger()
            const client = yield* Shutdown.client(yield* Tcp.connect(address))
            yield* client.request(idBytes(0)).pipe(within("5 seconds", "a first answer"))
            ledger.issued++
            ledger.answered.add(0)
            const callers = yield* Effect.forkScoped(
              Effect.all(
                Array.from({ length: 4 }, () => ledger.caller(client)),
                { concurrency: "unbounded" }
              ),
              { startImmediately: true }
            )
            return { ledger, callers }
          })
        )

        worker.postMessage("hold")
        yield* Effect.gen(function* () {
          while (Atomics.load(flags, 1) === 0) yield* Effect.sleep(2)
        }).pipe(within("5 seconds", "the worker holding its event loop"))

        // 100 connections into the backlog, each with four request fibers, as in the issue.
        const caught = 100
        const late = yield* Effect.forEach(
          Array.from({ length: caught }),
          () =>
            Effect.gen(function* () {
              const ledger = new Ledger()
              const client = yield* Shutdown.client(yield* Tcp.connect(address))
              const callers = yield* Effect.forkScoped(
                Effect.all(
                  Array.from({ length: 4 }, () => ledger.caller(client)),
                  { concurrency: "unbounded" }
                ),
                { startImmediately: true }
              )
              return { ledger, callers }
            }),
          { concurrency: "unbounded" }
        ).pipe(within("10 seconds", "connecting into the backlog"))
        yield* Effect.sleep(50) // time enough for a client that did not wait for the preface to send

        Atomics.store(flags, 0, 1)
        Atomics.notify(flags, 0)
        for (const { callers } of [...early, ...late]) {
          yield* Fiber.join(callers).pipe(within("10 seconds", "the callers after the shutdown"))
        }
        const { stats } = yield* Queue.take(messages).pipe(within("10 seconds", "the worker's shutdown"))
        early.forEach(({ ledger }, i) => ledger.check(`accepted client ${i}`))
        late.forEach(({ ledger }, i) => ledger.check(`client ${i} caught in the backlog`))
        assert.strictEqual(stats!.accepted, early.length, `only the early ones were accepted: ${JSON.stringify(stats)}`)
        const lateRequests = late.reduce((n, { ledger }) => n + ledger.issued, 0)
        assert.strictEqual(
          late.reduce((n, { ledger }) => n + ledger.notProcessed.size, 0),
          lateRequests,
          "every request on a connection reset before the preface is NotProcessed"
        )
        assert.isAtLeast(lateRequests, caught * 4)
      }),
    60_000
  )
})
