/**
 * Mux over real TCP connections: every way a session ends gives back its socket. Hundreds of sessions end
 * each way — frames with random mutations, a protocol error against a peer that never reads, a keepalive
 * timeout, a graceful close, an interruption at a random point — and the testkit's leak check counts the
 * process's fds and handles after them.
 *
 * Seeds: `FC_SEED` if set, else a fresh one, shown in the `describe` title; replay with `FC_SEED=<seed>`.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Option, Scope } from "effect"
import { Duplex, Mux, Tcp } from "fullduplex"
import { assertNoLeaks, concatBytes, prng, resources, withLeakCheck } from "fullduplex/testkit"
import * as net from "node:net"
import { encodeHeader } from "../src/internal/yamux/codec.js"
import { within } from "./helpers.js"

const seed = Number(process.env["FC_SEED"] || Math.floor(Math.random() * 2 ** 31))

const DATA = 0
const WINDOW_UPDATE = 1
const PING = 2
const SYN = 0x1
const FIN = 0x4

const frame = (type: number, flags: number, id: number, body: number | Uint8Array = 0): Uint8Array =>
  typeof body === "number"
    ? encodeHeader(type, flags, id, body)
    : concatBytes([encodeHeader(type, flags, id, body.length), body])

/**
 * A bounded `it.live`: a hang fails naming the test. The body starts a step after the bound's timer, so
 * that the leak checks inside it count that timer as already there.
 */
const live = (name: string, body: () => Effect.Effect<unknown, unknown, Scope.Scope>, seconds = 60) =>
  it.live(
    name,
    () =>
      Effect.scoped(Effect.andThen(Effect.yieldNow, Effect.suspend(body))).pipe(
        within(`${seconds} seconds`, `"${name}"`)
      ),
    (seconds + 10) * 1000
  )

/**
 * A server whose handler runs a mux session that echoes every stream it accepts, and returns when the
 * session ends, however it ends (the handler that once leaked: it succeeds after a failed session).
 */
const muxEchoServer = (options: Omit<Mux.SessionOptions, "role"> = {}) =>
  Tcp.serve({ port: 0, onEvent: () => Effect.void, shutdownGrace: 0 }, (conn) =>
    Effect.gen(function* () {
      const session = yield* Mux.server(conn, { keepAliveInterval: 0, ...options })
      yield* Effect.forkScoped(
        Effect.ignore(
          Effect.forever(
            Effect.flatMap(session.accept, (stream) =>
              Effect.forkScoped(
                Effect.ignore(
                  Effect.forever(
                    Effect.flatMap(stream.read, (chunk) =>
                      Option.isSome(chunk) ? stream.write(chunk.value) : Effect.andThen(stream.end, Effect.never)
                    )
                  )
                )
              )
            )
          )
        )
      )
      yield* Effect.exit(session.closed)
    })
  )

/** A seeded generator of numbers in [0, 1). */
const unit = (s: number): (() => number) => {
  const next = prng(s)
  return () => next() / 2 ** 32
}

const portOf = (server: Tcp.Server): number => (server.address as Tcp.TcpAddress).port

/**
 * A raw peer: connects, writes `bytes`, half-closes after `endAfterMillis` (never, if undefined), reads
 * everything (unless `reads` is false), and resolves when the socket closes, or destroys it after 5 s.
 */
