/**
 * Length-prefixed messages over any {@link Duplex}, with a maximum frame size.
 *
 * A byte stream has no message boundaries; `Framing` adds them. Each frame is a 5-byte header (one kind
 * byte, `0` for data and `1` for control, then the payload length as a 32-bit big-endian integer) and the
 * payload. Control frames travel in the same stream as data frames, in order, and are told apart by their
 * kind: a protocol built on top (such as `Shutdown`'s "going away" notice) uses them for messages about the
 * conversation rather than in it.
 *
 * Every length is checked against `maxFrameBytes` before anything is allocated for it: a peer cannot make
 * the reader allocate more than one frame's worth, whatever it announces.
 *
 * @module fullduplex/Framing
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as Predicate from "effect/Predicate"
import type * as Pull from "effect/Pull"
import * as Semaphore from "effect/Semaphore"
import * as Sink from "effect/Sink"
import * as Stream from "effect/Stream"
import type { Duplex } from "./Duplex.js"
import { DuplexError, FrameTooLarge } from "./DuplexError.js"
import { FrameReader, HEADER_BYTES, KIND_CONTROL, KIND_DATA, writeHeader } from "./internal/frameCodec.js"
import { invalidOptions } from "./internal/errors.js"

/**
 * The largest payload accepted by default: 4 MiB, gRPC's default maximum received message size
 * (`grpc.max_receive_message_length`). Bigger messages belong in a stream, not a frame.
 *
 * **Example** (Allowing frames four times the default size)
 *
 * ```ts
 * import { Duplex, Framing } from "fullduplex"
 *
 * const framed = (conn: Duplex.Duplex) => Framing.make(conn, { maxFrameBytes: 4 * Framing.DEFAULT_MAX_FRAME_BYTES })
 * ```
 *
 * @category constants
 * @since 0.1.0
 */
export const DEFAULT_MAX_FRAME_BYTES = 4 * 1024 * 1024

/**
 * The most `maxFrameBytes` can be: the header's 32-bit length field, 4 GiB - 1.
 *
 * **Example** (Frames as large as the header can announce)
 *
 * ```ts
 * import { Duplex, Framing } from "fullduplex"
 *
 * const unbounded = (conn: Duplex.Duplex) => Framing.make(conn, { maxFrameBytes: Framing.MAX_FRAME_BYTES_LIMIT })
 * ```
 *
 * @category constants
 * @since 0.1.0
 */
export const MAX_FRAME_BYTES_LIMIT = 0xffff_ffff

/**
 * The size of every frame's header: a kind byte and a 32-bit big-endian length.
 *
 * **Example** (The bytes a message takes on the wire)
 *
 * ```ts
 * import { Framing } from "fullduplex"
 *
 * const wireBytes = (payload: Uint8Array): number => Framing.FRAME_HEADER_BYTES + payload.length
 * ```
 *
 * @category constants
 * @since 0.1.0
 */
export const FRAME_HEADER_BYTES = HEADER_BYTES

/**
 * A message of the conversation itself.
 *
 * **Example** (Reading the payload of a data frame)
 *
 * ```ts
 * import { Framing } from "fullduplex"
 *
 * const text = (frame: Framing.DataFrame): string => new TextDecoder().decode(frame.payload)
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface DataFrame {
  readonly _tag: "Data"
  readonly payload: Uint8Array
}

/**
 * A message about the conversation (a notice, a signal), in band with the data and in order with it.
 *
 * **Example** (Control frames carrying one-byte signals)
 *
 * ```ts
 * import { Framing } from "fullduplex"
 *
 * const PAUSE = 0x01
 * const isPause = (frame: Framing.ControlFrame): boolean => frame.payload[0] === PAUSE
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface ControlFrame {
  readonly _tag: "Control"
  readonly payload: Uint8Array
}

/**
 * One message: data or control.
 *
 * **Example** (Handling both kinds of frame)
 *
 * ```ts
 * import { Framing } from "fullduplex"
 *
 * const describe = (frame: Framing.Frame): string =>
 *   frame._tag === "Control" ? `control (${frame.payload.length} bytes)` : `data (${frame.payload.length} bytes)`
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export type Frame = DataFrame | ControlFrame

/**
 * A data frame carrying `payload`.
 *
 * **Example** (A message of the conversation)
 *
 * ```ts
 * import { Framing } from "fullduplex"
 *
 * const request = Framing.data(new TextEncoder().encode("GET /"))
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const data = (payload: Uint8Array): DataFrame => ({ _tag: "Data", payload })

/**
 * A control frame carrying `payload`.
 *
 * **Example** (A notice about the conversation)
 *
 * ```ts
 * import { Framing } from "fullduplex"
 *
 * const pause = Framing.control(Uint8Array.of(0x02))
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const control = (payload: Uint8Array): ControlFrame => ({ _tag: "Control", payload })

/**
 * Tells a control frame from a data frame.
 *
 * **Example** (Handling notices apart from messages)
 *
 * ```ts
 * import { Framing } from "fullduplex"
 *
 * const describe = (frame: Framing.Frame) => (Framing.isControl(frame) ? "notice" : "message")
 * ```
 *
 * @category guards
 * @since 0.1.0
 */
