/**
 * What a fullduplex endpoint reports of its server, without loading anything: this module imports only
 * types, so an endpoint that measures the library's own loading cost (the scale rows' base RSS) can use it
 * without pulling in the `effect` index as `lib/fd.ts` does.
 */
import type { Tcp } from "fullduplex"

/**
 * Where this process loaded `fullduplex` from (the runner checks it is the built `dist/`), reported by
 * every fullduplex endpoint.
 */
export const fullduplexUrl: string = import.meta.resolve("fullduplex")

/** The TCP port a server listens on. */
export const portOf = (server: Tcp.Server): number => {
  const address = server.address
  if (!("port" in address)) throw new Error(`${server.label}: not a TCP address`)
  return address.port
}
