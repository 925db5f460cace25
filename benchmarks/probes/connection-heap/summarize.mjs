// Per-connection difference of two heap snapshots by object kind (self sizes): argv small, large, N, rows.
import fs from "node:fs"
const summarize = (file) => {
  const snap = JSON.parse(fs.readFileSync(file))
  const f = snap.snapshot.meta.node_fields,
    nf = f.length
  const types = snap.snapshot.meta.node_types[0]
  const iType = f.indexOf("type"),
    iName = f.indexOf("name"),
    iSize = f.indexOf("self_size")
  const nodes = snap.nodes,
    strings = snap.strings
  const by = new Map()
  for (let i = 0; i < nodes.length; i += nf) {
    const t = types[nodes[i + iType]]
    const name = t === "object" || t === "closure" ? `${t}:${strings[nodes[i + iName]]}` : t
    const e = by.get(name) ?? { n: 0, size: 0 }
    e.n++
    e.size += nodes[i + iSize]
    by.set(name, e)
  }
  return by
}
const a = summarize(process.argv[2]),
  b = summarize(process.argv[3])
const N = Number(process.argv[4])
const rows = []
for (const [k, v] of b) {
  const u = a.get(k) ?? { n: 0, size: 0 }
  const dn = v.n - u.n,
    ds = v.size - u.size
  if (ds > 0) rows.push([k, dn / N, ds / N])
}
rows.sort((x, y) => y[2] - x[2])
let tot = 0
for (const r of rows) tot += r[2]
console.log("per-connection heap bytes (self sizes):", tot.toFixed(0))
for (const r of rows.slice(0, Number(process.argv[5] ?? 40)))
  console.log(r[2].toFixed(0).padStart(7), r[1].toFixed(2).padStart(6), r[0])