export const isControl = (frame: Frame): frame is ControlFrame => frame._tag === "Control"

/**
 * A duplex that carries frames: read whole messages, send whole messages.
 *
 * **Details**
 *
 * - `frames` and `read` share one position (as a duplex's `readable` and `read` do) and have a single
 *   consumer. They end (`None`) at the peer's EOF between two frames; an EOF inside a frame fails
 *   `FrameTruncated`; a header announcing more than `maxFrameBytes` fails `FrameTooLarge`, an unknown kind
 *   `ProtocolError`. Such a failure is final: every later read repeats it.
 * - `send` may be called from several fibers: each frame goes out whole, never interleaved with another.
 *   A payload over `maxFrameBytes` fails `FrameTooLarge` and writes nothing.
 * - `end` half-closes after every frame sent; `abort` is the duplex's.
 *
 * **Example** (A request and its reply, as whole messages)
 *
 * ```ts
 * import { Effect, Option } from "effect"
 * import { Framing } from "fullduplex"
 *
 * const call = (framed: Framing.Framed, request: Uint8Array) =>
 *   Effect.andThen(framed.send(Framing.data(request)), framed.read).pipe(
 *     Effect.map(Option.map((frame) => frame.payload))
 *   )
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface Framed {
  readonly label: string
  /** The byte duplex underneath. Reading or writing it directly breaks the framing. */
  readonly duplex: Duplex
  readonly maxFrameBytes: number
  readonly frames: Stream.Stream<Frame, DuplexError>
  readonly read: Effect.Effect<Option.Option<Frame>, DuplexError>
  /** Sends one frame whole; frames sent from several fibers are never interleaved. */
  readonly send: (frame: Frame) => Effect.Effect<void, DuplexError>
  readonly sink: Sink.Sink<void, Frame, never, DuplexError>
  readonly end: Effect.Effect<void, DuplexError>
  readonly abort: Effect.Effect<void>
}

/**
 * Options of {@link make}.
 *
 * **Example** (Both ends agree on a 64 KiB limit)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Duplex, Framing } from "fullduplex"
 *
 * const options: Framing.FramingOptions = { maxFrameBytes: 64 * 1024 }
 * const program = Effect.scoped(
 *   Effect.gen(function* () {
 *     const [a, b] = yield* Duplex.pair()
 *     return [yield* Framing.make(a, options), yield* Framing.make(b, options)] as const
 *   })
 * )
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface FramingOptions {
  /** The largest payload read or sent, in bytes, from 0 to 4 GiB - 1. Default {@link DEFAULT_MAX_FRAME_BYTES} (4 MiB). */
  readonly maxFrameBytes?: number | undefined
}

/** Payloads up to this size are copied behind their header and sent in one write; larger ones in two. */
const COALESCE_BYTES = 16 * 1024

