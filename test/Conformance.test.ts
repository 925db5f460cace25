import { describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { Duplex, Subprocess } from "fullduplex"
import { conformance } from "fullduplex/testkit"
import { loopbackSockets, servedPair, tempDir } from "./helpers.js"

/** Two ends of one TCP connection on 127.0.0.1, each wrapped by `fromNodeDuplex`. */
const socketPair = (highWaterMark: number) =>
  Effect.gen(function* () {
    const [client, accepted] = yield* loopbackSockets
    const a = yield* Duplex.fromNodeDuplex(client, { highWaterMark, label: "client" })
    const b = yield* Duplex.fromNodeDuplex(accepted, { highWaterMark, label: "server" })
    return [a, b] as const
  })

/**
 * Two `cat` children cross-wired into a connected pair: `a` writes into the first cat and reads the second;
 * `b` writes into the second and reads the first. Every byte between `a` and `b` goes through a process
 * and both of its pipes. Each side's `abort` aborts both of its subprocesses, its outbound and its inbound.
 */
const crossWiredCats = (highWaterMark: number) =>
  Effect.gen(function* () {
    const options = { highWaterMark, stdinGrace: "100 millis", killGrace: "100 millis" } as const
    const aToB = yield* Subprocess.spawn("cat", [], { ...options, label: "cat a→b" })
    const bToA = yield* Subprocess.spawn("cat", [], { ...options, label: "cat b→a" })
    const side = (label: string, out: Subprocess.Subprocess, into: Subprocess.Subprocess) =>
      Duplex.make({
        label,
        readable: into.readable,
        read: into.read,
        write: out.write,
        writeAll: out.writeAll,
        end: out.end,
        abort: Effect.andThen(out.abort, into.abort),
        stats: Effect.zipWith(out.stats, into.stats, (o, i) => ({ outbound: o.outbound, inbound: i.inbound }))
      })
    return [side("a", aToB, bToA), side("b", bToA, aToB)] as const
  })

describe("conformance", () => {
  describe("memory pair, 4 KiB", () => {
    for (const c of conformance("memory 4KiB", Duplex.pair({ capacity: 4096 }), { bufferBound: 4096 })) {
      it.live(c.name, () => c.run)
    }
  })

  describe("memory pair, lockstep (capacity 0)", () => {
    for (const c of conformance("memory 0B", Duplex.pair({ capacity: 0 }), { bufferBound: 0 })) {
      it.live(c.name, () => c.run)
    }
  })

  describe("fromNodeDuplex over a TCP socket pair on 127.0.0.1", () => {
    // Inbound: highWaterMark plus the one chunk that crossed it (≤ 64 KiB from a socket read); outbound:
    // Node's writableHighWaterMark (64 KiB) plus one piece of at most highWaterMark.
    const hwm = 16 * 1024
    for (const c of conformance("tcp", socketPair(hwm), { bufferBound: 64 * 1024 + hwm })) {
      it.live(c.name, () => c.run)
    }
  })

  describe("Tcp.serve + Tcp.connect on 127.0.0.1", () => {
    // The same bounds as the fromNodeDuplex block: both ends are fromNodeDuplex adapters underneath.
    const hwm = 16 * 1024
    for (const c of conformance("tcp served", servedPair({ highWaterMark: hwm }), { bufferBound: 64 * 1024 + hwm })) {
      it.live(c.name, () => c.run)
    }
  })

  describe("Tcp.serve + Tcp.connect over a Unix domain socket", () => {
    const hwm = 16 * 1024
    const unixPair = Effect.flatMap(tempDir, (dir) => servedPair({ highWaterMark: hwm, path: `${dir}/conn.sock` }))
    for (const c of conformance("unix served", unixPair, { bufferBound: 64 * 1024 + hwm })) {
      // A Unix stream socket has no RST: `abort` can only close it, and a peer with nothing unread sees a
      // clean EOF, not `Broken`. Marked as an expected failure so that the gap stays visible (and this
      // turns red, to be promoted, if the adapter ever signals an abort over a Unix socket).
      if (c.name.startsWith("abort fails the peer's blocked read")) it.live.fails(c.name, () => c.run)
      else it.live(c.name, () => c.run)
    }
  })

  describe("two cat subprocesses cross-wired", () => {
    // The same bounds as the socket blocks: the child's stdout is read through the same adapter, and
    // Node's writable high-water mark on the child's stdin is 64 KiB.
    const hwm = 16 * 1024
    for (const c of conformance("cat", crossWiredCats(hwm), { bufferBound: 64 * 1024 + hwm })) {
      // A side's abort can only abort the two subprocesses it is made of, and each of those is also half of
      // the other side: the peer's pending read or write is then failed by that subprocess's own abort, as
      // Closed, where the case wants the Broken of a peer that went away. Nor would killing the cats alone
      // do: a killed cat's stdout just ends, and its reader sees a clean EOF. Marked as expected failures so that
      // the gap stays visible. "closing the scope wakes and fails everything pending" is not marked: it fails
      // because of Subprocess itself (a read pending at the scope's close sees the clean EOF of the child's
      // graceful termination instead of Closed; see Subprocess.test.ts), and must pass once that is fixed.
      if (c.name.startsWith("abort fails the peer's blocked read") || c.name.startsWith("abort wakes the peer's"))
        it.live.fails(c.name, () => c.run)
      else it.live(c.name, () => c.run)
    }
  })
})
