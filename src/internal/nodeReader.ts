/**
 * The inbound side of a duplex over a Node `Readable`: its bytes go into a {@link BytePipe}.
 *
 * `'data'` events feed the pipe as a push source; a full pipe (or a consumer that holds deliveries back)
 * pauses the stream, and the room a read makes resumes it. Each of those chunks is a buffer Node allocated
 * for that one read.
 *
 * **Reused read buffers.** While a consumer that takes *lent* bytes is attached (a pump, which hands each
 * chunk to its destination in the step that delivers it), a socket moving bulk data (a chunk of
 * {@link LEND_AFTER_BYTES} or more) is switched to reading into a buffer of its own that is reused for
 * every read: Node's `onread` mode (`new net.Socket({ onread })`), entered on a socket that exists already.
 * A read then allocates nothing, where Node's own reads allocate a buffer each; in a process that has
 * loaded Effect those buffers are reclaimed by full collections (the young generation has grown while the
 * modules loaded, so 64 MiB of read buffers outrun it and trigger the external-memory limit), which cost
 * more than the copy itself. When the destination keeps the bytes (a write the kernel did not take at
 * once), the next read goes into a new buffer. A chunk nobody takes in place is copied into the pipe.
 *
 * The switch uses Node's own fields for `onread` (found by their symbol descriptions on a socket) and
 * `useUserBuffer` on the socket's handle; where they are not there (another runtime, a stream that is not
 * a TCP or pipe socket) the stream stays on `'data'` events.
 *
 * @internal
 */
import * as net from "node:net"
import type * as NodeStream from "node:stream"
import { type BrokenCause, BytePipe, KEPT, PAUSE, type RoomListener } from "./bytePipe.js"
import { codeOf } from "./errors.js"
import { type SideEndTarget, type Stopper, stopWatching, watchSideEnd } from "./streamEnd.js"

/** A `'data'` chunk at least this large, while a pump is attached, switches the socket to a reused buffer. */
export const LEND_AFTER_BYTES = 16 * 1024

/** The reused read buffer: the size of Node's own reads (libuv's 64 KiB). */
const READ_BUFFER_BYTES = 64 * 1024

/** After a read this small the next one goes into a small buffer, so an idle socket holds little. */
const SMALL_READ_BUFFER_BYTES = 2 * 1024

const causeOf = (err: unknown): BrokenCause => ({ code: codeOf(err), cause: err })

interface OnReadFields {
  readonly buffer: symbol
  readonly callback: symbol
  readonly generator: symbol
}

let onReadFields: OnReadFields | null | undefined

/** For tests: `false` keeps every stream on `'data'` events, as on a Node without the `onread` fields. */
export const setLending = (enabled: boolean): void => {
  lendingEnabled = enabled
}
let lendingEnabled = true

/** Node's `onread` fields of a socket, found once by their descriptions; `null` if this Node has none. */
const findOnReadFields = (): OnReadFields | null => {
  if (onReadFields !== undefined) return onReadFields
  onReadFields = null
  try {
    const probe = new net.Socket()
    const symbols = new Map(Object.getOwnPropertySymbols(probe).map((s) => [s.description, s]))
    const buffer = symbols.get("kBuffer")
    const callback = symbols.get("kBufferCb")
    const generator = symbols.get("kBufferGen")
    probe.destroy()
    if (buffer !== undefined && callback !== undefined && generator !== undefined) {
      onReadFields = { buffer, callback, generator }
    }
  } catch {
    // No probe socket: stay on 'data' events.
  }
  return onReadFields
}

interface StreamHandle {
  readonly useUserBuffer?: (buffer: Uint8Array) => void
  readonly constructor: { readonly name: string }
}

/** Where a stream keeps its reader, for the `'data'` listener that every reader shares. */
const READER = Symbol("fullduplex/NodeReader")

type Fed = NodeStream.Readable & { [READER]?: NodeReader | undefined }

// One listener for every stream read: Node calls it with the stream as `this`, and the reader is on the
// stream. Closures per connection were most of what an idle one held (see docs/ARCHITECTURE.md).
function onDataShared(this: Fed, chunk: Uint8Array | string): void {
  this[READER]?.onData(chunk)
}

/** @internal */
export class NodeReader implements RoomListener, SideEndTarget {
  /** Reading into a reused buffer; or it cannot (`"never"`), or not yet. */
  private lending: boolean | "never" = false
  private buffer: Buffer | undefined = undefined
  private readonly stopEnd: (() => void) | Stopper

