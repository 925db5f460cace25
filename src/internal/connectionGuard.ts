/**
 * The time limits of a server's connections, kept by one sweep per server instead of a timer per
 * connection.
 *
 * Every tick reads each watched socket's counters (`bytesRead`, `bytesWritten`, `writableLength`: plain
 * properties, no syscall) and compares them with what it saw before:
 *
 * - **idle**: neither counter moved for `idleMillis`;
 * - **send**: bytes wait to be written (`writableLength > 0`) and not one more of them reached the kernel
 *   for `sendMillis` (a peer that does not read, while the server may still be reading);
 * - **rate**: in a window of `windowMillis` fewer than `minBytes` moved either way (reads plus completed
 *   writes): a peer that trickles, a byte now and then, which keeps the idle limit from ever firing;
 * - **stall**: both directions held back for `stallMillis` — reads paused (the handler takes no more) and
 *   a pending write that the kernel takes not one byte of: the two-way stall `Watchdog` reports, found
 *   without a fiber or a timer of the connection's own.
 *
 * A verdict is handed to the connection's callback once, and the socket is no longer watched. The sweep's
 * timer runs only while something is watched, and never keeps the process alive.
 *
 * @internal
 */
import type * as net from "node:net"

/** @internal */
export interface GuardLimits {
  /** 0 or `Infinity`: off. */
  readonly idleMillis: number
  /** 0 or `Infinity`: off. */
  readonly sendMillis: number
  /** 0: off. */
  readonly minBytes: number
  readonly windowMillis: number
  /** 0 or `Infinity`: off. */
  readonly stallMillis: number
}

/** Why a connection was cut, with what it had moved. @internal */
export type Verdict =
  | { readonly _tag: "idle"; readonly millis: number }
  | { readonly _tag: "stall"; readonly millis: number }
  | {
      readonly _tag: "send"
      readonly millis: number
      /** Bytes the kernel took (written), and bytes still waiting behind the peer that does not read. */
      readonly written: number
      readonly waiting: number
    }
  | {
      readonly _tag: "rate"
      readonly windowMillis: number
      readonly minBytes: number
      /** Bytes moved in the window that failed, and since the connection started. */
      readonly moved: number
      readonly read: number
      readonly written: number
    }

/** Told the verdict on its connection, once. @internal */
export interface GuardTarget {
  onVerdict(verdict: Verdict): void
}

/** A watched socket (opaque to the caller, who hands it back to stop watching). @internal */
export interface Watched {
  readonly socket: net.Socket
  readonly target: GuardTarget
  /** Counters at the last change, and when that was. */
  read: number
  queued: number
  activeAt: number
  /** Bytes handed to the kernel (written minus still buffered) at the last progress of a pending write. */
  written: number
  /** libuv's count of bytes it holds, not yet taken by the kernel (`-1` if unknown). */
  unsent: number
  writeProgressAt: number
  /** Since when both directions have been held back, if they are. */
  stalledSince: number | undefined
  /** Where the current rate window started, and the bytes moved by then. */
  windowAt: number
  windowBase: number
}

/**
 * The bytes of the socket's pending writes that libuv still holds: `writeQueueSize` of its handle, which
 * Node itself reads (undocumented, so read defensively: `-1` when it is not there).
 */
const unsentOf = (socket: net.Socket): number => {
  const size = (socket as unknown as { readonly _handle?: { readonly writeQueueSize?: unknown } | null })._handle
    ?.writeQueueSize
  return typeof size === "number" ? size : -1
}

const isOn = (millis: number): boolean => millis > 0 && Number.isFinite(millis)

/** @internal */
export interface ConnectionGuard {
  /** Watches a socket from now on; `undefined` when no limit is on. */
  readonly watch: (socket: net.Socket, target: GuardTarget) => Watched | undefined
  /** Stops watching (idempotent). */
  readonly unwatch: (entry: Watched) => void
  /** Stops the sweep and forgets every socket. */
  readonly close: () => void
}

