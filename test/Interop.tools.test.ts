/**
 * The servers against programs written elsewhere, as a user meets them: OpenBSD `nc` and `socat` as
 * clients of `Echo.serve` (a half-close after the upload, the echo read to the server's FIN, byte-exact),
 * `socat` as the upstream of `Proxy.serve`, and a `socat` client that sends and never reads, cut by the
 * server's `sendTimeout`. `.ci/run` installs both (Debian packages `socat`, `netcat-openbsd`).
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { execa } from "execa"
import { Echo, Proxy, Tcp } from "fullduplex"
import { firstDifference, randomBytes } from "fullduplex/testkit"
import { spawnSync } from "node:child_process"
import { EventLog, freePort, within } from "./helpers.js"

const MiB = 1024 * 1024

const have = (command: string): boolean => spawnSync("sh", ["-c", `command -v ${command}`]).status === 0

/** Fails at once, naming what to install, when a program the tests need is missing. */
const need = (command: string, debianPackage: string) =>
  Effect.sync(() => {
    if (!have(command)) assert.fail(`${command} is not installed: apt-get install -y ${debianPackage} (.ci/run does)`)
  })

const portOf = (address: Tcp.Address): number => ("port" in address ? address.port : -1)

/** Runs a program with `input` on stdin and returns its stdout bytes; bounded, and killed with the scope. */
const run = (file: string, args: ReadonlyArray<string>, input: Uint8Array) =>
  Effect.tryPromise({
    try: (signal) =>
      execa(file, args, { input, encoding: "buffer", cancelSignal: signal, timeout: 20_000, stripFinalNewline: false }),
    catch: (e) => new Error(`${file} ${args.join(" ")}: ${String(e)}`)
  }).pipe(Effect.map((r) => new Uint8Array(r.stdout)))

const assertSameBytes = (got: Uint8Array, expected: Uint8Array, what: string) => {
  assert.strictEqual(got.length, expected.length, `${what}: ${got.length} bytes back, not ${expected.length}`)
  assert.strictEqual(firstDifference(got, expected), -1, `${what}: the bytes differ`)
}

describe("interop with nc and socat", () => {
  it.live("an nc client (-N: shut down after stdin's EOF) gets 1 MiB echoed byte-exact by Echo.serve", () =>
    Effect.gen(function* () {
      yield* need("nc", "netcat-openbsd")
      const server = yield* Echo.serve({ port: 0, onEvent: () => Effect.void })
      const upload = randomBytes(MiB, 1)
      const echoed = yield* run("nc", ["-N", "127.0.0.1", String(portOf(server.address))], upload)
      assertSameBytes(echoed, upload, "nc through Echo.serve")
      const stats = yield* server.stats
      assert.strictEqual(stats.completed, 1, JSON.stringify(stats))
    }).pipe(Effect.scoped, within("30 seconds", "the nc echo"))
  )

  it.live("a socat client (half-closes at stdin's EOF) gets 4 MiB echoed byte-exact by Echo.serve", () =>
    Effect.gen(function* () {
      yield* need("socat", "socat")
      const server = yield* Echo.serve({ port: 0, onEvent: () => Effect.void })
      const upload = randomBytes(4 * MiB, 2)
      const echoed = yield* run("socat", ["-t", "5", "-", `TCP:127.0.0.1:${portOf(server.address)}`], upload)
      assertSameBytes(echoed, upload, "socat through Echo.serve")
    }).pipe(Effect.scoped, within("30 seconds", "the socat echo"))
  )

  it.live("Proxy.serve relays 4 MiB byte-exact to a socat upstream (socat TCP-LISTEN … EXEC:cat)", () =>
    Effect.gen(function* () {
      yield* need("socat", "socat")
      yield* need("nc", "netcat-openbsd")
      const upstreamPort = yield* freePort
      const upstream = execa("socat", [`TCP-LISTEN:${upstreamPort},bind=127.0.0.1,reuseaddr,fork`, "EXEC:cat"], {
        reject: false
      })
      yield* Effect.addFinalizer(() => Effect.promise(async () => void (upstream.kill("SIGKILL"), await upstream)))
      const server = yield* Proxy.serve({
        listen: { port: 0 },
        target: { host: "127.0.0.1", port: upstreamPort },
        onEvent: () => Effect.void
      })
      // socat listens a moment after it starts: the first connects may be refused.
      const upload = randomBytes(4 * MiB, 3)
      let echoed = new Uint8Array(0)
      for (let attempt = 0; attempt < 50 && echoed.length === 0; attempt++) {
        if (attempt > 0) yield* Effect.sleep(100)
        echoed = yield* run("nc", ["-N", "127.0.0.1", String(portOf(server.address))], upload)
      }
      assertSameBytes(echoed, upload, "nc through Proxy.serve to socat")
    }).pipe(Effect.scoped, within("30 seconds", "the proxied echo"))
  )

  it.live("a socat client that sends and never reads is cut by Echo.serve's sendTimeout", () =>
    Effect.gen(function* () {
      yield* need("socat", "socat")
      const events = new EventLog()
      const server = yield* Echo.serve({
        port: 0,
        sendTimeout: "500 millis",
        idleTimeout: "30 seconds",
        onEvent: events.onEvent
      })
      // One-way (-u): socat writes /dev/zero into the connection for ever and never reads it, so the
      // echo backs up; the server's sendTimeout (before the stream policy's 10 s stall) cuts it.
      const deaf = execa("socat", ["-u", "OPEN:/dev/zero", `TCP:127.0.0.1:${portOf(server.address)}`], {
        reject: false,
        timeout: 20_000
      })
      yield* Effect.addFinalizer(() => Effect.promise(async () => void (deaf.kill("SIGKILL"), await deaf)))
      const [closed] = yield* events.waitFor("ConnectionClosed", { timeout: "20 seconds" })
      assert.strictEqual(closed!.ending, "sendTimeout", events.describe())
      const ended = yield* Effect.promise(() => deaf).pipe(within("10 seconds", "socat's end after the cut"))
      assert.notStrictEqual(ended.exitCode, 0, "socat saw its connection reset")
    }).pipe(Effect.scoped, within("40 seconds", "the deaf socat"))
  )
})
