/**
 * Keeps one core busy for the accept-burst rows' "busy core" variant (`benchmarks/accept.ts`), started
 * and stopped by the burst's client (`accept-client.ts`): spins in 20 ms slices, yielding to the event
 * loop between them only so that a `SIGTERM` can stop it. Prints `SPINNING` once it spins, and at the
 * `SIGTERM` `BUSY {"cpuMs","wallMs"}` (its CPU time over its wall time is the share of a core it got).
 * `node:` globals only.
 */
const SLICE_MS = 20

const cpu0 = process.cpuUsage()
const t0 = performance.now()
let stop = false
process.on("SIGTERM", () => {
  stop = true
})

const spin = (): void => {
  const until = performance.now() + SLICE_MS
  while (performance.now() < until) {
    // busy
  }
  if (!stop) {
    setImmediate(spin)
    return
  }
  const cpu = process.cpuUsage(cpu0)
  const figures = { cpuMs: Math.round((cpu.user + cpu.system) / 1000), wallMs: Math.round(performance.now() - t0) }
  process.stdout.write(`BUSY ${JSON.stringify(figures)}\n`)
}

process.stdout.write("SPINNING\n")
spin()
