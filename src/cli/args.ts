/**
 * The flags and arguments the commands share, with their checks: a value that does not parse is a usage
 * error (usage on stderr, exit code 2) before anything listens or connects.
 *
 * @internal
 */
import * as Option from "effect/Option"
import { Argument, Flag } from "effect/cli"
import type { Tcp } from "fullduplex"

const isPort = (n: number, min: number) => Number.isSafeInteger(n) && n >= min && n <= 65535

/** `HOST:PORT` (`127.0.0.1:4000`, `localhost:80`, `[::1]:4000`) as a TCP address; port 1 to 65535. */
export const parseHostPort = (text: string): Option.Option<Tcp.TcpAddress> => {
  const colon = text.lastIndexOf(":")
  if (colon <= 0) return Option.none()
  const rawHost = text.slice(0, colon)
  const rawPort = text.slice(colon + 1)
  const host = rawHost.startsWith("[") && rawHost.endsWith("]") ? rawHost.slice(1, -1) : rawHost
  const port = /^\d+$/.test(rawPort) ? Number(rawPort) : Number.NaN
  return host.length > 0 && isPort(port, 1) ? Option.some({ host, port }) : Option.none()
}

/** `host:port`, with brackets around an IPv6 host. */
export const formatAddress = (address: Tcp.Address): string => {
  if ("path" in address) return address.path
  const host = address.host ?? "127.0.0.1"
  return host.includes(":") ? `[${host}]:${address.port}` : `${host}:${address.port}`
}

const hostPortError = () => "HOST:PORT, such as 127.0.0.1:4000 (a port from 1 to 65535)"

/** A positional `HOST:PORT`. */
export const hostPortArgument = (name: string) =>
  Argument.String(name).pipe(Argument.withMetavar("HOST:PORT"), Argument.filterMap(parseHostPort, hostPortError))

/** A `--name HOST:PORT` flag. */
export const hostPortFlag = (name: string) =>
  Flag.String(name).pipe(Flag.withMetavar("HOST:PORT"), Flag.filterMap(parseHostPort, hostPortError))

/** `--port P` to listen on: 0 to 65535, 0 for an ephemeral port (the one given is printed). */
export const listenPort = (name: string) =>
  Flag.Int(name).pipe(
    Flag.withMetavar("PORT"),
    Flag.filter(
      (n) => isPort(n, 0),
      () => "a port from 0 to 65535 (0: any free port)"
    )
  )

/** `--host H`: the interface to listen on, 127.0.0.1 by default. */
export const listenHost = Flag.String("host").pipe(
  Flag.withMetavar("HOST"),
  Flag.withDescription("The interface to listen on (0.0.0.0 for all)"),
  Flag.withDefault("127.0.0.1")
)

/** `--stats`: progress on stderr. */
export const stats = Flag.Boolean("stats").pipe(
  Flag.withDescription(
    "Show progress on stderr: bytes, rate and time blocked each way (in place on a terminal, a line a second otherwise)"
  ),
  Flag.withDefault(false)
)
