/**
 * `fullduplex connect HOST:PORT`: stdin to the socket and the socket to stdout, at once, as `nc` does.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import { Command } from "effect/cli"
import { Close, Duplex, Tcp } from "fullduplex"
import * as NodeStream from "node:stream"
import { formatAddress, hostPortArgument, stats } from "./args.js"
import { stderrIsTerminal, writeStderr } from "./output.js"
import * as Progress from "./progress.js"

/**
 * Connects to `target` and relays stdin to it and it to stdout until the connection's EOF.
 *
 * **Details**
 *
 * Two one-way copies run at once, so that neither can hold the other back: stdin to the socket, then a
 * half-close (FIN) at stdin's EOF; the socket to stdout, then stdout flushed. The socket's EOF, once every
 * byte is on stdout, ends the run: a stdin still open (a terminal) is not waited for, what it has not sent
 * is dropped, and the connection is closed with a lingering close (FIN, not a reset). A refused connect or
 * a reset fails with the `DuplexError`, which the runner prints on one line (exit code 1).
 */
export const run = (target: Tcp.TcpAddress, options: { readonly stats: boolean }) =>
  Effect.scoped(
    Effect.gen(function* () {
      const socket = yield* Tcp.connect(target)
      // stdin and stdout as one Node duplex, and that as a Duplex: reads paused while the socket is slow,
      // writes that wait for stdout's 'drain', `end` that waits for stdout's 'finish'.
      const terminal = yield* Duplex.fromNodeDuplex(
        NodeStream.Duplex.from({ readable: process.stdin, writable: process.stdout }),
        { label: "stdin/stdout" }
      )
      if (options.stats) {
        yield* Progress.report({
          title: `connect ${formatAddress(target)}`,
          sample: Effect.map(socket.stats, (stats) => ({ stats })),
          inPlace: stderrIsTerminal(),
          write: writeStderr
        })
      }
      const upload = Stream.run(terminal.readable, socket.sink).pipe(Effect.andThen(socket.end))
      const download = Stream.run(socket.readable, terminal.sink).pipe(Effect.andThen(terminal.end))
      // Done when the download is; an upload failure (the peer reset) fails the run at once.
      yield* Effect.raceFirst(download, Effect.andThen(upload, Effect.never))
      // A FIN rather than the reset the scope's close would send, if stdin had not ended: every byte the peer
      // sent is on stdout, whatever this close meets.
      yield* Effect.ignore(Close.lingering(socket))
    })
  )

/** The `connect` command. */
export const command = Command.make("connect", { target: hostPortArgument("target"), stats }, ({ target, stats }) =>
  run(target, { stats })
).pipe(
  Command.withDescription(
    "Connect to HOST:PORT and relay stdin to it and it to stdout, both at once. stdin's EOF half-closes the " +
      "connection; the connection's EOF, once stdout has every byte, ends the command (exit code 0). A refused " +
      "connect or a reset prints one line on stderr and exits 1."
  ),
  Command.withShortDescription("stdin to HOST:PORT and HOST:PORT to stdout, at once (like nc)"),
  Command.withExamples([
    {
      command: "fullduplex connect 127.0.0.1:4000 < request.bin > reply.bin",
      description: "Upload, then save the reply"
    }
  ])
)
