/**
 * The server commands: `echo` (`Echo.serve`), `proxy` (`Proxy.serve`) and `serve` (inetd style: each
 * connection piped through a child process of its own). Each prints `listening on HOST:PORT` on stderr
 * once it listens (with `--port 0`, the port the system chose), reports failed connections there, one line
 * each, and runs until SIGINT or SIGTERM, then shuts down gracefully (connections still open get the
 * server's shutdown grace, 10 s) and exits 0. A second signal during the shutdown ends the process at once.
 *
 * @internal
 */
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import type * as Scope from "effect/Scope"
import { Argument, Command, Flag } from "effect/cli"
import { Duplex, DuplexError, Echo, Proxy, Subprocess, Tcp } from "fullduplex"
import { formatAddress, hostPortFlag, listenHost, listenPort, stats } from "./args.js"
import { messageOf, say, stderrIsTerminal, writeStderr } from "./output.js"
import * as Progress from "./progress.js"

/** `echo --policy store`: the largest request echoed whole (64 MiB); a larger one gets an error line. */
export const STORE_MAX_REQUEST_BYTES = 64 * 1024 * 1024

/** `echo --policy spill`: the backlog held in memory per connection (4 MiB); the rest goes to a temporary file. */
export const SPILL_MEMORY_BYTES = 4 * 1024 * 1024

const SIGNALS = ["SIGINT", "SIGTERM"] as const

/**
 * Completes with the first SIGINT or SIGTERM after it starts. While it waits, neither signal ends the
 * process; once it has completed (or is interrupted) they do again, so a second one during the shutdown
 * that follows ends the process at once.
 */
export const terminationSignal: Effect.Effect<NodeJS.Signals> = Effect.callback<NodeJS.Signals>((resume) => {
  const stop = () => SIGNALS.forEach((signal) => process.off(signal, onSignal))
  function onSignal(signal: NodeJS.Signals) {
    stop()
    resume(Effect.succeed(signal))
  }
  SIGNALS.forEach((signal) => process.on(signal, onSignal))
  return Effect.sync(stop)
})

/** A server event worth a line on stderr: a connection that did not complete, an accept or upstream failure. */
const reportEvent =
  (name: string) =>
  (event: Proxy.ProxyEvent): Effect.Effect<void> => {
    switch (event._tag) {
      case "ConnectionClosed": {
        if (event.ending === "completed") return Effect.void
        const why = event.cause === undefined ? "" : `: ${messageOf(Cause.squash(event.cause))}`
        return say(name, `connection #${event.connection.id} from ${event.connection.remote} ${event.ending}${why}`)
      }
      case "UpstreamConnectFailed":
        return say(
          name,
          `connection #${event.connection.id} from ${event.connection.remote}: ${messageOf(event.error)}`
        )
      case "AcceptError":
        return say(name, `accept failed: ${messageOf(event.error)}`)
      default:
        return Effect.void
    }
  }

/** Says where `server` listens, reports progress with `--stats`, and waits for SIGINT or SIGTERM. */
const untilSignal = (
  name: string,
  server: Tcp.Server,
  options: { readonly stats: boolean; readonly what: string }
): Effect.Effect<void, never, Scope.Scope> =>
  Effect.gen(function* () {
    // Listening for the signals before saying so: a SIGTERM right after the line must stop us gracefully.
    const signalled = yield* Effect.forkScoped(terminationSignal, { startImmediately: true })
    yield* say(name, `listening on ${formatAddress(server.address)}, ${options.what}`)
    if (options.stats) {
      yield* Progress.report({
        title: `${name} ${formatAddress(server.address)}`,
        sample: Effect.gen(function* () {
          const counts = yield* server.stats
          return { stats: yield* server.traffic, note: `${counts.active} open, ${counts.accepted} accepted` }
        }),
        inPlace: stderrIsTerminal(),
        write: writeStderr
      })
    }
    const signal = yield* Fiber.join(signalled)
    const { active } = yield* server.stats
    yield* say(name, `${signal}: shutting down${active > 0 ? ` (${active} connections open)` : ""}`)
  })

const policyOf = (name: "stream" | "store" | "spill"): Echo.Policy =>
  name === "store"
    ? Echo.storeAndForward({ maxRequestBytes: STORE_MAX_REQUEST_BYTES })
    : name === "spill"
      ? Echo.spill({ memoryBytes: SPILL_MEMORY_BYTES })
      : Echo.stream()

