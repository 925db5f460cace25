/**
 * The server role of `Shutdown` as a state machine driven by callbacks: one object per connection, no
 * fiber of its own while the connection is idle.
 *
 * The connection is the consumer attached to the duplex's inbound pipe (a {@link PushSink}, as the pump
 * is): frames are decoded from each chunk in the step that delivers it, and requests are queued up to the
 * read-ahead bounds; at either bound the sink answers {@link PAUSE}, so the pipe fills and the transport
 * holds the client back (backpressure, not buffering). Frames go out through the duplex's outbound port,
 * one write at a time, in order: the preface, then each answer, with the notice slipped in at the next
 * write, then our FIN once the client's EOF has been read and every request answered.
 *
 * The user's `handle` runs in a fiber of its own, one request at a time and only while there is one: an
 * idle connection holds the object, the handler fiber parked in one callback, and nothing else. What used
 * to be a fiber per connection is one per server: the stall limit is one sweep over the connections whose
 * answer waits for room ({@link StallSweep}), and the server-wide shutdown is one watcher per server that
 * tells every live connection ({@link Role.watchShutdown}). The grace's judge and the drain timer are
 * fibers, started only by the notice.
 *
 * **Phases** (issue #17)
 *
 * ```text
 *   Serving ──goingAway──▶ Noticed
 *      │                      │
 *      ├──stall──▶ Cut ◀──────┤ grace, drain, stall
 *      │           │          │
 *      └───────────┴──────────┴──▶ Closed   (our FIN after every answer, a failure, or interruption)
 * ```
 *
 * Each event is one method: {@link Connection.chunk}, {@link Connection.end}, {@link Connection.fail}
 * (the pipe's), `onWritten` (the port's), `onHandled` (the handler fiber's observer),
 * {@link Connection.goingAwayUnsafe}, {@link Connection.stalled} (the sweep's), `cutNow` (the timers'),
 * and {@link Connection.interrupted} (the handler fiber's interruption).
 *
 * @internal
 */
import * as Cause from "effect/Cause"
import type * as Clock from "effect/Clock"
import type * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import type { Duplex, Stats } from "../Duplex.js"
import { DuplexError, FrameTooLarge, ProtocolError, StallDetected, Timeout } from "../DuplexError.js"
import { type BytePipe, type OutboundPort, PAUSE, type PushSink, TAKEN } from "./bytePipe.js"
import { stalledDirection } from "./errors.js"
import { FrameReader, HEADER_BYTES, KIND_CONTROL, KIND_DATA, writeHeader } from "./frameCodec.js"

/** The limits of the server role, checked. @internal */
export interface Limits {
  readonly graceMillis: number
  readonly drainMillis: number
  readonly maxPendingBytes: number
  readonly maxPendingRequests: number
  readonly stallMillis: number
  readonly maxFrameBytes: number
}

/** How a served connection ended, when it ended well (`Shutdown.ServerReport`). @internal */
export interface Report {
  readonly answered: number
  readonly noticeSent: boolean
  readonly drainMillis?: number | undefined
}

/** Where the peaks of the read-ahead are noted (`Shutdown`'s `Peaks`). @internal */
export interface PeakSink {
  note(requests: number, bytes: number): void
}

/** The phase of a connection in the server role. @internal */
export type Phase = "Serving" | "Noticed" | "Cut" | "Closed"

/** After the grace, how long the server must have waited on a silent client before it cuts it. */
const SILENCE_MILLIS = 250

/** How often the silence is sampled. */
const SILENCE_TICK_MILLIS = 50

/** Payloads up to this size are copied behind their header and written once (as `Framing.send` does). */
const COALESCE_BYTES = 16 * 1024

const PREFACE_FRAME = Uint8Array.of(KIND_CONTROL, 0, 0, 0, 2, 0x00, 0x01)
const NOTICE_FRAME = Uint8Array.of(KIND_CONTROL, 0, 0, 0, 1, 0x01)

/** What the one write in progress is. */
const NONE = 0
const PREFACE = 1
const NOTICE = 2
const ANSWER = 3
const FIN = 4

/**
 * What one server shares among its connections: the handler, the limits, the peaks, the stall sweep and
 * the shutdown watchers. @internal
 */
