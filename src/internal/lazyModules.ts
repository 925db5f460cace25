/**
 * `effect/Stream` and `effect/Sink`, loaded on first use rather than with the package.
 *
 * Effect's Stream stack (Stream, Channel, Sink and what they import) is about 6 MiB of a process's RSS.
 * Every duplex has a `readable` and a `sink`, but a server whose connections are served by pumps and
 * pipe consumers (`Echo.serve`, `Proxy.serve`, `Shutdown.serve`) never builds either: the modules that
 * make them load these two on first use, synchronously, through `require` (Node ≥ 22.12 loads an ES module
 * with `require` from the same module cache as `import`, so the instance is the one the application's own
 * `import "effect/Stream"` gets).
 *
 * @internal
 */
import { createRequire } from "node:module"
import type * as SinkModule from "effect/Sink"
import type * as StreamModule from "effect/Stream"

// A `require` relative to this file: its path is `__filename` in the CommonJS build; in the ES module
// build there is no `__filename`, and `import.meta.url` (which the CommonJS build does not have) is used.
const load: NodeJS.Require = createRequire(typeof __filename === "string" ? __filename : import.meta.url)

let stream: typeof StreamModule | undefined
let sink: typeof SinkModule | undefined

/** `effect/Stream`, loaded the first time it is asked for. @internal */
export const Stream = (): typeof StreamModule => (stream ??= load("effect/Stream") as typeof StreamModule)

/** `effect/Sink`, loaded the first time it is asked for. @internal */
export const Sink = (): typeof SinkModule => (sink ??= load("effect/Sink") as typeof SinkModule)
