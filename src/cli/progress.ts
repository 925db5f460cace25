/**
 * `--stats`: the progress of a transfer, from a duplex's (or a server's) stats: bytes, rate and time held
 * back each way, and how long it has run. On a terminal one line is rewritten in place (`\r`) four times a
 * second; elsewhere (a file, a pipe, a log) a plain line is written once a second. A last line, with the
 * average rates, is written when the transfer ends (its scope closes), however it ends.
 *
 * @internal
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type { Duplex } from "fullduplex"

/** Between two progress lines on a terminal, where the line is rewritten in place. */
export const TERMINAL_INTERVAL: Duration.Duration = Duration.millis(250)

/** Between two progress lines written one after the other (not a terminal). */
export const LINE_INTERVAL: Duration.Duration = Duration.seconds(1)

/** ANSI "erase to the end of the line": what is left of a longer line written before. */
const ERASE_TO_END = "\x1b[K"

/** A snapshot to report: both directions, and what else is worth a word (a server's connections). */
export interface Sample {
  readonly stats: Duplex.Stats
  readonly note?: string | undefined
}

/** What {@link report} reports, and where. */
export interface ProgressOptions {
  /** What is measured: `connect 127.0.0.1:4000`, `echo 127.0.0.1:4000`. */
  readonly title: string
  readonly sample: Effect.Effect<Sample>
  /** Rewrite one line in place, as on a terminal (`\r`); otherwise one line after another. */
  readonly inPlace: boolean
  readonly write: (text: string) => Effect.Effect<void>
  /** Default {@link TERMINAL_INTERVAL} in place, {@link LINE_INTERVAL} otherwise. */
  readonly interval?: Duration.Input | undefined
}

const KiB = 1024
const MiB = 1024 * KiB
const GiB = 1024 * MiB

/** Bytes in binary units: `512 B`, `1.5 KiB`, `64.0 MiB`, `1.25 GiB`. */
export const formatBytes = (n: number): string =>
  n < KiB
    ? `${n} B`
    : n < MiB
      ? `${(n / KiB).toFixed(1)} KiB`
      : n < GiB
        ? `${(n / MiB).toFixed(1)} MiB`
        : `${(n / GiB).toFixed(2)} GiB`

const formatSeconds = (millis: number): string => `${(millis / 1000).toFixed(1)} s`

const formatRate = (bytes: number, millis: number): string =>
  millis > 0 ? `${formatBytes(Math.round((bytes * 1000) / millis))}/s` : "-"

const direction = (verb: string, now: Duplex.DirectionStats, bytesSince: number, millisSince: number): string =>
  `${verb} ${formatBytes(now.bytes)} at ${formatRate(bytesSince, millisSince)} (blocked ${formatSeconds(now.blockedMillis)})`

/**
 * One progress line. `since` is the sample the rates are measured from: the previous one while the
 * transfer runs, the first one at the end (average rates).
 */
export const render = (
  title: string,
  elapsedMillis: number,
  sample: Sample,
  since: { readonly stats: Duplex.Stats; readonly millis: number },
  final: boolean
): string => {
  const { outbound, inbound } = sample.stats
  const sent = direction("sent", outbound, outbound.bytes - since.stats.outbound.bytes, since.millis)
  const received = direction("received", inbound, inbound.bytes - since.stats.inbound.bytes, since.millis)
  const note = sample.note === undefined ? "" : `; ${sample.note}`
  return `${title} ${final ? "done after" : "at"} ${formatSeconds(elapsedMillis)}: ${sent}, ${received}${note}`
}

/**
 * Reports progress on `write` until the scope closes, then writes the last line.
 *
 * **Details**
 *
 * Time comes from `Clock`: under `TestClock` the lines come as the clock is adjusted.
 */
export const report = (options: ProgressOptions): Effect.Effect<void, never, Scope.Scope> =>
  Effect.gen(function* () {
    const interval = options.interval ?? (options.inPlace ? TERMINAL_INTERVAL : LINE_INTERVAL)
    const start = yield* Clock.currentTimeMillis
    const first = (yield* options.sample).stats
    let previous = { stats: first, at: start }
    const line = (final: boolean) =>
      Effect.gen(function* () {
        const now = yield* Clock.currentTimeMillis
        const sample = yield* options.sample
        const since = final
          ? { stats: first, millis: now - start }
          : { stats: previous.stats, millis: now - previous.at }
        previous = { stats: sample.stats, at: now }
        return render(options.title, now - start, sample, since, final)
      })
    // Registered before the ticker, so that it runs after the ticker is stopped (finalizers run in reverse).
    yield* Effect.addFinalizer(() =>
      Effect.flatMap(line(true), (text) => options.write(options.inPlace ? `\r${text}${ERASE_TO_END}\n` : `${text}\n`))
    )
    const tick = Effect.flatMap(line(false), (text) =>
      options.write(options.inPlace ? `\r${text}${ERASE_TO_END}` : `${text}\n`)
    )
    yield* Effect.forkScoped(Effect.forever(Effect.andThen(Effect.sleep(interval), tick)), { startImmediately: true })
  })
