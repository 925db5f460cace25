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
