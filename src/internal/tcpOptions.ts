/**
 * Checks of the options of `Tcp.connect` and `Tcp.serve`, and the servers' shutdown bound for event
 * deliveries, shared with the modules built on them (`Proxy` checks its target before it listens, and
 * bounds its own event deliveries as `Tcp.serve` does).
 *
 * @internal
 */
import * as Duration from "effect/Duration"
import type { DuplexError } from "../DuplexError.js"
import type { Address, ConnectOptions } from "../Tcp.js"
import { invalidOptions } from "./errors.js"

/** `host:port`, or the socket path. */
export const describeAddress = (address: Address): string =>
  "path" in address ? address.path : `${address.host ?? "127.0.0.1"}:${address.port}`

/** The label of a connection before it exists: `tcp →host:port` or `unix path`, unless one was given. */
export const connectLabel = (options: ConnectOptions): string =>
  options.label ?? ("path" in options ? `unix ${options.path}` : `tcp →${describeAddress(options)}`)

/** `InvalidOptions` unless `value` is a whole number ≥ `min`. */
export const countOption = (label: string, option: string, value: number, min: number): DuplexError | undefined =>
  Number.isInteger(value) && value >= min ? undefined : invalidOptions(label, option, value, `a whole number ≥ ${min}`)

/** `InvalidOptions` unless the address is a port from 0 to 65535 or a non-empty path. */
export const checkAddress = (label: string, address: Address): DuplexError | undefined => {
  if ("path" in address) {
    return typeof address.path === "string" && address.path.length > 0
      ? undefined
      : invalidOptions(label, "path", address.path, "a non-empty socket path")
  }
  return Number.isInteger(address.port) && address.port >= 0 && address.port <= 65535
    ? undefined
    : invalidOptions(label, "port", address.port, "a whole number from 0 to 65535")
}

/** Milliseconds of a duration option that must be ≥ 0 (`Infinity` allowed). */
export const millisOption = (
  label: string,
  option: string,
  value: Duration.Input | undefined,
  fallback: Duration.Duration
): number | DuplexError => {
  const millis = value === undefined ? Duration.toMillis(fallback) : Duration.toMillis(value)
  return millis >= 0 ? millis : invalidOptions(label, option, value, "a duration ≥ 0")
}

/** Every option of a connect checked: the connect timeout in milliseconds, or the first bad option. */
export const checkConnectOptions = (
  label: string,
  options: ConnectOptions,
  defaultTimeout: Duration.Duration
): number | DuplexError =>
  checkAddress(label, options) ??
  (options.highWaterMark === undefined ? undefined : countOption(label, "highWaterMark", options.highWaterMark, 1)) ??
  millisOption(label, "connectTimeout", options.connectTimeout, defaultTimeout)

/** After a server's shutdown, how long `onEvent` calls still running may take before they are interrupted. */
export const EVENTS_GONE_MILLIS = 1000

/**
 * Handlers known to need no scope of their own: their type requires no `Scope` (the library's own, from
 * `Echo.serve` and `Proxy.serve`). `Tcp.serve` runs every other handler in a scope per connection, which a
 * handler may use through `Effect.addFinalizer`; for these it spares the connection that scope (a copy of
 * the fiber's context, about 0.4 KB an idle connection holds).
 */
const unscopedHandlers = new WeakSet<object>()

/** Marks `handler` as needing no scope (see {@link unscopedHandlers}); returns it. */
export const unscoped = <H extends object>(handler: H): H => {
  unscopedHandlers.add(handler)
  return handler
}

/** Whether `handler` was marked by {@link unscoped}. */
export const isUnscoped = (handler: object): boolean => unscopedHandlers.has(handler)