export class Role<E, R> {
  readonly sweep: StallSweep
  private watchers: WeakMap<Effect.Effect<void>, ShutdownWatch> | undefined = undefined

  constructor(
    readonly handle: (request: Uint8Array) => Effect.Effect<Uint8Array, E, R>,
    readonly limits: Limits,
    readonly peaks: PeakSink
  ) {
    this.sweep = new StallSweep(limits.stallMillis)
  }

  /**
   * Tells `connection` when `shuttingDown` completes: one fiber per server (per `shuttingDown`), which
   * notifies every connection still live, instead of a fork per connection.
   */
  watchShutdown(connection: Connection<E, R>, shuttingDown: Effect.Effect<void>): void {
    const watchers = (this.watchers ??= new WeakMap())
    let watch = watchers.get(shuttingDown)
    if (watch === undefined) {
      watch = new ShutdownWatch()
      watchers.set(shuttingDown, watch)
      const started = watch
      Effect.runForkWith(connection.context)(
        Effect.andThen(
          shuttingDown,
          Effect.sync(() => started.fire())
        )
      )
    }
    if (watch.fired) return connection.goingAwayUnsafe()
    watch.connections.add(connection)
    connection.watch = watch
  }
}

/** The live connections of one server, told once when it starts shutting down. */
class ShutdownWatch {
  fired = false
  readonly connections = new Set<Connection<any, any>>()
  fire(): void {
    this.fired = true
    for (const connection of this.connections) connection.goingAwayUnsafe()
    this.connections.clear()
  }
}

/**
 * The stall limit of one server: a write to the client that has waited for room with no byte accepted for
 * `stallMillis` aborts its connection. A connection is watched only while one of its writes waits, and one
 * fiber sweeps them, sampling ten times per limit (as `Watchdog` does), running only while something is
 * watched. It uses `Effect.sleep` and the `Clock`, so `TestClock` drives it. @internal
 */
export class StallSweep {
  private readonly watched = new Set<Connection<any, any>>()
  private fiber: Fiber.Fiber<void> | undefined = undefined
  private readonly periodMillis: number

  constructor(readonly stallMillis: number) {
    this.periodMillis = Math.max(1, Math.floor(stallMillis / 10))
  }

  watch(connection: Connection<any, any>): void {
    connection.stallSince = connection.clock.currentTimeMillisUnsafe()
    connection.stallBytes = -1
    this.watched.add(connection)
    if (this.fiber === undefined) this.fiber = Effect.runForkWith(connection.context)(this.loop)
  }

  unwatch(connection: Connection<any, any>): void {
    if (!this.watched.delete(connection) || this.watched.size > 0) return
    const fiber = this.fiber
    this.fiber = undefined
    fiber?.interruptUnsafe()
  }

  private get loop(): Effect.Effect<void> {
    const self = this
    return Effect.gen(function* () {
      while (true) {
        yield* Effect.sleep(self.periodMillis)
        for (const connection of [...self.watched]) {
          if (!self.watched.has(connection)) continue
          const stats = yield* connection.duplex.stats
          const now = connection.clock.currentTimeMillisUnsafe()
          if (!self.watched.has(connection)) continue
          const bytes = stats.outbound.bytes
          if (bytes !== connection.stallBytes) {
            if (connection.stallBytes !== -1) connection.stallSince = now
            connection.stallBytes = bytes
          } else if (now - connection.stallSince >= self.stallMillis) {
            yield* connection.stalled(now - connection.stallSince, stats)
          }
        }
      }
    })
  }
}

/**
 * One connection in the server role (see the module's doc for its phases and events). @internal
 */
export class Connection<E, R> implements PushSink {
  phase: Phase = "Serving"
  /** Set when a limit cut the connection: which one. */
  private cut: "grace" | "drain" | "stall" | undefined = undefined
  private stallError: DuplexError | undefined = undefined
  /** The shutdown watcher this connection is registered with, if any. */
  watch: ShutdownWatch | undefined = undefined
  /** While a write waits: since when no byte was accepted, and the outbound count then (-1: not sampled). */
  stallSince = 0
  stallBytes = -1

