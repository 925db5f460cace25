/**
 * A FIFO byte queue that keeps up to `memoryBytes` in memory and spills the rest to a temporary file.
 *
 * One producer (`push`, `end`) and one consumer (`take`), each from one fiber. Order is kept by one
 * invariant: bytes go to memory only while the file holds nothing unread, so everything in memory is
 * older than everything in the file, and `take` serves memory first.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import { randomBytes } from "node:crypto"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { DuplexError, SpillFailed } from "../DuplexError.js"
import { codeOf } from "./errors.js"

/** The largest piece read back from the file at once. */
const READ_PIECE_BYTES = 64 * 1024

/** @internal */
export interface SpillQueueOptions {
  readonly memoryBytes: number
  readonly maxFileBytes: number
  readonly directory: string
  readonly label: string
}

/** @internal */
export class SpillQueue {
  private readonly memory: Array<Uint8Array> = []
  private memoryHead = 0
  /** Bytes held in `memory` now. */
  memoryBytes = 0
  /** Bytes ever written to the file. */
  spilledBytes = 0
  private file: fs.FileHandle | undefined
  private filePath: string | undefined
  private unlinked = false
  /** File offsets: written (complete writes) and read; unread bytes are `[fileRead, fileWritten)`. */
  private fileWritten = 0
  private fileRead = 0
  private ended = false
  /** Set by `close`: a file whose open completes afterwards is closed at once. */
  private closed = false
  private wakeTaker: (() => void) | undefined
  private wakePusher: (() => void) | undefined

  constructor(private readonly options: SpillQueueOptions) {}

  private get fileUnread(): number {
    return this.fileWritten - this.fileRead
  }

  private fail(operation: "open" | "write" | "read", err: unknown): DuplexError {
    const code = codeOf(err)
    return new DuplexError({
      reason: new SpillFailed({
        label: this.options.label,
        operation,
        directory: this.options.directory,
        bytes: this.spilledBytes,
        code,
        cause: err
      })
    })
  }

  private wake(which: "taker" | "pusher") {
    const wake = which === "taker" ? this.wakeTaker : this.wakePusher
    if (which === "taker") this.wakeTaker = undefined
    else this.wakePusher = undefined
    wake?.()
  }

  private wait(which: "taker" | "pusher", ready: () => boolean): Effect.Effect<void> {
    return Effect.callback<void>((resume) => {
      if (ready()) return resume(Exit.void)
      const wake = () => resume(Exit.void)
      if (which === "taker") this.wakeTaker = wake
      else this.wakePusher = wake
      return Effect.sync(() => {
        if (which === "taker" && this.wakeTaker === wake) this.wakeTaker = undefined
        if (which === "pusher" && this.wakePusher === wake) this.wakePusher = undefined
      })
    })
  }

  private openFile: Effect.Effect<fs.FileHandle, DuplexError> = Effect.suspend(() => {
    if (this.file !== undefined) return Effect.succeed(this.file)
    const name = path.join(this.options.directory, `fullduplex-spill-${process.pid}-${randomBytes(6).toString("hex")}`)
    return Effect.tryPromise({
      try: async () => {
        const file = await fs.open(name, "wx+", 0o600)
        if (this.closed) {
          // The queue was closed while the open was in flight (an interrupted push): nobody else will.
          await file.close().catch(() => {})
          await fs.unlink(name).catch(() => {})
          throw new Error("the spill queue was closed while its file was being opened")
        }
        this.file = file
        this.filePath = name
        // Unlinked at once where the OS allows it: the bytes live while the handle is open, and nothing is
        // left behind even if the process dies. Elsewhere `close` removes it.
        this.unlinked = await fs.unlink(name).then(
          () => true,
          () => false
        )
        return file
      },
      catch: (err) => this.fail("open", err)
    })
  })

  /** Appends a chunk; waits while memory and the file are both full. */
  push(chunk: Uint8Array): Effect.Effect<void, DuplexError> {
    return Effect.suspend(() => {
      if (chunk.length === 0) return Effect.void
      if (this.fileUnread === 0 && this.memoryBytes + chunk.length <= this.options.memoryBytes) {
        this.memory.push(chunk)
        this.memoryBytes += chunk.length
        this.wake("taker")
        return Effect.void
      }
      // The file's size is what is bounded: offsets restart at zero only once it is drained, so a reader
      // that keeps up only partly must drain it before it grows past `maxFileBytes`.
      if (this.fileUnread === 0 || this.fileWritten + chunk.length <= this.options.maxFileBytes) {
        return this.pushToFile(chunk)
      }
      return Effect.andThen(
        this.wait(
          "pusher",
          () => this.fileUnread === 0 || this.fileWritten + chunk.length <= this.options.maxFileBytes
        ),
        this.push(chunk)
      )
    })
  }

  private pushToFile(chunk: Uint8Array): Effect.Effect<void, DuplexError> {
    return Effect.flatMap(this.openFile, (file) =>
      Effect.suspend(() => {
        if (this.fileUnread === 0) {
          // Everything written was read: start again at the beginning of the file.
          this.fileWritten = 0
          this.fileRead = 0
        }
        const at = this.fileWritten
        return Effect.tryPromise({
          try: () => file.write(chunk, 0, chunk.length, at),
          catch: (err) => this.fail("write", err)
        }).pipe(
          Effect.map(() => {
            this.fileWritten = at + chunk.length
            this.spilledBytes += chunk.length
            this.wake("taker")
          })
        )
      })
    )
  }

  /** No more pushes: `take` returns `undefined` once everything queued was taken. */
  end(): void {
    this.ended = true
    this.wake("taker")
  }

  /** The oldest bytes (from memory first, then from the file), or `undefined` at the end. */
  readonly take: Effect.Effect<Uint8Array | undefined, DuplexError> = Effect.suspend(() => {
    if (this.memoryHead < this.memory.length) {
      const chunk = this.memory[this.memoryHead]!
      this.memory[this.memoryHead++] = undefined as never
      if (this.memoryHead === this.memory.length) {
        this.memory.length = 0
        this.memoryHead = 0
      }
      this.memoryBytes -= chunk.length
      return Effect.succeed(chunk)
    }
    if (this.fileUnread > 0) return this.takeFromFile
    if (this.ended) return Effect.succeed(undefined)
    return Effect.andThen(
      this.wait("taker", () => this.memoryHead < this.memory.length || this.fileUnread > 0 || this.ended),
      this.take
    )
  })

  private readonly takeFromFile: Effect.Effect<Uint8Array, DuplexError> = Effect.suspend(() => {
    const file = this.file!
    const at = this.fileRead
    const length = Math.min(READ_PIECE_BYTES, this.fileUnread)
    const buffer = Buffer.allocUnsafe(length)
    return Effect.tryPromise({
      try: () => file.read(buffer, 0, length, at),
      catch: (err) => this.fail("read", err)
    }).pipe(
      Effect.flatMap(({ bytesRead }) => {
        if (bytesRead === 0) return Effect.fail(this.fail("read", new Error("the spill file is shorter than written")))
        this.fileRead = at + bytesRead
        this.wake("pusher")
        return Effect.succeed(buffer.subarray(0, bytesRead))
      })
    )
  })

  /** Closes and removes the file. */
  readonly close: Effect.Effect<void> = Effect.promise(async () => {
    this.closed = true
    const file = this.file
    this.file = undefined
    if (file !== undefined) await file.close().catch(() => {})
    if (this.filePath !== undefined && !this.unlinked) await fs.unlink(this.filePath).catch(() => {})
  })
}
