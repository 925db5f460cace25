/**
 * The `fullduplex` command line: the root command, what `effect/cli` needs of the platform, and the exit
 * codes.
 *
 * | exit code | when |
 * | --- | --- |
 * | 0 | done; `--help`, `--version`; a server stopped by SIGINT or SIGTERM after its graceful shutdown |
 * | 1 | a failure: a refused connect, a reset, an address in use; one line on stderr (the `DuplexError`'s message) |
 * | 2 | bad arguments: the usage and what is wrong with them on stderr |
 *
 * @internal
 */
import * as Cause from "effect/Cause"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FileSystem from "effect/FileSystem"
import * as Layer from "effect/Layer"
import * as Path from "effect/Path"
import * as Sink from "effect/Sink"
import * as Stdio from "effect/Stdio"
import * as Stream from "effect/Stream"
import * as Terminal from "effect/Terminal"
import { CliConfig, CliError, CliOutput, Command, GlobalFlag } from "effect/cli"
import { ChildProcessSpawner } from "effect/process"
import { DuplexError } from "fullduplex"
import * as Connect from "./connect.js"
import * as Demo from "./demo.js"
import { messageOf } from "./output.js"
import * as Servers from "./servers.js"

/** Exit code of a failure. */
export const EXIT_FAILURE = 1

/** Exit code of bad arguments (as in `getopt` tradition: BSD `nc`, GNU tools). */
export const EXIT_USAGE = 2

/** The root command and its subcommands. */
export const command = Command.make("fullduplex").pipe(
  Command.withDescription(
    "Streaming I/O that cannot deadlock: a safe echo server, a client that relays stdin and stdout, a proxy " +
      "that keeps half-closes, connections piped through child processes, and the demo."
  ),
  Command.withSubcommands([Servers.echo, Connect.command, Servers.proxy, Servers.serve, Demo.command])
)

/**
 * Help goes to stdout when asked for (`--help`); with bad arguments, or no command, the usage and the
 * errors go to stderr, so that a script's stdout is never mistaken for output.
 */
const presenter: CliOutput.Presenter = {
  present: (event) =>
    Effect.gen(function* () {
      if (event._tag === "Version" || (event._tag === "Help" && event.reason === "Requested")) {
        return yield* CliOutput.defaultPresenter.present(event)
      }
      const formatter = yield* CliOutput.Formatter
      yield* Console.error(formatter.formatHelpDoc(event.helpDoc))
      if (event._tag === "InvalidInvocation") yield* Console.error(formatter.formatErrors(event.errors))
    })
}

const unsupported = (what: string) => Effect.die(new Error(`fullduplex: ${what} is not supported`))

/**
 * What `effect/cli` asks of the platform, for Node: the arguments, stdout and stderr, the terminal's size.
 * It reads files, spawns processes and prompts only for features the tool does not use (file arguments,
 * the wizard), so those services refuse.
 */
const platform = Layer.mergeAll(
  Path.layer,
  FileSystem.layerNoop({}),
  Layer.succeed(
    Stdio.Stdio,
    Stdio.make({
      args: Effect.sync(() => process.argv.slice(2)),
      stdout: () => Sink.forEach((chunk: string | Uint8Array) => Effect.sync(() => void process.stdout.write(chunk))),
      stderr: () => Sink.forEach((chunk: string | Uint8Array) => Effect.sync(() => void process.stderr.write(chunk))),
      // `connect` reads stdin through fullduplex, not through this service.
      stdin: Stream.die(new Error("fullduplex: stdin is read by the commands themselves")),
      stdinIsTerminal: Effect.sync(() => process.stdin.isTTY === true),
      stdoutIsTerminal: Effect.sync(() => process.stdout.isTTY === true),
      stderrIsTerminal: Effect.sync(() => process.stderr.isTTY === true)
    })
  ),
  Layer.succeed(
    Terminal.Terminal,
    Terminal.make({
      columns: Effect.sync(() => process.stdout.columns ?? 80),
      rows: Effect.sync(() => process.stdout.rows ?? 24),
      size: unsupported("watching the terminal's size"),
      readInput: unsupported("reading keys"),
      readLine: unsupported("prompting"),
      display: (text) => Effect.sync(() => void process.stdout.write(text))
    })
  ),
  Layer.succeed(
    ChildProcessSpawner.ChildProcessSpawner,
    ChildProcessSpawner.make(() => unsupported("effect/cli's child processes"))
  ),
  // The built-in flags but the wizard, which prompts.
  CliConfig.layer({ builtIns: [GlobalFlag.Help, GlobalFlag.Version, GlobalFlag.Completions] }),
  CliOutput.layerPresenter(presenter)
)

/** The exit code of a run that failed, once its failure is on stderr (a usage error is there already). */
const reportFailure = (cause: Cause.Cause<unknown>): Effect.Effect<number> => {
  if (Cause.hasInterruptsOnly(cause)) return Effect.succeed(130)
  const error = Cause.squash(cause)
  if (CliError.isCliError(error)) return Effect.succeed(EXIT_USAGE)
  if (DuplexError.isDuplexError(error)) return Effect.as(Console.error(`fullduplex: ${messageOf(error)}`), EXIT_FAILURE)
  return Effect.as(Console.error(`fullduplex: ${Cause.pretty(cause)}`), EXIT_FAILURE)
}

/** Runs the tool with `args` (without `node` and the script); succeeds with the exit code. */
export const run = (args: ReadonlyArray<string>, version: string): Effect.Effect<number> =>
  Command.runWith(command, { version })(args).pipe(
    Effect.as(0),
    Effect.catchCause(reportFailure),
    Effect.provide(platform)
  )

/** Writes what is pending on stdout and stderr, then exits with `code`. */
const flushAndExit = (code: number): void => {
  let pending = 2
  const done = () => {
    if (--pending === 0) process.exit(code)
  }
  for (const stream of [process.stdout, process.stderr]) {
    if (stream.writableEnded || stream.destroyed) done()
    else stream.write("", done)
  }
}

/**
 * The process's main: runs the tool on `process.argv` and exits with its code. The process is kept alive
 * while the run lasts, and exits when it ends, even if something still holds the event loop (a terminal on
 * stdin).
 */
export const main = (version: string): void => {
  const keepAlive = setInterval(() => {}, 2 ** 31 - 1)
  const fiber = Effect.runFork(run(process.argv.slice(2), version))
  fiber.addObserver((exit) => {
    clearInterval(keepAlive)
    flushAndExit(Exit.isSuccess(exit) ? exit.value : EXIT_FAILURE)
  })
}
