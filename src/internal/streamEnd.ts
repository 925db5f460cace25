/**
 * When one side of a Node stream ends: `stream.finished` for one side, made cheap for the common case.
 *
 * `finished` is general: it listens for many events and checks much state, and was the largest single
 * allocation of a short connection (about 2 KB for the adapter's two calls). A socket that is neither
 * destroyed, nor errored, nor past the side's end yet (every connection the adapter takes over) needs
 * three listeners: the side's end (`'end'` or `'finish'`), `'error'`, and a `'close'` before that end (a
 * premature close, an error as `finished` reports it). Any other stream or state goes to `finished`.
 *
 * @internal
 */
import * as net from "node:net"
import { finished } from "node:stream"
import type * as NodeStream from "node:stream"

const prematureClose = (): Error => Object.assign(new Error("Premature close"), { code: "ERR_STREAM_PREMATURE_CLOSE" })

/**
 * Calls `callback` once, when the `side` of `stream` has ended (no argument) or failed (the error); the
 * function returned stops watching.
 *
 * @internal
 */
export const onSideEnd = (
  stream: NodeStream.Readable | NodeStream.Writable,
  side: "readable" | "writable",
  callback: (err?: Error) => void
): (() => void) => {
  const socket = stream as net.Socket
  const fresh =
    stream instanceof net.Socket &&
    !socket.destroyed &&
    socket.errored == null &&
    (side === "readable" ? !socket.readableEnded : !socket.writableFinished)
  if (!fresh) {
    return finished(stream, side === "readable" ? { writable: false } : { readable: false }, (err) =>
      callback(err ?? undefined)
    )
  }
  const endEvent = side === "readable" ? "end" : "finish"
  let settled = false
  const stop = () => {
    socket.off(endEvent, onEnd)
    socket.off("error", onError)
    socket.off("close", onClose)
  }
  const settle = (err?: Error) => {
    if (settled) return
    settled = true
    stop()
    callback(err)
  }
  const onEnd = () => settle()
  const onError = (err: Error) => settle(err)
  const onClose = () =>
    settle(
      (side === "readable" ? socket.readableEnded : socket.writableFinished)
        ? undefined
        : (socket.errored ?? prematureClose())
    )
  socket.on(endEvent, onEnd)
  socket.on("error", onError)
  socket.on("close", onClose)
  return stop
}

/** What {@link watchSideEnd} calls, once: the side ended (no error) or failed. @internal */
export interface SideEndTarget {
  sideEnded(err: Error | undefined): void
}

const TARGET = { readable: Symbol("fullduplex/readableEnd"), writable: Symbol("fullduplex/writableEnd") } as const

type Watched = net.Socket & {
  [TARGET.readable]?: SideEndTarget | undefined
  [TARGET.writable]?: SideEndTarget | undefined
}

const settleSide = (socket: Watched, side: "readable" | "writable", err: Error | undefined): void => {
  const target = socket[TARGET[side]]
  if (target === undefined) return
  stopSide(socket, side)
  target.sideEnded(err)
}

const stopSide = (socket: Watched, side: "readable" | "writable"): void => {
  if (socket[TARGET[side]] === undefined) return
  socket[TARGET[side]] = undefined
  const listeners = LISTENERS[side]
  socket.off(side === "readable" ? "end" : "finish", listeners.end)
  socket.off("error", listeners.error)
  socket.off("close", listeners.close)
}

// Shared by every socket watched: Node calls a listener with the emitter as `this`, and the target is
// found on it, so a watch makes no closure.
const LISTENERS = {
  readable: {
    end(this: Watched) {
      settleSide(this, "readable", undefined)
    },
    error(this: Watched, err: Error) {
      settleSide(this, "readable", err)
    },
    close(this: Watched) {
      settleSide(this, "readable", this.readableEnded ? undefined : (this.errored ?? prematureClose()))
    }
  },
  writable: {
    end(this: Watched) {
      settleSide(this, "writable", undefined)
    },
    error(this: Watched, err: Error) {
      settleSide(this, "writable", err)
    },
    close(this: Watched) {
      settleSide(this, "writable", this.writableFinished ? undefined : (this.errored ?? prematureClose()))
    }
  }
} as const

/**
 * {@link onSideEnd} for an owner object instead of a callback: on a socket in the common state it adds
 * the same three listeners, shared by every socket, and keeps `target` on the socket itself (one target
 * per side and socket). Any other stream or state goes to `finished`, through a closure. The function
 * returned stops watching; for a socket it is shared too.
 *
 * @internal
 */
export const watchSideEnd = (
  stream: NodeStream.Readable | NodeStream.Writable,
  side: "readable" | "writable",
  target: SideEndTarget
): (() => void) | Stopper => {
  const socket = stream as Watched
  const fresh =
    stream instanceof net.Socket &&
    !socket.destroyed &&
    socket.errored == null &&
    socket[TARGET[side]] === undefined &&
    (side === "readable" ? !socket.readableEnded : !socket.writableFinished)
  if (!fresh) return onSideEnd(stream, side, (err) => target.sideEnded(err))
  socket[TARGET[side]] = target
  const listeners = LISTENERS[side]
  socket.on(side === "readable" ? "end" : "finish", listeners.end)
  socket.on("error", listeners.error)
  socket.on("close", listeners.close)
  return side === "readable" ? STOP_READABLE : STOP_WRITABLE
}

/** How {@link watchSideEnd} stops watching a socket: shared by every socket, given the socket. @internal */
export interface Stopper {
  readonly stopSide: "readable" | "writable"
}
const STOP_READABLE: Stopper = { stopSide: "readable" }
const STOP_WRITABLE: Stopper = { stopSide: "writable" }

/** Stops what {@link watchSideEnd} returned `stop` for. @internal */
export const stopWatching = (stream: NodeStream.Readable | NodeStream.Writable, stop: (() => void) | Stopper): void => {
  if (typeof stop === "function") stop()
  else stopSide(stream as Watched, stop.stopSide)
}
