/**
 * The bytes a server's connections have moved, for `server.traffic`: the connections that closed, as they
 * ended, plus the open ones, as they are now.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import type { DirectionStats, Duplex, Stats } from "../Duplex.js"

interface Totals {
  bytes: number
  peakBuffered: number
  blockedMillis: number
}

const totals = (): Totals => ({ bytes: 0, peakBuffered: 0, blockedMillis: 0 })

const add = (into: Totals, stats: DirectionStats): void => {
  into.bytes += stats.bytes
  into.blockedMillis += stats.blockedMillis
  if (stats.peakBuffered > into.peakBuffered) into.peakBuffered = stats.peakBuffered
}

/** @internal */
export class Traffic {
  private readonly open = new Set<Duplex>()
  private readonly closedInbound = totals()
  private readonly closedOutbound = totals()

  /** A connection's duplex, from when it is made. */
  opened(duplex: Duplex): void {
    this.open.add(duplex)
  }

  /** A connection's end, with its last stats (`duplex` is undefined when it never had one). */
  closed(duplex: Duplex | undefined, stats: Stats): void {
    if (duplex !== undefined) this.open.delete(duplex)
    add(this.closedInbound, stats.inbound)
    add(this.closedOutbound, stats.outbound)
  }

  /**
   * Both directions over every connection: `bytes` and `blockedMillis` summed; `buffered` summed and
   * `blocked` (any) over the open connections now; `peakBuffered` the most one connection held.
   */
  readonly snapshot: Effect.Effect<Stats> = Effect.suspend(() =>
    Effect.map(
      Effect.forEach(this.open, (duplex) => duplex.stats),
      (live) => ({
        inbound: sum(
          this.closedInbound,
          live.map((s) => s.inbound)
        ),
        outbound: sum(
          this.closedOutbound,
          live.map((s) => s.outbound)
        )
      })
    )
  )
}

const sum = (closed: Totals, live: ReadonlyArray<DirectionStats>): DirectionStats => {
  const all = { ...closed }
  let buffered = 0
  let blocked = false
  for (const stats of live) {
    add(all, stats)
    buffered += stats.buffered
    blocked ||= stats.blocked
  }
  return { bytes: all.bytes, buffered, peakBuffered: all.peakBuffered, blocked, blockedMillis: all.blockedMillis }
}