  // inbound
  private reader: FrameReader | undefined = undefined
  /** The sink answered `PAUSE` for lack of room in the read-ahead and has not resumed. */
  private paused = false
  /** The client's EOF has been read. */
  private eof = false
  /** Requests read and not yet handed to `handle`, oldest first from `head`. */
  private queue: Array<Uint8Array> | undefined = undefined
  private head = 0
  /** Requests read and not yet answered (until the answer's write completes), and their bytes. */
  private pendingRequests = 0
  private pendingBytes = 0
  peakRequests = 0
  peakBytes = 0

  // the handler
  private handling: Fiber.Fiber<Uint8Array, E> | undefined = undefined
  /** The size of the request being handled or answered. */
  private currentBytes = 0
  /** The answer handed back and not yet written. */
  private answer: Uint8Array | undefined = undefined
  private answered = 0

  // outbound
  private writing = NONE
  /** The payload still to write after its header, for a frame written in two parts. */
  private secondPart: Uint8Array | undefined = undefined
  private cancelWrite: (() => void) | undefined = undefined
  private prefaceSent = false
  private noticeOwed = false

  // the notice
  private noticeAt: number | undefined = undefined
  private drainMillisTaken: number | undefined = undefined
  private graceOver = false
  private timers: Array<Fiber.Fiber<void>> | undefined = undefined

  /** The exit to settle with once the handler's fiber has ended (it was interrupted by the end). */
  private settling: Exit.Exit<Report, DuplexError | E> | undefined = undefined
  private advancing = false
  private again = false
  private onWrittenFn: ((error: DuplexError | undefined) => void) | undefined = undefined
  private onHandledFn: ((exit: Exit.Exit<Uint8Array, E>) => void) | undefined = undefined

  constructor(
    private readonly role: Role<E, R>,
    readonly duplex: Duplex,
    private readonly pipe: BytePipe,
    private readonly port: OutboundPort,
    readonly context: Context.Context<R>,
    readonly clock: Clock.Clock,
    /** Told the end, once: the report, or why the connection failed. */
    private readonly settle: (exit: Exit.Exit<Report, DuplexError | E>) => void
  ) {}

  /** The preface first, then the client's bytes. */
  start(): void {
    this.advance()
    if (this.phase !== "Closed") this.pipe.attachUnsafe(this)
  }

  /** The handler fiber was interrupted (or the scope closed): everything stops; the duplex is left as it is. */
  get interrupted(): Effect.Effect<void> {
    return Effect.suspend(() => {
      if (this.phase === "Closed") return Effect.void
      this.phase = "Closed"
      this.release()
      const handling = this.handling
      this.handling = undefined
      return handling === undefined ? Effect.void : Fiber.interrupt(handling)
    })
  }

  readAhead(): { readonly peakRequests: number; readonly peakBytes: number } {
    return { peakRequests: this.peakRequests, peakBytes: this.peakBytes }
  }

  // -------------------------------------------------------------------------------------------------
  // inbound: the pipe's events
  // -------------------------------------------------------------------------------------------------

  chunk(bytes: Uint8Array): number {
    if (this.phase === "Closed") return TAKEN
    ;(this.reader ??= new FrameReader(this.duplex.label, this.role.limits.maxFrameBytes)).push(bytes)
    return this.decode() ? TAKEN : PAUSE
  }

  end(): void {
    if (this.phase === "Closed") return
    const cut = this.reader?.atEnd()
    if (cut !== undefined) return this.finish(Exit.fail(cut))
    this.eof = true
    if (this.noticeAt !== undefined) this.drainMillisTaken = this.clock.currentTimeMillisUnsafe() - this.noticeAt
    this.advance()
  }

  fail(error: DuplexError): void {
    this.finish(Exit.fail(error))
  }

