// Per-connection closures by source location (script id : line : column, as the heap snapshot has them; a
// script id is found by the file that has a function at that line and column): argv small, large, N.
import fs from "node:fs"
const load = (file) => {
  const snap = JSON.parse(fs.readFileSync(file))
  const m = snap.snapshot.meta,
    f = m.node_fields,
    nf = f.length
  const types = m.node_types[0]
  const iType = f.indexOf("type"),
    iName = f.indexOf("name")
  const lf = m.location_fields.length
  const by = new Map()
  const locs = snap.locations
  for (let i = 0; i < locs.length; i += lf) {
    const node = locs[i],
      script = locs[i + 1],
      line = locs[i + 2],
      col = locs[i + 3]
    const t = types[snap.nodes[node + iType]]
    if (t !== "closure") continue
    const key = `${script}:${line + 1}:${col + 1} ${snap.strings[snap.nodes[node + iName]]}`
    by.set(key, (by.get(key) ?? 0) + 1)
  }
  return by
}
const a = load(process.argv[2]),
  b = load(process.argv[3]),
  N = Number(process.argv[4])
const rows = []
for (const [k, v] of b) {
  const d = (v - (a.get(k) ?? 0)) / N
  if (d > 0.5) rows.push([d, k])
}
rows.sort((x, y) => y[0] - x[0])
for (const [d, k] of rows.slice(0, 40)) console.log(d.toFixed(2), k)
