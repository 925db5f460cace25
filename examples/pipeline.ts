/**
 * A shell pipeline, `tr a-z A-Z | sort | uniq -c`, as one duplex: `Subprocess.pipeline` copies each
 * stage's stdout into the next stage's stdin in a fiber of its own, so no stage waits on another's full
 * pipe, and `Duplex.exchange` feeds the first stage while the last one is read. Then `yes | head -n 3`: a
 * stage that exits early stops the endless stage before it, as in a shell, and `exit` reports every stage.
 *
 * Run it with `npx tsx examples/pipeline.ts`.
 */
import { Effect, Sink, Stream } from "effect"
import { Duplex, Subprocess } from "fullduplex"

const program = Effect.scoped(
  Effect.gen(function* () {
    const words = ["pear", "apple", "fig"]
    const lines = new TextEncoder().encode(
      Array.from({ length: 300_000 }, (_, i) => words[i % words.length]).join("\n") + "\n"
    ) // 2 MiB of input, more than every pipe between the stages holds
    const counts = yield* Subprocess.pipeline([
      { command: "tr", args: ["a-z", "A-Z"] },
      { command: "sort" },
      { command: "uniq", args: ["-c"] }
    ])
    const counted = yield* Duplex.exchange(counts, Stream.make(lines), Sink.collect<Uint8Array>())
    yield* counts.exit
    const table = new TextDecoder().decode(Buffer.concat(counted)).trim().split("\n")
    yield* Effect.log(`tr | sort | uniq -c: ${table.map((line) => line.trim()).join(", ")}`)

    // `head` exits after three lines; `yes` is stopped as a shell would stop it, and the pipeline ends.
    const first = yield* Subprocess.pipeline([{ command: "yes" }, { command: "head", args: ["-n", "3"] }])
    const out = yield* Duplex.exchange(first, Stream.empty, Sink.collect<Uint8Array>())
    const statuses = yield* first.exit
    yield* Effect.log(
      `yes | head -n 3: ${JSON.stringify(new TextDecoder().decode(Buffer.concat(out)))}, exit codes ${statuses.map((s) => s.exitCode ?? s.signal).join(", ")}`
    )
  })
)

Effect.runPromise(program)