  /**
   * Decodes requests from the chunk in the reader while the read-ahead has room. Returns `false` when it
   * stopped for lack of room (the rest of the chunk stays in the reader: the sink is paused).
   */
  private decode(): boolean {
    const reader = this.reader!
    const { maxPendingRequests, maxPendingBytes } = this.role.limits
    let read = false
    let used = true
    while (this.phase !== "Closed") {
      // Backpressure, not buffering: with the read-ahead full nothing more is decoded, so the pipe fills
      // and the client is held back by the transport's window.
      if (this.pendingRequests >= maxPendingRequests || this.pendingBytes >= maxPendingBytes) {
        this.paused = true
        used = false
        break
      }
      const raw = reader.next()
      if (raw === undefined) break
      if (raw instanceof DuplexError) {
        this.finish(Exit.fail(raw))
        return true
      }
      if (raw.kind !== KIND_DATA) {
        const problem = "a control frame from the client (only servers send them)"
        this.finish(Exit.fail(new DuplexError({ reason: new ProtocolError({ label: this.duplex.label, problem }) })))
        return true
      }
      const payload = raw.payload
      this.pendingRequests++
      this.pendingBytes += payload.length
      if (this.pendingRequests > this.peakRequests) this.peakRequests = this.pendingRequests
      if (this.pendingBytes > this.peakBytes) this.peakBytes = this.pendingBytes
      this.role.peaks.note(this.pendingRequests, this.pendingBytes)
      ;(this.queue ??= []).push(payload)
      read = true
    }
    if (read) this.advance()
    return used
  }

  /** An answer made room: decode what the reader holds, then let the pipe deliver again. */
  private resumeReading(): void {
    if (!this.paused || this.phase === "Closed") return
    this.paused = false
    if (this.decode()) this.pipe.resumeSink(this)
  }

  /** What the reader waits on, for the grace's judge: the client, room in the read-ahead, or nothing (EOF). */
  private readerNow(): "peer" | "backlog" | "eof" {
    return this.eof ? "eof" : this.paused ? "backlog" : "peer"
  }

  // -------------------------------------------------------------------------------------------------
  // the work: one step at a time, in order
  // -------------------------------------------------------------------------------------------------

  /** Does what can be done now. Re-entered calls (a callback during a step) are folded into the running one. */
  private advance(): void {
    if (this.advancing) {
      this.again = true
      return
    }
    this.advancing = true
    try {
      do {
        this.again = false
        this.step()
      } while (this.again && this.phase !== "Closed")
    } finally {
      this.advancing = false
    }
  }

  private step(): void {
    while (this.phase !== "Closed" && this.writing === NONE) {
      // The preface first: until it arrives a client sends nothing, so a connection lost before it
      // carried no request. Then nothing else until it is written, the notice included.
      if (!this.prefaceSent) {
        if (!this.write(PREFACE, PREFACE_FRAME, undefined)) return
        continue
      }
      if (this.noticeOwed) {
        this.noticeOwed = false
        if (!this.write(NOTICE, NOTICE_FRAME, undefined)) return
        continue
      }
      const answer = this.answer
      if (answer !== undefined) {
        this.answer = undefined
        if (!this.writeFrame(answer)) return
        continue
      }
      if (this.handling !== undefined) return
      const queue = this.queue
      if (queue !== undefined && this.head < queue.length) {
        const request = queue[this.head]!
        queue[this.head++] = EMPTY
        if (this.head === queue.length) {
          queue.length = 0
          this.head = 0
        }
        if (!this.startHandling(request)) return
        continue
      }
      // Only now, after the client's FIN and every answer: no request can be left behind by our FIN.
      if (this.eof) {
        this.writing = FIN
        this.port.endUnsafe((this.onWrittenFn ??= (error) => this.onWritten(error)))
      }
      return
    }
  }

  /** Runs `handle` on `request` in a fiber; `true` when it is done already (its answer is waiting). */
  private startHandling(request: Uint8Array): boolean {
    this.currentBytes = request.length
    let handling: Effect.Effect<Uint8Array, E, R>
    try {
      handling = this.role.handle(request)
    } catch (defect) {
      handling = Effect.die(defect) // a handler that throws instead of returning an effect
    }
    const fiber = Effect.runForkWith(this.context)(handling)
    const exit = fiber.pollUnsafe()
    if (exit !== undefined) return this.handled(exit)
    this.handling = fiber
    fiber.addObserver((this.onHandledFn ??= (exit) => this.onHandled(exit)))
    return false
  }

  private onHandled(exit: Exit.Exit<Uint8Array, E>): void {
    this.handling = undefined
    if (this.phase === "Closed") {
      const settling = this.settling
      this.settling = undefined
      if (settling !== undefined) this.settle(settling)
      return
    }
    if (this.handled(exit)) this.advance()
  }

  private handled(exit: Exit.Exit<Uint8Array, E>): boolean {
    if (Exit.isFailure(exit)) {
      this.finish(Exit.failCause(exit.cause))
      return false
    }
    this.answer = exit.value
    return true
  }

