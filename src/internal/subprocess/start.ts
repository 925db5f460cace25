/**
 * Starting a child: execa 10 spawns it (in a process group of its own when the tree is to be stopped
 * with it), and a failure is told apart by what is actually wrong: the command, the file, or the `cwd`.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type { execa as Execa } from "execa"
import type { ChildProcess } from "node:child_process"
import * as fs from "node:fs"
import { DuplexError, SpawnFailed, type SpawnProblem } from "../../DuplexError.js"
import { codeOf } from "../errors.js"

/**
 * execa, loaded at the first spawn: a program that never starts a child (a TCP server importing the root
 * module) does not pay its start-up (about 80 ms of CPU and 6 MiB of RSS on the development machine, Node 24).
 */
let execaModule: Promise<typeof Execa> | undefined
const loadExeca: Effect.Effect<typeof Execa> = Effect.promise(() => {
  execaModule ??= import("execa").then((m) => m.execa)
  return execaModule
})

/** @internal */
export interface StartOptions {
  readonly label: string
  /** The command line, for messages. */
  readonly line: string
  readonly cwd?: string | undefined
  readonly env?: Readonly<Record<string, string | undefined>> | undefined
  readonly extendEnv: boolean
  readonly stdout: "pipe" | "ignore" | "inherit"
  readonly stderr: "pipe" | "ignore" | "inherit"
  /** Spawn in a process group of its own (execa's `killDescendants`), so that signals reach the whole tree. */
  readonly group: boolean
}

/** What is wrong, found after the OS refused: `ENOENT` alone cannot tell a missing `cwd` from a missing command. */
export const problemOf = (command: string, cwd: string | undefined, code: string | undefined): SpawnProblem => {
  if (cwd !== undefined && (code === "ENOENT" || code === "ENOTDIR" || code === "EACCES")) {
    const stat = statOf(cwd)
    if (stat === undefined) return "CwdNotFound"
    if (!stat.isDirectory()) return "CwdNotDirectory"
  }
  if (code === "ENOENT") return command.includes("/") ? "FileNotFound" : "CommandNotFound"
  if (code === "EACCES" || code === "EISDIR" || code === "ENOEXEC") return "NotExecutable"
  return "Other"
}

const statOf = (path: string): fs.Stats | undefined => {
  try {
    return fs.statSync(path)
  } catch {
    return undefined
  }
}

/**
 * Spawns the child and waits for Node's `'spawn'` (or its error). Interrupting the start kills the
 * half-started child.
 *
 * @internal
 */
export const start = (
  command: string,
  args: ReadonlyArray<string>,
  options: StartOptions
): Effect.Effect<ChildProcess, DuplexError> =>
  Effect.flatMap(loadExeca, (execa) =>
    Effect.callback<ChildProcess, DuplexError>((resume) => {
      let settled = false
      const failed = (err: unknown) => {
        if (settled) return
        settled = true
        const code = codeOf(err)
        resume(
          Exit.fail(
            new DuplexError({
              reason: new SpawnFailed({
                label: options.label,
                command: options.line,
                code,
                problem: problemOf(command, options.cwd, code),
                ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
                cause: err
              })
            })
          )
        )
      }
      const run = () =>
        execa(command, [...args], {
          stdin: "pipe",
          stdout: options.stdout,
          stderr: options.stderr,
          buffer: false,
          reject: false,
          encoding: "buffer",
          stripFinalNewline: false,
          // The parent's exit kills the child (its whole group with `killDescendants`).
          cleanup: true,
          killDescendants: options.group,
          // The termination ladder is ours (see ladder.ts).
          forceKillAfterDelay: false,
          extendEnv: options.extendEnv,
          ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
          ...(options.env === undefined ? {} : { env: options.env })
        })
      let started: ReturnType<typeof run>
      try {
        started = run()
      } catch (err) {
        // execa throws at once for what cannot be a command at all (a NUL byte in an argument, …).
        return failed(err)
      }
      const child: ChildProcess | undefined = started.nodeChildProcess
      // execa's own result is used only to learn of a spawn that failed before Node could report it; with
      // `reject: false` it never rejects, but it must never be left to reject unhandled either.
      Promise.resolve(started).then((result) => {
        if (result.failed && child?.pid === undefined) failed(result.cause ?? result)
      }, failed)
      if (child === undefined) return
      child.once("spawn", () => {
        if (settled) return
        settled = true
        resume(Effect.succeed(child))
      })
      child.once("error", failed)
      return Effect.sync(() => {
        if (options.group && child.pid !== undefined) {
          try {
            process.kill(-child.pid, "SIGKILL")
            return
          } catch {
            // No group (yet): the child alone.
          }
        }
        child.kill("SIGKILL")
      })
    })
  )