const rawSession = (
  port: number,
  bytes: Uint8Array,
  options: { readonly reads?: boolean; readonly endAfterMillis?: number | undefined } = {}
): Effect.Effect<"closed" | "timedOut"> =>
  Effect.callback<"closed" | "timedOut">((resume) => {
    const socket = net.connect({ port, host: "127.0.0.1", allowHalfOpen: true })
    // A peer that does not read learns of the server's reset only from a write: it probes with pings.
    let probe: ReturnType<typeof setInterval> | undefined
    if (options.reads === false) {
      socket.pause()
      probe = setInterval(() => socket.write(frame(PING, SYN, 0, 1)), 20)
    } else socket.on("data", () => {})
    socket.on("error", () => {})
    const giveUp = setTimeout(() => {
      clearInterval(probe)
      socket.destroy()
      resume(Effect.succeed("timedOut"))
    }, 5000)
    const ender =
      options.endAfterMillis === undefined ? undefined : setTimeout(() => socket.end(), options.endAfterMillis)
    socket.on("close", () => {
      clearInterval(probe)
      clearTimeout(giveUp)
      if (ender !== undefined) clearTimeout(ender)
      resume(Effect.succeed("closed"))
    })
    socket.write(bytes)
    return Effect.sync(() => {
      clearInterval(probe)
      clearTimeout(giveUp)
      if (ender !== undefined) clearTimeout(ender)
      socket.destroy()
    })
  })

/** A valid conversation: streams opened with data, some finished, a ping. */
const conversation = (random: () => number): Array<Uint8Array> => {
  const frames: Array<Uint8Array> = []
  for (let id = 1; id < 12; id += 2) {
    frames.push(frame(WINDOW_UPDATE, SYN, id), frame(DATA, 0, id, new Uint8Array(Math.floor(random() * 2000))))
    if (random() < 0.5) frames.push(frame(WINDOW_UPDATE, FIN, id))
  }
  frames.push(frame(PING, SYN, 0, 7))
  return frames
}

/** The conversation with one to three bytes set at random. */
const mutated = (random: () => number): Uint8Array => {
  const bytes = concatBytes(conversation(random))
  const n = 1 + Math.floor(random() * 3)
  for (let i = 0; i < n; i++) bytes[Math.floor(random() * bytes.length)] = Math.floor(random() * 256)
  return bytes
}

