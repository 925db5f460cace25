/**
 * Stall detection on a live duplex: the user-space view of a zero window both ways.
 *
 * A connection is stalled when its write side has been held back by the peer (nothing accepted) while
 * its inbound buffer is full (the peer is held back by us): each side waits for the other to read, and
 * neither will. On the wire it is what tcpdump shows as `win 0` in both directions. {@link watch} turns
 * that state, held for longer than a limit, into a typed `StallDetected` error that names both
 * directions' blocked times and buffered bytes.
 *
 * @module fullduplex/Watchdog
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { dual } from "effect/Function"
import type { Duplex } from "./Duplex.js"
import { DuplexError, StallDetected } from "./DuplexError.js"
import { checkFinitePositiveDuration, stalledDirection } from "./internal/errors.js"

/**
 * Options of {@link watch}.
 *
 * **Example** (Watching a connection with a short stall limit)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { type Duplex, Watchdog } from "fullduplex"
 *
 * const options: Watchdog.WatchOptions = { stallTimeout: "2 seconds" }
 * const watched = (conn: Duplex.Duplex, work: Effect.Effect<void>) =>
 *   Effect.raceFirst(work, Watchdog.watch(conn, options))
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface WatchOptions {
  /** How long the stall must last before it is reported. Default {@link DEFAULT_STALL_TIMEOUT} (10 s). */
  readonly stallTimeout?: Duration.Input | undefined
}

/**
 * The default stall limit: 10 s, long enough for a slow but living peer to read something.
 *
 * **Example** (Three times the default limit, for a slow peer)
 *
 * ```ts
 * import { Duration } from "effect"
 * import { Watchdog } from "fullduplex"
 *
 * const patient: Watchdog.WatchOptions = { stallTimeout: Duration.toMillis(Watchdog.DEFAULT_STALL_TIMEOUT) * 3 }
 * ```
 *
 * @category constants
 * @since 0.1.0
 */
export const DEFAULT_STALL_TIMEOUT: Duration.Duration = Duration.seconds(10)

/**
 * Watches a duplex and fails with `DuplexError` reason `StallDetected` once its write side has been
 * blocked by the peer, accepting nothing, while its inbound buffer is full, for longer than
 * `stallTimeout`. Never succeeds.
 *
 * **When to use**
 *
 * Race it with the code that serves a connection (or use {@link guard}): a peer that writes without
 * reading is then cut with a diagnosis instead of holding a connection, a fiber and two buffers forever.
 *
 * **Details**
 *
 * It samples `duplex.stats` about ten times per `stallTimeout`. Only the two-way stall counts: a peer that
 * merely reads slowly (our writes are accepted, bit by bit) or sends nothing (our inbound buffer is not
 * full) is not stalled; bound those with an idle timeout. The error lists both directions: bytes moved,
 * bytes buffered, whether blocked, and for how long in all. Time comes from `Clock`.
 *
 * **Gotchas**
 *
 * Over TCP, progress is what the kernel takes from us, and the kernel takes it in bursts: a blocked
 * writer is woken only once about a third of the socket's send buffer is free again (several MiB on
 * loopback and fast links). A peer that keeps writing while it reads slower than about (send buffer / 3)
 * per `stallTimeout` therefore looks stalled. Choose `stallTimeout` for the slowest reader you mean to
 * serve: with a 4 MiB send buffer and 10 s, that is about 128 KiB/s.
 *
 * **Example** (Cutting a client that never reads its echo)
 *
 * ```ts
 * import { Effect, Stream } from "effect"
 * import { Duplex, Watchdog } from "fullduplex"
 *
 * const echo = (conn: Duplex.Duplex) =>
 *   Effect.raceFirst(
 *     Stream.run(conn.readable, conn.sink),
 *     Watchdog.watch(conn, { stallTimeout: "5 seconds" })
 *   )
 * ```
 *
 * @category watching
 * @since 0.1.0
 */
export const watch = (duplex: Duplex, options: WatchOptions = {}): Effect.Effect<never, DuplexError> =>
  Effect.gen(function* () {
    const invalid = checkFinitePositiveDuration(duplex.label, "stallTimeout", options.stallTimeout)
    if (invalid !== undefined) return yield* invalid
    const stallMillis = Duration.toMillis(options.stallTimeout ?? DEFAULT_STALL_TIMEOUT)
    const pollMillis = Math.max(1, Math.floor(stallMillis / 10))
    let since: number | undefined // when the current two-way stall was first seen
    let acceptedAtStart = 0
    while (true) {
      yield* Effect.sleep(pollMillis)
      const stats = yield* duplex.stats
      const now = yield* Clock.currentTimeMillis
      const stalled = stats.outbound.blocked && stats.inbound.blocked
      if (!stalled || (since !== undefined && stats.outbound.bytes !== acceptedAtStart)) {
        since = stalled ? now : undefined
        acceptedAtStart = stats.outbound.bytes
        continue
      }
      if (since === undefined) {
        since = now
        acceptedAtStart = stats.outbound.bytes
      } else if (now - since >= stallMillis) {
        return yield* new DuplexError({
          reason: new StallDetected({
            label: `${duplex.label}: both directions at a zero window (the peer neither reads nor stops writing)`,
            stalledMillis: now - since,
            directions: [
              stalledDirection(duplex.label, "outbound", stats),
              stalledDirection(duplex.label, "inbound", stats)
            ]
          })
        })
      }
    }
  })

/**
 * Runs `effect` under {@link watch}: the first of the two to finish wins, so a stall interrupts `effect`
 * and fails with `StallDetected`.
 *
 * **Example** (Guarding a handler)
 *
 * ```ts
 * import { Effect, Stream } from "effect"
 * import { Duplex, Watchdog } from "fullduplex"
 *
 * const echo = (conn: Duplex.Duplex) =>
 *   Stream.run(conn.readable, conn.sink).pipe(Watchdog.guard(conn, { stallTimeout: "5 seconds" }))
 * ```
 *
 * @category watching
 * @since 0.1.0
 */
export const guard: {
  (
    duplex: Duplex,
    options?: WatchOptions
  ): <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E | DuplexError, R>
  <A, E, R>(
    effect: Effect.Effect<A, E, R>,
    duplex: Duplex,
    options?: WatchOptions
  ): Effect.Effect<A, E | DuplexError, R>
} = dual(
  (args) => Effect.isEffect(args[0]),
  <A, E, R>(effect: Effect.Effect<A, E, R>, duplex: Duplex, options?: WatchOptions) =>
    Effect.raceFirst(effect, watch(duplex, options))
)
