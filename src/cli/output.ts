/**
 * What the command-line tool writes besides the bytes it relays: messages and progress, all on stderr,
 * so that stdout carries only data (`connect`'s received bytes, `demo`'s report).
 *
 * @internal
 */
import * as Effect from "effect/Effect"

/** Whether stderr is a terminal (progress is then rewritten in place). */
export const stderrIsTerminal = (): boolean => process.stderr.isTTY === true

/** Writes `text` to stderr as it is. */
export const writeStderr = (text: string): Effect.Effect<void> =>
  Effect.sync(() => {
    process.stderr.write(text)
  })

/** One line on stderr, prefixed with `fullduplex` and the command's name. */
export const say = (command: string, line: string): Effect.Effect<void> =>
  writeStderr(`fullduplex ${command}: ${line}\n`)

/**
 * A message of several lines (a child's stderr tail, a stall's two directions) as one line: its lines
 * joined with ` | `, or a space after a line that ends with a colon.
 */
export const oneLine = (message: string): string =>
  message
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line.length > 0)
    .reduce((text, line) => (text === "" ? line : `${text}${text.endsWith(":") ? " " : " | "}${line}`), "")

/** The message of a failure, on one line: a `DuplexError`'s own message, else what the value says. */
export const messageOf = (error: unknown): string =>
  oneLine(error instanceof Error ? error.message : typeof error === "string" ? error : String(error))
