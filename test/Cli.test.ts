/**
 * The `fullduplex` command-line tool, driven as a user drives it: each command a process of its own (the
 * TypeScript entry run with tsx; test/package.test.ts runs the built bin from the packed package), against
 * clients and servers written elsewhere: OpenBSD `nc`, `socat` and plain Node sockets. Every server prints
 * `listening on 127.0.0.1:PORT` on stderr (started with `--port 0`, it tells the port the system chose); every
 * process is bounded in time and killed with its test's scope.
 */
import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Exit, Scope } from "effect"
import { TestClock, TestConsole } from "effect/testing"
import { execa, type ResultPromise } from "execa"
import { firstDifference, randomBytes } from "fullduplex/testkit"
import { spawnSync } from "node:child_process"
import * as net from "node:net"
import { fileURLToPath } from "node:url"
import * as Main from "../src/cli/main.js"
import * as Progress from "../src/cli/progress.js"
import { freePort, within } from "./helpers.js"

const MiB = 1024 * 1024
const entry = fileURLToPath(new URL("../src/cli.ts", import.meta.url))
const cliArgs = (args: ReadonlyArray<string>) => ["--import", "tsx", entry, ...args]

const have = (command: string): boolean => spawnSync("sh", ["-c", `command -v ${command}`]).status === 0
const need = (command: string, debianPackage: string) =>
  Effect.sync(() => {
    if (!have(command)) assert.fail(`${command} is not installed: apt-get install -y ${debianPackage} (.ci/run does)`)
  })

/** A process run to its end: stdout as bytes, stderr as text. Killed if the scope closes first. */
const run = (file: string, args: ReadonlyArray<string>, input?: Uint8Array) =>
  Effect.tryPromise({
    try: (signal) =>
      execa(file, args, {
        reject: false,
        encoding: "buffer",
        stripFinalNewline: false,
        cancelSignal: signal,
        timeout: 20_000,
        ...(input === undefined ? { stdin: "ignore" as const } : { input })
      }),
    catch: (e) => new Error(`${file} ${args.join(" ")}: ${String(e)}`)
  }).pipe(
    Effect.map((r) => ({
      exitCode: r.exitCode,
      stdout: new Uint8Array(r.stdout),
      stderr: new TextDecoder().decode(r.stderr)
    }))
  )

const fullduplex = (args: ReadonlyArray<string>, input?: Uint8Array) => run("node", cliArgs(args), input)

const serverOptions = { reject: false, stdin: "ignore", stdout: "ignore" } as const

interface Running {
  readonly port: number
  readonly process: ResultPromise<typeof serverOptions>
  readonly stderr: () => string
}

/**
 * Starts a server command and waits for its `listening on` line; the scope stops it (SIGTERM, then SIGKILL
 * after 5 s) and waits for its exit.
 */
const server = (args: ReadonlyArray<string>): Effect.Effect<Running, Error, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.tryPromise({
      try: () => {
        const child = execa("node", cliArgs(args), serverOptions)
        let stderr = ""
        return new Promise<Running>((resolve, reject) => {
          child.stderr!.on("data", (chunk: Buffer) => {
            stderr += chunk.toString()
            const listening = /listening on 127\.0\.0\.1:(\d+)/.exec(stderr)
            if (listening !== null) resolve({ port: Number(listening[1]), process: child, stderr: () => stderr })
          })
          void child.then((r) => reject(new Error(`fullduplex ${args.join(" ")} exited (${r.exitCode}): ${stderr}`)))
        })
      },
      catch: (e) => (e instanceof Error ? e : new Error(String(e)))
    }).pipe(within("20 seconds", `fullduplex ${args.join(" ")} listening`)),
    ({ process }) =>
      Effect.promise(async () => {
        process.kill("SIGTERM")
        const force = setTimeout(() => process.kill("SIGKILL"), 5000)
        await process
        clearTimeout(force)
      })
  )

const assertSameBytes = (got: Uint8Array, expected: Uint8Array, what: string) => {
  assert.strictEqual(got.length, expected.length, `${what}: ${got.length} bytes back, not ${expected.length}`)
  assert.strictEqual(firstDifference(got, expected), -1, `${what}: the bytes differ`)
}