/** @internal */
export const make = (limits: GuardLimits): ConnectionGuard => {
  const idleOn = isOn(limits.idleMillis)
  const sendOn = isOn(limits.sendMillis)
  const rateOn = limits.minBytes > 0 && isOn(limits.windowMillis)
  const stallOn = isOn(limits.stallMillis)
  // A tenth of the shortest limit that is on, from 10 ms to 1 s.
  const shortest = Math.min(
    idleOn ? limits.idleMillis : Infinity,
    sendOn ? limits.sendMillis : Infinity,
    rateOn ? limits.windowMillis : Infinity,
    stallOn ? limits.stallMillis : Infinity
  )
  const period = Math.min(1000, Math.max(10, Math.floor(shortest / 10)))
  const watched = new Set<Watched>()
  let timer: ReturnType<typeof setInterval> | undefined

  const judge = (entry: Watched, now: number): Verdict | undefined => {
    const socket = entry.socket
    const read = socket.bytesRead
    const queued = socket.bytesWritten
    const waiting = socket.writableLength
    const written = queued - waiting
    if (read !== entry.read || queued !== entry.queued) {
      entry.read = read
      entry.queued = queued
      entry.activeAt = now
    } else if (idleOn && now - entry.activeAt >= limits.idleMillis) {
      return { _tag: "idle", millis: limits.idleMillis }
    }
    // Node counts a write done only once the kernel took all of it; libuv's queue shrinks with every
    // partial write, so a peer that reads slowly (its window opening a little at a time) is progress.
    const unsent = unsentOf(socket)
    if (waiting === 0 || written !== entry.written || unsent !== entry.unsent) {
      entry.written = written
      entry.unsent = unsent
      entry.writeProgressAt = now
    }
    if (stallOn) {
      if (waiting === 0 || !socket.isPaused()) entry.stalledSince = undefined
      else {
        entry.stalledSince ??= now
        const stalledFor = now - Math.max(entry.stalledSince, entry.writeProgressAt)
        if (stalledFor >= limits.stallMillis) return { _tag: "stall", millis: stalledFor }
      }
    }
    if (sendOn && waiting > 0 && now - entry.writeProgressAt >= limits.sendMillis) {
      return { _tag: "send", millis: limits.sendMillis, written, waiting }
    }
    if (rateOn && now - entry.windowAt >= limits.windowMillis) {
      const total = read + written
      const moved = total - entry.windowBase
      if (moved < limits.minBytes) {
        return {
          _tag: "rate",
          windowMillis: limits.windowMillis,
          minBytes: limits.minBytes,
          moved,
          read,
          written
        }
      }
      entry.windowAt = now
      entry.windowBase = total
    }
    return undefined
  }

  const sweep = () => {
    const now = Date.now()
    for (const entry of watched) {
      const verdict = judge(entry, now)
      if (verdict === undefined) continue
      forget(entry)
      entry.target.onVerdict(verdict)
    }
  }

  const forget = (entry: Watched) => {
    watched.delete(entry)
    if (watched.size === 0 && timer !== undefined) {
      clearInterval(timer)
      timer = undefined
    }
  }

  return {
    watch: (socket, target) => {
      if (!idleOn && !sendOn && !rateOn && !stallOn) return undefined
      const now = Date.now()
      const entry: Watched = {
        socket,
        target,
        read: socket.bytesRead,
        queued: socket.bytesWritten,
        activeAt: now,
        written: socket.bytesWritten - socket.writableLength,
        unsent: unsentOf(socket),
        writeProgressAt: now,
        stalledSince: undefined,
        windowAt: now,
        windowBase: socket.bytesRead + socket.bytesWritten - socket.writableLength
      }
      watched.add(entry)
      if (timer === undefined) {
        timer = setInterval(sweep, period)
        timer.unref()
      }
      return entry
    },
    unwatch: forget,
    close: () => {
      watched.clear()
      if (timer !== undefined) clearInterval(timer)
      timer = undefined
    }
  }
}
