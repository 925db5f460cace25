/**
 * A leak check for tests: counts the process's open file descriptors and its active handles (sockets,
 * servers, pipes, timers) before a program and waits, after it, until they are back down.
 *
 * @since 0.1.0
 */
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as fs from "node:fs"

/**
 * Handle kinds (`process.getActiveResourcesInfo()` names) the leak check watches by default: what a
 * socket, a server, a child's pipe or a timer leaves behind when it is not closed.
 *
 * **Example** (Watching one more kind of handle)
 *
 * ```ts
 * import { withLeakCheck, WATCHED_HANDLES } from "fullduplex/testkit"
 * import type { Effect } from "effect"
 *
 * declare const program: Effect.Effect<void>
 * const checked = withLeakCheck(program, { handles: [...WATCHED_HANDLES, "FSReqCallback"] })
 * ```
 *
 * @category constants
 * @since 0.1.0
 */
export const WATCHED_HANDLES: ReadonlyArray<string> = [
  "TCPSocketWrap",
  "TCPServerWrap",
  "PipeWrap",
  "PipeServerWrap",
  "ProcessWrap",
  "Timeout"
]

/**
 * What the process holds at one moment.
 *
 * **Example** (Printing what the process holds)
 *
 * ```ts
 * import { resources, type Resources } from "fullduplex/testkit"
 *
 * const now: Resources = resources()
 * console.log(`${now.fds ?? "?"} fds, ${now.handles["TCPSocketWrap"] ?? 0} sockets`)
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface Resources {
  /** Open file descriptors (`/proc/self/fd`), or `undefined` where that cannot be read (not Linux). */
  readonly fds: number | undefined
  /** Active handles of each watched kind. */
  readonly handles: Readonly<Record<string, number>>
}

/**
 * A leak check found more than it started with, after waiting.
 *
 * **Example** (Printing each excess of a failed leak check)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { type LeakDetected, withLeakCheck } from "fullduplex/testkit"
 *
 * declare const program: Effect.Effect<void>
 * const checked = withLeakCheck(program).pipe(
 *   Effect.tapError((error: LeakDetected) => Effect.forEach(error.excess, (line) => Effect.logError(line)))
 * )
 * ```
 *
 * @category errors
 * @since 0.1.0
 */
export class LeakDetected extends Data.TaggedError("LeakDetected")<{
  readonly label: string
  readonly before: Resources
  readonly after: Resources
  /** One line per excess: `"fds: 31 now, 25 before"`, `"TCPSocketWrap: 3 now, 0 before"`. */
  readonly excess: ReadonlyArray<string>
  readonly waitedMillis: number
}> {
  override get message(): string {
    return `${this.label}: leaked after ${this.waitedMillis} ms: ${this.excess.join("; ")}`
  }
}

/**
 * Options of {@link assertNoLeaks} and {@link withLeakCheck}.
 *
 * **Example** (Waiting longer, and tolerating one fd)
 *
 * ```ts
 * import type { Effect } from "effect"
 * import { type LeakCheckOptions, withLeakCheck } from "fullduplex/testkit"
 *
 * declare const program: Effect.Effect<void>
 * const options: LeakCheckOptions = { timeout: "3 seconds", fdSlack: 1, label: "server test" }
 * const checked = withLeakCheck(program, options)
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface LeakCheckOptions {
  /** How long the counts may take to come back down. Default 1 s (Node closes a handle a tick or two after `destroy`). */
  readonly timeout?: Duration.Input | undefined
  /** How many fds above the count before are tolerated (a lazily opened file of the runtime). Default 0. */
  readonly fdSlack?: number | undefined
  /** Handle kinds to watch. Default {@link WATCHED_HANDLES}. */
  readonly handles?: ReadonlyArray<string> | undefined
  /** Name used in the error. Default `"leak check"`. */
  readonly label?: string | undefined
}

const countFds = (): number | undefined => {
  try {
    return fs.readdirSync("/proc/self/fd").length
  } catch {
    return undefined
  }
}

/**
 * What the process holds now: open fds and active handles of each watched kind.
 *
 * **Gotchas**
 *
 * Node counts a timer as an active `Timeout` until its callback has returned, so a count taken in a
 * timer's callback (in a fiber that an Effect sleep resumed, say) includes that timer. {@link withLeakCheck}
 * and {@link assertNoLeaks} count from an immediate's callback, where no timer is firing.
 *
 * **Example** (Counting before and checking after, by hand)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { assertNoLeaks, resources } from "fullduplex/testkit"
 *
 * declare const program: Effect.Effect<void>
 * const checked = Effect.suspend(() => {
 *   const before = resources()
 *   return Effect.andThen(program, assertNoLeaks(before))
 * })
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const resources = (kinds: ReadonlyArray<string> = WATCHED_HANDLES): Resources => {
  const handles: Record<string, number> = Object.fromEntries(kinds.map((k) => [k, 0]))
  for (const kind of process.getActiveResourcesInfo()) if (kind in handles) handles[kind]! += 1
  return { fds: countFds(), handles }
}

/** {@link resources}, counted from an immediate's callback: outside any timer's callback (see its Gotchas). */
const settledResources = (kinds: ReadonlyArray<string>): Effect.Effect<Resources> =>
  Effect.callback<Resources>((resume) => {
    const immediate = setImmediate(() => resume(Effect.succeed(resources(kinds))))
    return Effect.sync(() => clearImmediate(immediate))
  })