  /** Writes one data frame (an answer); `true` when it was accepted at once. */
  private writeFrame(payload: Uint8Array): boolean {
    const limit = this.role.limits.maxFrameBytes
    if (payload.length > limit) {
      const reason = new FrameTooLarge({
        label: this.duplex.label,
        direction: "outbound",
        length: payload.length,
        limit
      })
      this.finish(Exit.fail(new DuplexError({ reason })))
      return false
    }
    if (payload.length <= COALESCE_BYTES) {
      const bytes = new Uint8Array(HEADER_BYTES + payload.length)
      writeHeader(bytes, 0, KIND_DATA, payload.length)
      bytes.set(payload, HEADER_BYTES)
      return this.write(ANSWER, bytes, undefined)
    }
    const header = new Uint8Array(HEADER_BYTES)
    writeHeader(header, 0, KIND_DATA, payload.length)
    return this.write(ANSWER, header, payload)
  }

  /**
   * Hands `bytes` (then `then`, the rest of the frame) to the port. `true` when all was accepted at once;
   * otherwise `onWritten` comes later, and meanwhile the stall sweep watches the connection.
   */
  private write(what: number, bytes: Uint8Array, then: Uint8Array | undefined): boolean {
    this.writing = what
    const done = (this.onWrittenFn ??= (error) => this.onWritten(error))
    let wait = this.port.writeUnsafe(bytes, done)
    if (wait === undefined && then !== undefined) wait = this.port.writeUnsafe(then, done)
    else this.secondPart = then
    if (wait === undefined) {
      this.writing = NONE
      this.written(what)
      return this.phase !== "Closed"
    }
    if (this.writing !== what || this.phase === "Closed") return false // it failed at once
    this.cancelWrite = wait
    this.role.sweep.watch(this)
    return false
  }

  private onWritten(error: DuplexError | undefined): void {
    const what = this.writing
    this.cancelWrite = undefined
    this.role.sweep.unwatch(this)
    if (error !== undefined) {
      this.writing = NONE
      this.secondPart = undefined
      // The notice is best effort: a connection that broke under it fails through its other steps.
      if (what === NOTICE && this.phase !== "Closed") return this.advance()
      return this.finish(Exit.fail(error))
    }
    const rest = this.secondPart
    if (rest !== undefined) {
      this.secondPart = undefined
      const wait = this.port.writeUnsafe(rest, this.onWrittenFn!)
      if (wait !== undefined) {
        if (this.writing === what && this.phase !== "Closed") {
          this.cancelWrite = wait
          this.role.sweep.watch(this)
        }
        return
      }
    }
    this.writing = NONE
    this.written(what)
    this.advance()
  }

  /** A write completed. */
  private written(what: number): void {
    switch (what) {
      case PREFACE:
        this.prefaceSent = true
        return
      case ANSWER:
        this.answered++
        this.pendingRequests--
        this.pendingBytes -= this.currentBytes
        return this.resumeReading()
      case FIN:
        // Our FIN is out after every answer: nothing may cut the connection any more.
        return this.finish(
          Exit.succeed({
            answered: this.answered,
            noticeSent: this.noticeAt !== undefined,
            drainMillis: this.drainMillisTaken
          })
        )
    }
  }

  // -------------------------------------------------------------------------------------------------
  // the notice, its timers and the stall limit
  // -------------------------------------------------------------------------------------------------

  /** `goingAway`: the notice (unless the client's EOF was read) and the timers. Idempotent. */
  goingAwayUnsafe(): void {
    if (this.noticeAt !== undefined || this.phase !== "Serving") return
    this.phase = "Noticed"
    this.noticeAt = this.clock.currentTimeMillisUnsafe()
    const run = Effect.runForkWith(this.context)
    const timers: Array<Fiber.Fiber<void>> = (this.timers = [])
    // After the client's EOF there is nobody to tell, but the answers still owed are bounded too.
    if (!this.eof) {
      this.noticeOwed = true
      timers.push(run(this.judgeAfterGrace))
    }
    timers.push(run(Effect.andThen(Effect.sleep(this.role.limits.drainMillis), this.cutNow("drain"))))
    this.advance()
  }

