/**
 * fullduplex through `cat`, matched to `cat-spawn.ts` and `cat-execa.ts`: the same payload in 64 KiB writes of one reused
 * chunk, timed from before the spawn until the child has exited.
 *
 * - `--mode=exchange`: `Subprocess.spawn("cat")`, `Duplex.exchange(proc, Stream.fromIterable(chunks), sink)`,
 *   then `proc.exit` (exit code 0 required).
 * - `--mode=pipethrough`: `Stream.run(Stream.fromIterable(chunks).pipe(Subprocess.pipeThrough("cat")), sink)`
 *   (the output fails unless `cat` exits 0).
 *
 * The sink counts and checks the bytes as the anchors' `'data'` listeners do.
 */
import { Effect, Stream } from "effect"
import { Duplex, Subprocess } from "fullduplex"
import { Meter, mibPerSecond, options, patternChunk, payloadBytes, required } from "../lib/common.js"
import { checkSink, chunksOf, fullduplexUrl } from "../lib/fd.js"

const meter = new Meter("client")
const opts = options()
const mode = required(opts, "mode")
const bytes = payloadBytes(opts)
const chunks = chunksOf(patternChunk(), bytes)

const transfer =
  mode === "exchange"
    ? Effect.gen(function* () {
        const proc = yield* Subprocess.spawn("cat")
        const check = yield* Duplex.exchange(proc, Stream.fromIterable(chunks), checkSink)
        const { exitCode } = yield* proc.exit
        if (exitCode !== 0) throw new Error(`cat exited with ${exitCode}`)
        return check
      })
    : mode === "pipethrough"
      ? Stream.run(Stream.fromIterable(chunks).pipe(Subprocess.pipeThrough("cat")), checkSink)
      : Effect.die(new Error(`unknown --mode=${mode}`))

meter.start()
// Timed until cat has exited, as the anchors; closing the scope is not.
const [check, ms] = await Effect.runPromise(
  Effect.scoped(Effect.map(transfer, (check) => [check, meter.elapsedMs()] as const))
)
check.verify(`cat via Subprocess ${mode}`, bytes)
meter.finish({ fullduplex: fullduplexUrl, bytes, ms, mibps: mibPerSecond(bytes, ms) })