const excessOf = (before: Resources, after: Resources, fdSlack: number): Array<string> => {
  const excess: Array<string> = []
  if (before.fds !== undefined && after.fds !== undefined && after.fds > before.fds + fdSlack) {
    excess.push(`fds: ${after.fds} now, ${before.fds} before`)
  }
  for (const [kind, n] of Object.entries(after.handles)) {
    const was = before.handles[kind] ?? 0
    if (n > was) excess.push(`${kind}: ${n} now, ${was} before`)
  }
  return excess
}

/**
 * Waits until the process holds no more fds and watched handles than `before`, and fails with
 * {@link LeakDetected} if it still does after `timeout`. It looks every 10 ms, each time from an
 * immediate that a plain timer schedules: by then that timer has fired and no longer counts (in its own
 * callback it would: Node counts a timer until its callback returns), and an Effect sleep would leave a
 * timer of the runtime's own active at each look.
 *
 * **Example** (A server still running, its connections all gone)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { assertNoLeaks, resources } from "fullduplex/testkit"
 *
 * declare const hundredsOfConnections: Effect.Effect<void>
 *
 * const checked = Effect.gen(function* () {
 *   const before = resources() // the server listens already: its own handles count as "before"
 *   yield* hundredsOfConnections
 *   yield* assertNoLeaks(before, { timeout: "1 second", label: "connections ended" })
 * })
 * ```
 *
 * @category assertions
 * @since 0.1.0
 */
export const assertNoLeaks = (before: Resources, options: LeakCheckOptions = {}): Effect.Effect<void, LeakDetected> =>
  Effect.callback<void, LeakDetected>((resume) => {
    const timeoutMillis = Duration.toMillis(options.timeout ?? Duration.seconds(1))
    const kinds = options.handles ?? WATCHED_HANDLES
    const fdSlack = options.fdSlack ?? 0
    const started = Date.now()
    let timer: ReturnType<typeof setTimeout> | undefined
    let immediate: ReturnType<typeof setImmediate> | undefined
    const look = (): void => {
      immediate = undefined
      const after = resources(kinds)
      const excess = excessOf(before, after, fdSlack)
      if (excess.length === 0) return resume(Effect.void)
      const waitedMillis = Date.now() - started
      if (waitedMillis >= timeoutMillis) {
        return resume(
          Effect.fail(new LeakDetected({ label: options.label ?? "leak check", before, after, excess, waitedMillis }))
        )
      }
      timer = setTimeout(() => {
        timer = undefined
        immediate = setImmediate(look)
      }, 10)
    }
    immediate = setImmediate(look)
    return Effect.sync(() => {
      if (timer !== undefined) clearTimeout(timer)
      if (immediate !== undefined) clearImmediate(immediate)
    })
  })

/**
 * Runs `program`, then checks that every fd and watched handle it opened has been closed within
 * `timeout` of its end, whether it succeeded, failed or was interrupted.
 *
 * **When to use**
 *
 * Around a test that ends connections, sessions or children in many ways: hundreds of ends in one
 * program make a leak of one per end stand out above any noise. Real sockets and timers need a live
 * clock (`it.live`).
 *
 * **Example** (Hundreds of connections, none left open)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { withLeakCheck } from "fullduplex/testkit"
 *
 * declare const oneConnection: Effect.Effect<void>
 *
 * const checked = withLeakCheck(Effect.repeat(oneConnection, { times: 499 }), { label: "500 connections" })
 * // fails LeakDetected("500 connections: leaked after 1000 ms: TCPSocketWrap: 3 now, 0 before") on a leak
 * ```
 *
 * @category assertions
 * @since 0.1.0
 */
export const withLeakCheck = <A, E, R>(
  program: Effect.Effect<A, E, R>,
  options: LeakCheckOptions = {}
): Effect.Effect<A, E | LeakDetected, R> =>
  Effect.flatMap(settledResources(options.handles ?? WATCHED_HANDLES), (before) =>
    Effect.exit(program).pipe(Effect.flatMap((exit) => Effect.andThen(assertNoLeaks(before, options), exit)))
  )