  /**
   * The grace's verdict. At its end, a client whose EOF has been read complied. Otherwise it is judged by
   * silence: cut once the server has been waiting on it (everything it sent read) for
   * {@link SILENCE_MILLIS} with no byte arriving. While bytes arrive, or while the server is behind its own
   * backlog, the silence does not count.
   */
  private get judgeAfterGrace(): Effect.Effect<void> {
    const self = this
    return Effect.gen(function* () {
      yield* Effect.sleep(self.role.limits.graceMillis)
      if (self.readerNow() === "eof") return
      self.graceOver = true
      let lastBytes = (yield* self.duplex.stats).inbound.bytes
      let quietSince = self.clock.currentTimeMillisUnsafe()
      while (self.readerNow() !== "eof") {
        yield* Effect.sleep(SILENCE_TICK_MILLIS)
        const bytes = (yield* self.duplex.stats).inbound.bytes
        const now = self.clock.currentTimeMillisUnsafe()
        if (bytes !== lastBytes || self.readerNow() !== "peer") {
          lastBytes = bytes
          quietSince = now
        } else if (now - quietSince >= SILENCE_MILLIS) {
          return yield* self.cutNow("grace")
        }
      }
    })
  }

  private cutNow(why: "grace" | "drain"): Effect.Effect<void> {
    return Effect.suspend(() => {
      if (this.phase === "Closed" || this.phase === "Cut") return Effect.void
      this.phase = "Cut"
      // A drain cut of a client that never half-closed, though the grace was over, is the grace's verdict.
      this.cut = why === "drain" && this.graceOver && !this.eof ? "grace" : why
      return this.abort
    })
  }

  /** The sweep found a write waiting `millis` with no byte accepted. */
  stalled(millis: number, stats: Stats): Effect.Effect<void> {
    if (this.phase === "Closed" || this.phase === "Cut") return Effect.void
    this.phase = "Cut"
    this.cut = "stall"
    const label = this.duplex.label
    this.stallError = new DuplexError({
      reason: new StallDetected({
        label: `${label}: an answer waited ${millis} ms for the client to read (the client does not read its answers)`,
        stalledMillis: millis,
        directions: [stalledDirection(label, "outbound", stats), stalledDirection(label, "inbound", stats)]
      })
    })
    return this.abort
  }

  /** Aborts the duplex after a cut, and ends with the cut's error (the pipe tells an aborted reader nothing). */
  private get abort(): Effect.Effect<void> {
    return Effect.andThen(
      this.duplex.abort,
      Effect.sync(() => this.finish(Exit.fail(this.cutError())))
    )
  }

  private cutError(): DuplexError {
    if (this.cut === "stall") return this.stallError!
    const grace = this.cut === "grace"
    const limits = this.role.limits
    return new DuplexError({
      reason: new Timeout({
        label: this.duplex.label,
        operation: grace
          ? "shutdown grace (the client did not half-close after the notice)"
          : "shutdown drain (the connection did not finish after the notice)",
        timeoutMillis: grace ? limits.graceMillis : limits.drainMillis
      })
    })
  }

  // -------------------------------------------------------------------------------------------------
  // the end
  // -------------------------------------------------------------------------------------------------

  /** Ends the connection with `exit` (a failure after a cut is the cut's), once the handler's fiber is gone. */
  private finish(exit: Exit.Exit<Report, DuplexError | E>): void {
    if (this.phase === "Closed") return
    this.phase = "Closed"
    this.release()
    const ended =
      Exit.isFailure(exit) && this.cut !== undefined && Cause.hasFails(exit.cause) ? Exit.fail(this.cutError()) : exit
    const handling = this.handling
    if (handling === undefined) return this.settle(ended)
    // The handler's fiber is interrupted, and the end is told once it is gone.
    this.settling = ended
    handling.interruptUnsafe()
  }

  /** Lets go of the pipe, the port's wait, the sweep, the shutdown watcher and the timers. */
  private release(): void {
    this.pipe.detachSink(this)
    const cancel = this.cancelWrite
    this.cancelWrite = undefined
    cancel?.()
    this.role.sweep.unwatch(this)
    this.watch?.connections.delete(this)
    this.watch = undefined
    const timers = this.timers
    this.timers = undefined
    if (timers !== undefined) for (const timer of timers) timer.interruptUnsafe()
    this.queue = undefined
    this.answer = undefined
  }
}

const EMPTY = new Uint8Array(0)