/** The `echo` command. */
export const echo = Command.make(
  "echo",
  {
    port: listenPort("port").pipe(Flag.withDescription("The port to listen on (0: any free port, printed)")),
    host: listenHost,
    policy: Flag.Literals("policy", ["stream", "store", "spill"]).pipe(
      Flag.withMetavar("stream|store|spill"),
      Flag.withDescription(
        "stream: echo as it reads, and cut a client that stalls both ways for 10 s; store: read up to the " +
          "client's half-close (at most 64 MiB), then echo; spill: echo whatever the client does, the backlog " +
          "beyond 4 MiB in a temporary file"
      ),
      Flag.withDefault("stream")
    ),
    stats
  },
  ({ port, host, policy, stats }) =>
    Effect.scoped(
      Effect.gen(function* () {
        const server = yield* Echo.serve({ host, port, policy: policyOf(policy), onEvent: reportEvent("echo") })
        yield* untilSignal("echo", server, { stats, what: `policy ${policy}` })
      })
    )
).pipe(
  Command.withDescription(
    "The safe echo server: every connection's bytes are sent back, under one of three policies that keep " +
      "it bounded whatever the client does. Runs until SIGINT or SIGTERM, then shuts down gracefully."
  ),
  Command.withShortDescription("The safe echo server (Echo.serve)"),
  Command.withExamples([
    { command: "fullduplex echo --port 4000 --policy spill", description: "Echo on 127.0.0.1:4000" }
  ])
)

/** The `proxy` command. */
export const proxy = Command.make(
  "proxy",
  {
    listen: listenPort("listen").pipe(Flag.withDescription("The port to listen on (0: any free port, printed)")),
    host: listenHost,
    to: hostPortFlag("to").pipe(Flag.withDescription("Where each connection is relayed to")),
    stats
  },
  ({ listen, host, to, stats }) =>
    Effect.scoped(
      Effect.gen(function* () {
        const server = yield* Proxy.serve({ listen: { host, port: listen }, target: to, onEvent: reportEvent("proxy") })
        yield* untilSignal("proxy", server, { stats, what: `relaying to ${formatAddress(to)}` })
      })
    )
).pipe(
  Command.withDescription(
    "A TCP proxy that keeps half-closed conversations whole: a FIN from either side is passed on once every " +
      "byte before it is written, the other direction goes on, and both legs are closed with a lingering close. " +
      "Runs until SIGINT or SIGTERM, then shuts down gracefully."
  ),
  Command.withShortDescription("A TCP proxy that keeps half-closes (Proxy.serve)"),
  Command.withExamples([
    { command: "fullduplex proxy --listen 8080 --to 127.0.0.1:80", description: "Relay 127.0.0.1:8080 to port 80" }
  ])
)

/** A failure that a child's own non-zero exit code explains, rather than a signal we sent it. */
const exitedWithCode = (exit: Exit.Exit<unknown, DuplexError.DuplexError>): boolean => {
  if (Exit.isSuccess(exit)) return false
  const error = Cause.squash(exit.cause)
  return (
    DuplexError.isDuplexError(error) && error.reason._tag === "ProcessFailed" && error.reason.exitCode !== undefined
  )
}

/**
 * One connection through its own child, inetd style: the socket spliced to the child's stdin and stdout
 * (both directions copied at once, so a child that writes as it reads never deadlocks; the client's FIN
 * closes the child's stdin, the child's stdout EOF is the client's FIN), then the child's exit. A child that
 * fails fails the connection with `ProcessFailed`, whose message ends with the tail of its stderr.
 */
const throughChild =
  (command: string, args: ReadonlyArray<string>) =>
  (connection: Duplex.Duplex): Effect.Effect<void, DuplexError.DuplexError> =>
    Effect.scoped(
      Effect.gen(function* () {
        const child = yield* Subprocess.spawn(command, args, { stderr: "tail" })
        const relayed = yield* Effect.exit(Duplex.splice(connection, child))
        const exited = yield* Effect.exit(child.exit)
        // A relay that failed because the child exited non-zero is that exit's fault; a child killed because
        // the relay failed (the client reset) is the relay's.
        if (Exit.isFailure(exited) && (Exit.isSuccess(relayed) || exitedWithCode(exited))) return yield* exited
        yield* relayed
      })
    )

/** The `serve` command. */
export const serve = Command.make(
  "serve",
  {
    port: listenPort("port").pipe(Flag.withDescription("The port to listen on (0: any free port, printed)")),
    host: listenHost,
    command: Argument.String("command").pipe(
      Argument.withMetavar("COMMAND"),
      Argument.withDescription("The command and its arguments, after --"),
      Argument.variadic({ min: 1 })
    ),
    stats
  },
  ({ port, host, command, stats }) =>
    Effect.scoped(
      Effect.gen(function* () {
        const [file, ...args] = command as readonly [string, ...Array<string>]
        const server = yield* Tcp.serve({ host, port, onEvent: reportEvent("serve") }, throughChild(file, args))
        yield* untilSignal("serve", server, { stats, what: `each connection through ${command.join(" ")}` })
      })
    )
).pipe(
  Command.withDescription(
    "Pipe each connection through its own child process, inetd style: the connection is the child's stdin " +
      "and stdout, the client's half-close closes its stdin, its stdout's end half-closes the connection. A " +
      "child that fails is reported on stderr with the end of its stderr. Runs until SIGINT or SIGTERM."
  ),
  Command.withShortDescription("Each connection through a child process of its own, inetd style"),
  Command.withExamples([
    { command: "fullduplex serve --port 4000 -- tr a-z A-Z", description: "Upper-case every connection's bytes" }
  ])
)
