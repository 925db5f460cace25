// The server of the connection-heap probe (see run.sh): argv N, kind (raw | tcp | tcp-flat | echo | store | spill |
// shutdown | proxy), snapshot path.
import * as net from "node:net"
import * as v8 from "node:v8"
import { fork, spawn } from "node:child_process"
const N = Number(process.argv[2] ?? 1000)
const kind = process.argv[3] ?? "echo"
const { Effect } = await import("effect")
const { Echo, Proxy, Shutdown, Tcp } = await import("fullduplex")
const out = process.argv[4]
// The proxy's upstream: a raw echo server in a process of its own (its sockets are not on this heap).
const upstreamPort = async () => {
  const up = spawn(process.execPath, [
    "-e",
    'const s=require("net").createServer({allowHalfOpen:true},(c)=>{c.on("error",()=>{});c.pipe(c)});s.listen(0,"127.0.0.1",()=>console.log(s.address().port))'
  ])
  process.on("exit", () => up.kill())
  return Number(await new Promise((r) => up.stdout.once("data", r)))
}
const target = kind === "proxy" ? await upstreamPort() : 0
let port
const ready = new Promise((r) => (port = r))
if (kind === "raw") {
  const srv = net.createServer((s) => {
    s.on("error", () => {})
    s.pipe(s)
  })
  srv.listen(0, "127.0.0.1", () => port(srv.address().port))
} else
  Effect.runFork(
    Effect.gen(function* () {
      const server =
        kind === "echo"
          ? yield* Echo.serve({ host: "127.0.0.1", port: 0, maxConnections: N + 16 })
          : kind === "store"
            ? yield* Echo.serve({
                host: "127.0.0.1",
                port: 0,
                maxConnections: N + 16,
                policy: Echo.storeAndForward({ maxRequestBytes: 1 << 20 })
              })
            : kind === "spill"
              ? yield* Echo.serve({
                  host: "127.0.0.1",
                  port: 0,
                  maxConnections: N + 16,
                  policy: Echo.spill({ memoryBytes: 4 << 20 })
                })
              : kind === "proxy"
                ? yield* Proxy.serve({
                    listen: { host: "127.0.0.1", port: 0, maxConnections: N + 16 },
                    target: { host: "127.0.0.1", port: target }
                  })
                : kind === "shutdown"
                  ? yield* Shutdown.serve({
                      host: "127.0.0.1",
                      port: 0,
                      maxConnections: N + 16,
                      handle: Effect.succeed
                    })
                  : kind === "tcp-flat"
                    ? yield* Tcp.serve({ host: "127.0.0.1", port: 0, maxConnections: N + 16 }, (conn) => {
                        // The same handler without a generator: what Effect.gen itself holds per connection.
                        const drain = Effect.flatMap(conn.read, (c) => (c._tag === "Some" ? drain : Effect.void))
                        return Effect.flatMap(conn.read, (c) =>
                          c._tag === "Some" ? Effect.andThen(conn.write(c.value), drain) : Effect.void
                        )
                      })
                    : yield* Tcp.serve({ host: "127.0.0.1", port: 0, maxConnections: N + 16 }, (conn) =>
                        Effect.gen(function* () {
                          const c = yield* conn.read
                          if (c._tag === "Some") yield* conn.write(c.value)
                          while ((yield* conn.read)._tag === "Some") {}
                        })
                      )
      port(server.address.port)
      yield* Effect.never
    }).pipe(Effect.scoped)
  )
const p = await ready
// A Shutdown server speaks first (its preface): its clients send nothing and wait for that.
const child = fork(new URL("./client.mjs", import.meta.url), [
  String(p),
  String(N),
  kind === "shutdown" ? "0" : "16",
  kind === "store" ? "nowait" : "wait"
])
await new Promise((r) => child.once("message", r))
await new Promise((r) => setTimeout(r, 1000))
globalThis.gc?.()
const mem = process.memoryUsage()
console.log(
  JSON.stringify({
    N,
    kind,
    rssMiB: mem.rss / 1048576,
    heapUsedMiB: mem.heapUsed / 1048576,
    heapTotalMiB: mem.heapTotal / 1048576,
    externalMiB: mem.external / 1048576,
    arrayBuffersMiB: mem.arrayBuffers / 1048576
  })
)
if (out) v8.writeHeapSnapshot(out)
child.kill()
process.exit(0)