/** A plain Node server for one test, closed with the scope. */
const nodeServer = (onConnection: (socket: net.Socket) => void) =>
  Effect.acquireRelease(
    Effect.callback<net.Server>((resume) => {
      const s = net.createServer({ allowHalfOpen: true }, (socket) => {
        socket.on("error", () => {})
        onConnection(socket)
      })
      s.listen(0, "127.0.0.1", () => resume(Effect.succeed(s)))
    }),
    (s) => Effect.callback<void>((resume) => void s.close(() => resume(Effect.void)))
  ).pipe(Effect.map((s) => (s.address() as net.AddressInfo).port))

describe("fullduplex (the command-line tool)", () => {
  it.live("--help lists the commands on stdout (exit 0); bad arguments print the usage on stderr (exit 2)", () =>
    Effect.gen(function* () {
      const [help, bad] = yield* Effect.all([fullduplex(["--help"]), fullduplex(["connect", "nohost"])], {
        concurrency: 2
      })
      assert.strictEqual(help!.exitCode, 0, help!.stderr)
      const text = new TextDecoder().decode(help!.stdout)
      for (const command of ["echo", "connect", "proxy", "serve", "demo"]) assert.include(text, command)
      assert.strictEqual(bad!.exitCode, 2, bad!.stderr)
      assert.match(bad!.stderr, /USAGE[\s\S]*Invalid value for argument <target>: "nohost"/)
      assert.strictEqual(bad!.stdout.length, 0, "usage on stdout")
    }).pipe(within("30 seconds", "the help and the usage"))
  )

  it.live("connect relays 64 MiB to echo and back byte-exact, and --stats reports the transfer", () =>
    Effect.gen(function* () {
      const echo = yield* server(["echo", "--port", "0"])
      const upload = randomBytes(64 * MiB, 1)
      const result = yield* fullduplex(["connect", `127.0.0.1:${echo.port}`, "--stats"], upload)
      assert.strictEqual(result.exitCode, 0, result.stderr)
      assertSameBytes(result.stdout, upload, "connect through echo")
      // Not a terminal: plain lines, the last one with the totals.
      assert.notInclude(result.stderr, "\r")
      assert.match(
        result.stderr,
        new RegExp(`connect 127\\.0\\.0\\.1:${echo.port} done after [\\d.]+ s: sent 64\\.0 MiB`)
      )
      assert.match(result.stderr, /received 64\.0 MiB at [\d.]+ [KMG]?i?B\/s \(blocked [\d.]+ s\)/)
    }).pipe(Effect.scoped, within("60 seconds", "64 MiB through connect and echo"))
  )

  it.live("echo serves an nc client (-N) byte-exact, under each policy", () =>
    Effect.gen(function* () {
      yield* need("nc", "netcat-openbsd")
      yield* Effect.forEach(
        ["stream", "store", "spill"],
        (policy, i) =>
          Effect.gen(function* () {
            const echo = yield* server(["echo", "--port", "0", "--policy", policy])
            const upload = randomBytes(4 * MiB, 10 + i)
            const result = yield* run("nc", ["-N", "127.0.0.1", String(echo.port)], upload)
            assertSameBytes(result.stdout, upload, `nc through echo --policy ${policy}`)
          }).pipe(Effect.scoped),
        { concurrency: "unbounded" }
      )
    }).pipe(within("60 seconds", "nc through the three policies"))
  )

  it.live("proxy in front of echo gives a half-closing socat client all its bytes back", () =>
    Effect.gen(function* () {
      yield* need("socat", "socat")
      const echo = yield* server(["echo", "--port", "0"])
      const proxy = yield* server(["proxy", "--listen", "0", "--to", `127.0.0.1:${echo.port}`])
      const upload = randomBytes(4 * MiB, 2)
      // socat half-closes the connection at stdin's EOF and reads until the proxy's FIN.
      const result = yield* run("socat", ["-t", "10", "-", `TCP:127.0.0.1:${proxy.port}`], upload)
      assert.strictEqual(result.exitCode, 0, result.stderr)
      assertSameBytes(result.stdout, upload, "socat through proxy and echo")
    }).pipe(Effect.scoped, within("60 seconds", "socat through the proxy"))
  )

  it.live("serve -- cat echoes each connection through a child of its own", () =>
    Effect.gen(function* () {
      yield* need("nc", "netcat-openbsd")
      const served = yield* server(["serve", "--port", "0", "--", "cat"])
      const uploads = [randomBytes(2 * MiB, 3), randomBytes(MiB, 4)]
      const results = yield* Effect.all(
        uploads.map((upload) => run("nc", ["-N", "127.0.0.1", String(served.port)], upload)),
        { concurrency: "unbounded" }
      )
      results.forEach((result, i) => assertSameBytes(result.stdout, uploads[i]!, `nc through serve -- cat (#${i})`))
    }).pipe(Effect.scoped, within("60 seconds", "serve -- cat"))
  )

  it.live("serve reports a child that fails on stderr, with the end of the child's stderr", () =>
    Effect.gen(function* () {
      yield* need("nc", "netcat-openbsd")
      const served = yield* server([
        "serve",
        "--port",
        "0",
        "--",
        "sh",
        "-c",
        "cat > /dev/null; echo 'no such table: t' >&2; exit 3"
      ])
      yield* run("nc", ["-N", "127.0.0.1", String(served.port)], new TextEncoder().encode("select * from t\n"))
      const line = yield* Effect.gen(function* () {
        while (true) {
          const found = served
            .stderr()
            .split("\n")
            .find((l) => l.includes("exited with code 3"))
          if (found !== undefined) return found
          yield* Effect.sleep(20)
        }
      }).pipe(within("10 seconds", "the child's failure on serve's stderr"))
      assert.match(line, /^fullduplex serve: connection #1 from 127\.0\.0\.1:\d+ failed: /)
      assert.include(line, "no such table: t")
    }).pipe(Effect.scoped, within("30 seconds", "a failing child"))
  )

  it.live("connect ends at the connection's EOF, with its stdin still open", () =>
    Effect.gen(function* () {
      const port = yield* nodeServer((socket) => socket.end("hello from the server\n"))
      const client = execa("node", cliArgs(["connect", `127.0.0.1:${port}`]), { reject: false, stdin: "pipe" })
      yield* Effect.addFinalizer(() => Effect.promise(async () => void (client.kill("SIGKILL"), await client)))
      const result = yield* Effect.promise(() => client).pipe(within("20 seconds", "connect's exit"))
      assert.strictEqual(result.exitCode, 0, String(result.stderr))
      assert.strictEqual(result.stdout, "hello from the server")
    }).pipe(Effect.scoped)
  )

  it.live("connect to a port nobody listens on prints one line on stderr and exits 1", () =>
    Effect.gen(function* () {
      const port = yield* freePort
      const result = yield* fullduplex(["connect", `127.0.0.1:${port}`], new Uint8Array(0))
      assert.strictEqual(result.exitCode, 1, result.stderr)
      assert.strictEqual(result.stderr.trimEnd().split("\n").length, 1, result.stderr)
      assert.match(result.stderr, /^fullduplex: connect to 127\.0\.0\.1:\d+ .*ECONNREFUSED/)
    }).pipe(Effect.scoped, within("20 seconds", "a refused connect"))
  )

  it.live("connect reset by its peer prints one line on stderr and exits 1", () =>
    Effect.gen(function* () {
      const port = yield* nodeServer((socket) => socket.once("data", () => socket.resetAndDestroy()))
      const result = yield* fullduplex(["connect", `127.0.0.1:${port}`], randomBytes(MiB, 5))
      assert.strictEqual(result.exitCode, 1, result.stderr)
      assert.strictEqual(result.stderr.trimEnd().split("\n").length, 1, result.stderr)
      assert.match(result.stderr, /^fullduplex: .*(ECONNRESET|EPIPE)/)
    }).pipe(Effect.scoped, within("20 seconds", "a reset"))
  )

  it.live("a server stops gracefully on SIGTERM and exits 0", () =>
    Effect.gen(function* () {
      const echo = yield* server(["echo", "--port", "0"])
      echo.process.kill("SIGTERM")
      const result = yield* Effect.promise(() => echo.process).pipe(within("15 seconds", "echo's exit"))
      assert.strictEqual(result.exitCode, 0, echo.stderr())
      assert.include(echo.stderr(), "fullduplex echo: SIGTERM: shutting down")
    }).pipe(Effect.scoped)
  )
})

describe("the command line's parsing (in process)", () => {
  it.effect("every command has a --help of its own, on stdout", () =>
    Effect.forEach(["echo", "connect", "proxy", "serve", "demo"], (command) =>
      Effect.gen(function* () {
        const code = yield* Main.run([command, "--help"], "0.0.0")
        const out = (yield* TestConsole.logLines).join("\n")
        assert.strictEqual(code, 0, `${command} --help`)
        assert.include(out, `fullduplex ${command}`)
        assert.include(out, "--help")
      }).pipe(Effect.provide(TestConsole.layer))
    )
  )

  it.effect("bad arguments give exit code 2, the usage and the error on stderr, nothing on stdout", () =>
    Effect.forEach(
      [
        [[], "USAGE"],
        [["bogus"], 'Unknown subcommand "bogus"'],
        [["echo"], "Missing required flag: --port"],
        [["echo", "--port", "70000"], "a port from 0 to 65535"],
        [["echo", "--port", "0", "--policy", "fast"], "--policy"],
        [["connect", "127.0.0.1:0"], "HOST:PORT"],
        [["connect"], "Missing required argument"],
        [["proxy", "--listen", "0"], "Missing required flag: --to"],
        [["serve", "--port", "0"], "Missing required argument: command"]
      ] as const,
      ([args, says]) =>
        Effect.gen(function* () {
          const code = yield* Main.run(args, "0.0.0")
          const errors = (yield* TestConsole.errorLines).join("\n")
          const what = `fullduplex ${args.join(" ")}`
          assert.strictEqual(code, 2, `${what}: ${errors}`)
          assert.include(errors, "USAGE", what)
          assert.include(errors, says, what)
          assert.deepStrictEqual(yield* TestConsole.logLines, [], `${what} wrote to stdout`)
        }).pipe(Effect.provide(TestConsole.layer))
    )
  )
})

describe("--stats", () => {
  const direction = (bytes: number) => ({ bytes, buffered: 0, peakBuffered: 0, blocked: false, blockedMillis: 0 })
  const progress = (inPlace: boolean) =>
    Effect.gen(function* () {
      let bytes = 0
      let written = ""
      const scope = yield* Scope.make()
      yield* Progress.report({
        title: "connect 127.0.0.1:4000",
        sample: Effect.sync(() => ({ stats: { outbound: direction(bytes), inbound: direction(bytes / 2) } })),
        inPlace,
        write: (text) => Effect.sync(() => void (written += text))
      }).pipe(Scope.provide(scope))
      for (let second = 1; second <= 3; second++) {
        bytes += MiB
        yield* TestClock.adjust(Duration.seconds(1))
      }
      yield* Scope.close(scope, Exit.void) // the last line
      return written
    })

  it.effect("writes a line a second when stderr is not a terminal", () =>
    Effect.gen(function* () {
      const written = yield* progress(false)
      const lines = written.trimEnd().split("\n")
      assert.notInclude(written, "\r")
      assert.isAtLeast(lines.length, 3, written)
      assert.include(lines[0], "connect 127.0.0.1:4000 at 1.0 s: sent 1.0 MiB at 1.0 MiB/s (blocked 0.0 s)")
      assert.include(lines[0], "received 512.0 KiB at 512.0 KiB/s")
    })
  )

  it.effect("rewrites one line in place on a terminal", () =>
    Effect.gen(function* () {
      const written = yield* progress(true)
      assert.isTrue(written.startsWith("\r"), JSON.stringify(written))
      assert.notInclude(written.trimEnd(), "\n")
      assert.include(written, "\x1b[K")
    })
  )
})
