/**
 * What the accept-burst rows (`benchmarks/accept.ts`) share: the server's measurement of a burst of
 * connections (CPU time from the end of the warm-up to the last connection closed) and the kernel's
 * accept-queue counters. Imports nothing but `node:` modules, like `common.ts`, so that the raw `net`
 * server and the client load neither `effect` nor `fullduplex`.
 */
import * as fs from "node:fs"

const round1 = (x: number): number => Math.round(x * 10) / 10

// ---------------------------------------------------------------------------------------------------
// the kernel's counters
// ---------------------------------------------------------------------------------------------------

/**
 * The `TcpExt` counters of `/proc/net/netstat` that say the kernel turned connections away:
 *
 * - `ListenOverflows`: a handshake completed (or a SYN came) while a listener's accept queue was full;
 * - `ListenDrops`: every SYN or final ACK dropped at a listener, overflows included;
 * - `TCPReqQFullDrop` / `TCPReqQFullDoCookies`: the SYN queue was full (dropped, or answered with a cookie).
 *
 * System-wide (every listener of this network namespace), so a delta counts any other listener too.
 */
export const NETSTAT_COUNTERS = ["ListenOverflows", "ListenDrops", "TCPReqQFullDrop", "TCPReqQFullDoCookies"] as const
export type NetstatCounter = (typeof NETSTAT_COUNTERS)[number]
export type Netstat = Readonly<Record<NetstatCounter, number>>

/** The counters now; all `NaN` where `/proc/net/netstat` cannot be read (not Linux). */
export const readNetstat = (): Netstat => {
  const out = Object.fromEntries(NETSTAT_COUNTERS.map((k) => [k, Number.NaN])) as Record<NetstatCounter, number>
  let text: string
  try {
    text = fs.readFileSync("/proc/net/netstat", "utf8")
  } catch {
    return out
  }
  // Lines come in pairs: "TcpExt: Name Name …" then "TcpExt: 1 2 …".
  const lines = text.split("\n")
  for (let i = 0; i + 1 < lines.length; i++) {
    if (!lines[i]!.startsWith("TcpExt:") || !lines[i + 1]!.startsWith("TcpExt:")) continue
    const names = lines[i]!.split(/\s+/).slice(1)
    const values = lines[i + 1]!.split(/\s+/).slice(1).map(Number)
    for (const k of NETSTAT_COUNTERS) {
      const at = names.indexOf(k)
      if (at >= 0) out[k] = values[at]!
    }
    break
  }
  return out
}

/** `after − before`, counter by counter. */
export const netstatDelta = (before: Netstat, after: Netstat): Netstat =>
  Object.fromEntries(NETSTAT_COUNTERS.map((k) => [k, after[k] - before[k]])) as Record<NetstatCounter, number>

// ---------------------------------------------------------------------------------------------------
// the server's side of a burst
// ---------------------------------------------------------------------------------------------------

/** How often a server looks at its counters: the precision of the burst's end as the server sees it. */
const POLL_MS = 5

/** A burst that stops making progress for this long ends the measurement as incomplete. */
const QUIET_MS = 10_000

export interface BurstCounts {
  /** Connections accepted so far (by fullduplex's counts, refused ones too: the kernel handed them over). */
  readonly accepted: number
  /** Connections closed so far, however they ended. */
  readonly closed: number
}

/** What {@link watchBurst} reports. */
export interface BurstFigures {
  /** Every connection of the warm-up and the burst closed (else the server stopped waiting, see `QUIET_MS`). */
  readonly complete: boolean
  readonly warmupConnections: number
  /** Connections closed during the measured section (the burst's, when complete). */
  readonly burstConnections: number
  /** CPU ms (user + system, all threads) from the warm-up's last close to the burst's last close. */
  readonly burstCpuMs: number
  /** `burstCpuMs` per burst connection, in µs: the figure of the rows. */
  readonly cpuUsPerConnection: number
  /** CPU µs per connection of the warm-up (cold: the first connections of the process, in small batches). */
  readonly warmupCpuUsPerConnection: number
  /** From the first burst connection the server saw accepted to the last closed (± the poll interval). */
  readonly serverBurstMs: number
  /** The most connections open at once that a poll saw. */
  readonly peakActive: number
}

const cpuMillis = (since?: NodeJS.CpuUsage): number => {
  const u = process.cpuUsage(since)
  return (u.user + u.system) / 1000
}

/**
 * Watches a server's counters every few milliseconds and resolves once `warmup + connections`
 * connections have closed: the CPU time is taken when the warm-up's connections have all closed (the
 * client waits a moment before its burst) and again when the burst's have. Between the two the server is
 * idle but for the burst, so its CPU time over that section is what the burst cost it. Start it once the
 * server listens.
 */
export const watchBurst = (warmup: number, connections: number, counts: () => BurstCounts): Promise<BurstFigures> =>
  new Promise((resolve) => {
    const cpuStart = process.cpuUsage()
    /** The CPU usage when the warm-up's last connection closed (at once without a warm-up). */
    let cpuAtWarmup: NodeJS.CpuUsage | undefined = warmup === 0 ? cpuStart : undefined
    let warmupCpuMs = 0
    let firstAcceptAt: number | undefined
    let lastChange = performance.now()
    let lastClosed = -1
    let peakActive = 0
    const finish = (complete: boolean, closed: number) => {
      clearInterval(timer)
      const burstCpuMs = cpuAtWarmup === undefined ? Number.NaN : cpuMillis(cpuAtWarmup)
      const burstConnections = Math.max(0, closed - warmup)
      resolve({
        complete,
        warmupConnections: warmup,
        burstConnections,
        burstCpuMs: round1(burstCpuMs),
        cpuUsPerConnection: round1((burstCpuMs * 1000) / burstConnections),
        warmupCpuUsPerConnection: warmup === 0 ? 0 : round1((warmupCpuMs * 1000) / warmup),
        serverBurstMs: firstAcceptAt === undefined ? Number.NaN : Math.round(performance.now() - firstAcceptAt),
        peakActive
      })
    }
    const timer = setInterval(() => {
      const { accepted, closed } = counts()
      const now = performance.now()
      if (accepted - closed > peakActive) peakActive = accepted - closed
      if (cpuAtWarmup === undefined && closed >= warmup) {
        cpuAtWarmup = process.cpuUsage()
        warmupCpuMs = (cpuAtWarmup.user + cpuAtWarmup.system - cpuStart.user - cpuStart.system) / 1000
      }
      if (firstAcceptAt === undefined && accepted > warmup) firstAcceptAt = now
      if (closed >= warmup + connections) return finish(true, closed)
      if (closed !== lastClosed) {
        lastClosed = closed
        lastChange = now
      } else if (closed > 0 && now - lastChange > QUIET_MS) {
        return finish(false, closed)
      }
    }, POLL_MS)
  })