describe(`Mux sessions give back their sockets (seed ${seed})`, () => {
  live("300 sessions of frames with random mutations, the peer reading and half-closing: no fd left", () =>
    Effect.gen(function* () {
      const random = unit(seed)
      const before = resources()
      const outcomes = yield* Effect.scoped(
        Effect.gen(function* () {
          const server = yield* muxEchoServer()
          return yield* Effect.forEach(
            Array.from({ length: 300 }, () => mutated(random)),
            (bytes) => rawSession(portOf(server), bytes, { endAfterMillis: 20 }),
            { concurrency: 30 }
          )
        })
      )
      yield* assertNoLeaks(before, { label: `300 mutated sessions (seed ${seed})` })
      // The server ended every one of them (the peer never closes first).
      assert.strictEqual(outcomes.filter((o) => o === "timedOut").length, 0)
    })
  )

  live("the server's sockets are freed while it still runs, not only when it stops", () =>
    Effect.gen(function* () {
      const random = unit(seed + 1)
      const server = yield* muxEchoServer()
      const before = resources()
      yield* Effect.forEach(
        Array.from({ length: 200 }, () => mutated(random)),
        (bytes) => rawSession(portOf(server), bytes, { endAfterMillis: 20 }),
        { concurrency: 20 }
      )
      yield* assertNoLeaks(before, { label: `200 mutated sessions, server still up (seed ${seed})` })
    })
  )

  live("a protocol error against a peer that never reads: the socket is destroyed by errorCloseTimeout", () =>
    Effect.gen(function* () {
      const server = yield* muxEchoServer({ errorCloseTimeout: "200 millis" })
      const before = resources()
      // A stream whose echo fills the connection (the peer reads nothing), then Data past its window.
      const window = new Uint8Array(Mux.INITIAL_STREAM_WINDOW_BYTES)
      const overrun = concatBytes([
        frame(WINDOW_UPDATE, SYN, 1),
        frame(DATA, 0, 1, window),
        frame(DATA, 0, 1, window),
        frame(DATA, 0, 1, window),
        frame(DATA, 0, 1, window)
      ])
      const outcomes = yield* Effect.forEach(
        Array.from({ length: 50 }),
        () => rawSession(portOf(server), overrun, { reads: false }),
        { concurrency: 25 }
      )
      assert.strictEqual(
        outcomes.filter((o) => o === "timedOut").length,
        0,
        "every non-reading peer was cut off by the server"
      )
      yield* assertNoLeaks(before, { label: "50 protocol errors against non-reading peers" })
    })
  )

  live("a peer that stops answering pings is ended by the keepalive timeout, its socket destroyed", () =>
    Effect.gen(function* () {
      const server = yield* muxEchoServer({
        keepAliveInterval: "50 millis",
        keepAliveTimeout: "100 millis",
        errorCloseTimeout: "100 millis"
      })
      const before = resources()
      const outcomes = yield* Effect.forEach(
        Array.from({ length: 50 }),
        () => rawSession(portOf(server), frame(WINDOW_UPDATE, SYN, 1), { reads: false }),
        { concurrency: 50 }
      )
      assert.strictEqual(outcomes.filter((o) => o === "timedOut").length, 0)
      yield* assertNoLeaks(before, { label: "50 keepalive timeouts" })
    })
  )

  live("200 client sessions over Tcp.connect, closed gracefully or interrupted at a random point: no fd left", () =>
    Effect.gen(function* () {
      const random = unit(seed + 2)
      const server = yield* muxEchoServer()
      const payload = new Uint8Array(64 * 1024).fill(7)
      const one = (graceful: boolean, interruptAfterMillis: number) =>
        Effect.scoped(
          Effect.gen(function* () {
            const conn = yield* Tcp.connect({ host: "127.0.0.1", port: portOf(server) })
            const session = yield* Mux.client(conn, { keepAliveInterval: 0 })
            const work = Effect.scoped(
              Effect.gen(function* () {
                const streams = yield* Effect.forEach([1, 2, 3], () => session.open)
                yield* Effect.forEach(
                  streams,
                  (s) =>
                    Effect.gen(function* () {
                      yield* s.write(payload)
                      yield* s.end
                      let got = 0
                      for (;;) {
                        const chunk = yield* s.read
                        if (Option.isNone(chunk)) break
                        got += chunk.value.length
                      }
                      assert.strictEqual(got, payload.length)
                    }),
                  { concurrency: "unbounded" }
                )
                if (graceful) yield* session.close
              })
            )
            if (graceful) return yield* work
            const fiber = yield* Effect.forkChild(work)
            yield* Effect.sleep(interruptAfterMillis)
            yield* Fiber.interrupt(fiber)
          })
        )
      const exits = yield* withLeakCheck(
        Effect.forEach(
          Array.from({ length: 200 }, () => ({ graceful: random() < 0.5, after: Math.floor(random() * 8) })),
          ({ graceful, after }) => Effect.exit(one(graceful, after)),
          { concurrency: 10 }
        ),
        { label: `200 client sessions (seed ${seed})` }
      )
      const failed = exits.filter(Exit.isFailure)
      assert.strictEqual(failed.length, 0, failed.map(String).slice(0, 3).join("\n"))
    })
  )

  live("sessions over a Duplex.pair end without a timer or fiber left behind", () =>
    withLeakCheck(
      Effect.forEach(
        Array.from({ length: 200 }, (_, i) => i),
        (i) =>
          Effect.scoped(
            Effect.gen(function* () {
              const [a, b] = yield* Duplex.pair()
              const client = yield* Mux.client(a, { keepAliveInterval: "1 second" })
              const server = yield* Mux.server(b, { keepAliveInterval: "1 second" })
              const s = yield* client.open
              yield* s.write(Uint8Array.of(i & 0xff))
              const t = yield* server.accept
              yield* t.read
              if (i % 2 === 0) yield* s.abort
            })
          ),
        { concurrency: 20 }
      ),
      { label: "200 sessions over pairs" }
    )
  )
})
