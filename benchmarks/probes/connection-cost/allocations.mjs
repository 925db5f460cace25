/**
 * A preload for the probe's server: samples every allocation, those already collected included (the
 * inspector's sampling heap profiler), and writes the top allocation sites to `$ALLOC_OUT` at exit:
 *
 *   ALLOC_OUT=/tmp/adapter.txt bash benchmarks/probes/connection-cost/run.sh adapter 5000 \
 *     --import ./benchmarks/probes/connection-cost/allocations.mjs
 *
 * The difference of two modes' totals over the connections is what one connection allocates (the adapter
 * over the fiber mode: about 17.6 KB on 2026-12-04). CPU figures taken with it are not comparable.
 */
import * as inspector from "node:inspector"
import * as fs from "node:fs"
const session = new inspector.Session()
session.connect()
const post = (m, p) => new Promise((res, rej) => session.post(m, p, (e, r) => (e ? rej(e) : res(r))))
await post("HeapProfiler.enable")
await post("HeapProfiler.startSampling", {
  samplingInterval: 512,
  includeObjectsCollectedByMajorGC: true,
  includeObjectsCollectedByMinorGC: true
})
const origExit = process.exit
process.exit = (code) => {
  session.post("HeapProfiler.stopSampling", (err, r) => {
    const self = new Map()
    const walk = (n, stack) => {
      const cf = n.callFrame
      const name = `${cf.functionName || "(anon)"} ${cf.url.split("/").slice(-2).join("/")}:${cf.lineNumber}`
      if (n.selfSize > 0) self.set(name, (self.get(name) ?? 0) + n.selfSize)
      for (const c of n.children) walk(c, stack)
    }
    walk(r.profile.head, [])
    const total = [...self.values()].reduce((a, b) => a + b, 0)
    const lines = [...self]
      .sort((a, b) => b[1] - a[1])
      .slice(0, 40)
      .map(([k, v]) => `${(v / 1e6).toFixed(2).padStart(8)} MB ${((100 * v) / total).toFixed(1).padStart(5)}% ${k}`)
    fs.writeFileSync(
      process.env.ALLOC_OUT ?? "/tmp/alloc.txt",
      `total ${(total / 1e6).toFixed(1)} MB\n` + lines.join("\n") + "\n"
    )
    origExit(code)
  })
}