  /** Set by {@link overflow}: from then on every chunk is counted here and dropped. */
  private discard: ((bytes: number) => void) | undefined = undefined

  constructor(
    private readonly input: NodeStream.Readable,
    private readonly pipe: BytePipe,
    /**
     * Asked when the pipe is full: a counter to drop every later chunk into instead of pausing the stream
     * (a child's output spilled past its capture keeps flowing, so the child never blocks on it), or
     * `undefined` to pause as usual.
     */
    private readonly overflow?: () => ((bytes: number) => void) | undefined
  ) {
    pipe.roomListener = this
    this.stopEnd = watchSideEnd(input, "readable", this)
    ;(input as Fed)[READER] = this
    input.on("data", onDataShared)
    input.resume() // a stream handed over paused (say, `pauseOnConnect`) would never flow otherwise
  }

  dispose(): void {
    const input = this.input as Fed
    input.off("data", onDataShared)
    if (input[READER] === this) input[READER] = undefined
    stopWatching(input, this.stopEnd)
  }

  /** The pipe has room again. */
  onRoom(): void {
    if (!this.input.destroyed) this.input.resume()
  }

  /** The stream's readable side ended, or failed. */
  sideEnded(err: Error | undefined): void {
    if (err) this.pipe.abortWriter(false, causeOf(err))
    else this.pipe.end()
  }

  onData(chunk: Uint8Array | string): void {
    const bytes = typeof chunk === "string" ? Buffer.from(chunk) : chunk
    if (this.discard !== undefined) return this.discard(bytes.length)
    if (!this.pipe.offerUnsafe(bytes)) this.full()
    else if (this.lending === false && bytes.length >= LEND_AFTER_BYTES && this.pipe.sinkTakesLent) this.lend()
  }

  /** The pipe is full: pause, unless the owner would rather drop what comes next. */
  private full(): boolean {
    this.discard = this.overflow?.()
    if (this.discard !== undefined) return true
    this.input.pause()
    return false
  }

  /** Switches the socket to reading into a reused buffer (see the module's doc), if it can be. */
  private lend(): void {
    const input = this.input
    const fields = findOnReadFields()
    const handle = (input as { _handle?: StreamHandle | null })._handle
    if (
      !lendingEnabled ||
      fields === null ||
      !(input instanceof net.Socket) ||
      input.destroyed ||
      input.connecting ||
      handle == null ||
      typeof handle.useUserBuffer !== "function" ||
      (handle.constructor.name !== "TCP" && handle.constructor.name !== "Pipe")
    ) {
      this.lending = "never"
      return
    }
    // Chunks Node has buffered already still come as 'data' events, before any read into the new buffer:
    // switch only when there are none.
    if (input.readableLength > 0) return
    const buffer = Buffer.allocUnsafe(READ_BUFFER_BYTES)
    this.buffer = buffer
    const fieldsOf = input as unknown as Record<symbol, unknown>
    fieldsOf[fields.buffer] = buffer
    // Made here, not per reader: only a socket that moves bulk data gets this far.
    fieldsOf[fields.generator] = () => this.buffer
    fieldsOf[fields.callback] = (length: number, buffer: Buffer) => this.onRead(length, buffer)
    handle.useUserBuffer.call(handle, buffer)
    this.lending = true
  }

  /** A read into the reused buffer (Node's `onread` callback): `false` pauses the socket. */
  private onRead(length: number, buffer: Buffer): boolean {
    if (this.discard !== undefined) {
      this.discard(length)
      return true
    }
    const answer = this.pipe.offerLentUnsafe(buffer.subarray(0, length))
    if ((answer & KEPT) !== 0) {
      this.buffer = Buffer.allocUnsafe(length > SMALL_READ_BUFFER_BYTES ? READ_BUFFER_BYTES : SMALL_READ_BUFFER_BYTES)
    } else if (length <= SMALL_READ_BUFFER_BYTES && buffer.length === READ_BUFFER_BYTES) {
      this.buffer = Buffer.allocUnsafe(SMALL_READ_BUFFER_BYTES)
    } else if (length === buffer.length && buffer.length < READ_BUFFER_BYTES) {
      this.buffer = Buffer.allocUnsafe(READ_BUFFER_BYTES)
    }
    if ((answer & PAUSE) === 0) return true
    return this.full()
  }
}
