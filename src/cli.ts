#!/usr/bin/env node
/**
 * The `fullduplex` command-line tool (the package's `bin`): `echo`, `connect`, `proxy`, `serve` and `demo`;
 * `fullduplex --help` lists them, `fullduplex <command> --help` explains one. It is an entry of its own:
 * `import "fullduplex"` does not load it.
 *
 * @internal
 */
import { readFileSync } from "node:fs"
import { main } from "./cli/main.js"

// This file and the built `dist/cli.js` are both one level below the package's root.
const { version } = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as {
  readonly version: string
}

main(version)