/**
 * Frames a duplex: length-prefixed messages in and out.
 *
 * **When to use**
 *
 * For request/response and message protocols over a byte transport (TCP, a pair, a child's stdio): both
 * ends frame the same duplex and exchange whole messages. Read frames and send them from separate fibers
 * (or use `Duplex`'s combinators underneath) so that reading never waits on writing.
 *
 * **Details**
 *
 * See {@link Framed} for what each member does and how it fails. Besides the chunk it is decoding, the
 * reader holds only the bytes of one frame that have arrived, copied into one buffer as they come: a header
 * announcing a large payload costs nothing until the payload comes, and a frame being reassembled costs at
 * most its length plus 64 KiB however the peer cuts it (one byte per read included), never an object per
 * piece. A payload that arrives inside one chunk is a view of that chunk when it is most of it, and a copy
 * otherwise (so a small message kept for later does not keep a large chunk alive). Both ends must agree on
 * `maxFrameBytes`, or the smaller side rejects the larger side's frames.
 *
 * **Interruption**
 *
 * A `read` interrupted while it waits for bytes loses nothing: the bytes of a partial frame stay in the
 * decoder for the next read. (Interrupting a fiber at the moment a read completes can lose that frame, as
 * for any value an interrupted fiber was about to receive.) An interrupted `send` may have written part
 * of a frame, which leaves the stream unusable; abort the duplex then.
 *
 * **Gotchas**
 *
 * `send` hands the payload over like `Duplex.write`: a payload above 16 KiB is written by reference, so
 * do not modify it after sending.
 *
 * **Closing**
 *
 * Reads after the peer's EOF return `None`; reads and sends after the duplex is aborted fail as the
 * duplex does (`Closed`, `Broken`).
 *
 * **Example** (A message each way over an in-memory pair)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Duplex, Framing } from "fullduplex"
 *
 * const program = Effect.scoped(
 *   Effect.gen(function* () {
 *     const [a, b] = yield* Duplex.pair()
 *     const client = yield* Framing.make(a)
 *     const server = yield* Framing.make(b, { maxFrameBytes: 64 * 1024 })
 *     yield* client.send(Framing.data(new TextEncoder().encode("hello")))
 *     const frame = yield* server.read // Option.some({ _tag: "Data", payload: "hello" as bytes })
 *     return frame
 *   })
 * )
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = (duplex: Duplex, options: FramingOptions = {}): Effect.Effect<Framed, DuplexError> =>
  Effect.suspend(() => {
    const maxFrameBytes = options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES
    if (!Number.isInteger(maxFrameBytes) || maxFrameBytes < 0 || maxFrameBytes > MAX_FRAME_BYTES_LIMIT) {
      return Exit.fail(
        invalidOptions(duplex.label, "maxFrameBytes", maxFrameBytes, "a whole number of bytes from 0 to 4 GiB - 1")
      )
    }
    return Exit.succeed(makeUnchecked(duplex, maxFrameBytes))
  })

const makeUnchecked = (duplex: Duplex, maxFrameBytes: number): Framed => {
  const label = duplex.label
  const reader = new FrameReader(label, maxFrameBytes)
  /** Set when reading has stopped for good: the EOF (`None`) or the failure every later read repeats. */
  let finished: Exit.Exit<Option.Option<Frame>, DuplexError> | undefined

  const decoded = (): Option.Option<Frame> | DuplexError | undefined => {
    const raw = reader.next()
    if (raw === undefined || raw instanceof DuplexError) return raw
    return Option.some(raw.kind === KIND_DATA ? data(raw.payload) : control(raw.payload))
  }
  const read: Effect.Effect<Option.Option<Frame>, DuplexError> = Effect.suspend(function loop(): Effect.Effect<
    Option.Option<Frame>,
    DuplexError
  > {
    if (finished !== undefined) return finished
    const next = decoded()
    if (next instanceof DuplexError) return (finished = Exit.fail(next))
    if (next !== undefined) return Exit.succeed(next)
    return Effect.flatMap(duplex.read, (chunk) => {
      if (Option.isSome(chunk)) {
        reader.push(chunk.value)
        return loop()
      }
      const cut = reader.atEnd()
      return (finished = cut === undefined ? Exit.succeed(Option.none()) : Exit.fail(cut))
    })
  })
  const pull: Pull.Pull<readonly [Frame], DuplexError> = Effect.flatMap(read, (frame) =>
    Option.isSome(frame) ? Exit.succeed([frame.value] as const) : Exit.fail(Cause.Done())
  )

  const lock = Semaphore.makeUnsafe(1)
  const send = (frame: Frame): Effect.Effect<void, DuplexError> => {
    const payload = frame.payload
    const kind = frame._tag === "Data" ? KIND_DATA : KIND_CONTROL
    if (payload.length > maxFrameBytes) {
      return Exit.fail(
        new DuplexError({
          reason: new FrameTooLarge({ label, direction: "outbound", length: payload.length, limit: maxFrameBytes })
        })
      )
    }
    if (payload.length <= COALESCE_BYTES) return lock.withPermits(1)(duplex.write(encode(frame)))
    const header = new Uint8Array(HEADER_BYTES)
    writeHeader(header, 0, kind, payload.length)
    return lock.withPermits(1)(duplex.writeAll([header, payload]))
  }

  return {
    label,
    duplex,
    maxFrameBytes,
    frames: Stream.fromPull(Effect.succeed(pull)),
    read,
    send,
    sink: Sink.forEach(send),
    end: lock.withPermits(1)(duplex.end),
    abort: duplex.abort
  }
}

/**
 * The bytes of one frame, header and payload, as {@link make}'s `send` writes them.
 *
 * **When to use**
 *
 * To produce frames without a duplex: test vectors, a file of messages, another transport.
 *
 * **Example** (The bytes of a data frame)
 *
 * ```ts
 * import { Framing } from "fullduplex"
 *
 * const bytes = Framing.encode(Framing.data(Uint8Array.of(1, 2, 3)))
 * // Uint8Array [0, 0, 0, 0, 3, 1, 2, 3]
 * ```
 *
 * @category encoding
 * @since 0.1.0
 */
export const encode = (frame: Frame): Uint8Array => {
  const bytes = new Uint8Array(HEADER_BYTES + frame.payload.length)
  writeHeader(bytes, 0, frame._tag === "Data" ? KIND_DATA : KIND_CONTROL, frame.payload.length)
  bytes.set(frame.payload, HEADER_BYTES)
  return bytes
}

/**
 * Tells whether a value is a {@link Frame}.
 *
 * **Example** (Checking a value from outside)
 *
 * ```ts
 * import { Framing } from "fullduplex"
 *
 * const frames = (values: ReadonlyArray<unknown>) => values.filter(Framing.isFrame)
 * ```
 *
 * @category guards
 * @since 0.1.0
 */
export const isFrame = (u: unknown): u is Frame =>
  Predicate.hasProperty(u, "_tag") &&
  (u._tag === "Data" || u._tag === "Control") &&
  Predicate.hasProperty(u, "payload") &&
  u.payload instanceof Uint8Array
