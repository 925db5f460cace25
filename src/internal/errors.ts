/**
 * Small helpers shared by the modules that build `DuplexError`s.
 *
 * @internal
 */
import * as Duration from "effect/Duration"
import type { Stats } from "../Duplex.js"
import { DuplexError, InvalidOptions, type StalledDirection } from "../DuplexError.js"

/** The OS error code (`ECONNRESET`, `EPIPE`, `ENOENT`, …) of a Node error, if it has one. */
export const codeOf = (err: unknown): string | undefined =>
  typeof err === "object" && err !== null && "code" in err && typeof err.code === "string" ? err.code : undefined

/** `DuplexError` reason `InvalidOptions`: `option` of `label` is `value`; it accepts `expected`. */
export const invalidOptions = (label: string, option: string, value: unknown, expected: string): DuplexError =>
  new DuplexError({ reason: new InvalidOptions({ label, option, value, expected }) })

/** `InvalidOptions` unless `value`, when given, is a finite duration above zero. */
export const checkFinitePositiveDuration = (
  label: string,
  option: string,
  value: Duration.Input | undefined
): DuplexError | undefined => {
  if (value === undefined) return undefined
  const millis = Duration.toMillis(value)
  return millis > 0 && Number.isFinite(millis)
    ? undefined
    : invalidOptions(label, option, value, "a finite duration above zero")
}

/** One direction of a duplex, from its stats, as a `StallDetected` diagnosis lists it. */
export const stalledDirection = (label: string, which: "outbound" | "inbound", stats: Stats): StalledDirection => {
  const s = stats[which]
  return {
    label,
    direction: which,
    bytes: s.bytes,
    buffered: s.buffered,
    blocked: s.blocked,
    blockedMillis: s.blockedMillis
  }
}
