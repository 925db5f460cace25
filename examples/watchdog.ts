/**
 * A stalled pipe, caught: the client writes 1 MiB before reading any of its echo, the echo peer is held
 * back by the unread echo, and both 64 KiB buffers fill. Nothing moves again. `Watchdog.guard` turns the
 * two-way stall into `StallDetected` after `stallTimeout`, with a diagnostic that names both directions
 * (blocked, for how long, bytes moved and buffered) instead of a connection that hangs forever.
 *
 * Run it with `npx tsx examples/watchdog.ts`.
 */
import { Effect, Stream } from "effect"
import { Duplex, Watchdog } from "fullduplex"

const program = Effect.scoped(
  Effect.gen(function* () {
    const [client, server] = yield* Duplex.pair({ capacity: 64 * 1024 })

    // The bug: write everything, then read. Nobody reads the echo while this write waits.
    yield* Effect.forkScoped(client.write(new Uint8Array(1024 * 1024)))

    // The echo peer, guarded: it reads a chunk and writes it back, until it cannot write.
    const diagnostic = yield* Stream.run(server.readable, server.sink).pipe(
      Watchdog.guard(server, { stallTimeout: "500 millis" }),
      Effect.as("the echo finished (no stall)"),
      Effect.catchReason("DuplexError", "StallDetected", (stall) => Effect.succeed(stall.message))
    )
    yield* Effect.log(diagnostic)
  })
)

Effect.runPromise(program)
