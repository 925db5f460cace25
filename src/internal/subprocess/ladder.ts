/**
 * Stopping a child and, by default, every process it started: the child is the leader of a process group
 * of its own (see start.ts), and signals go to the group by its negative id, so a grandchild
 * (`sh -c "…; sleep 30"`) gets them too.
 *
 * The ladder: stdin closed → `stdinGrace` → SIGTERM → `killGrace` → SIGKILL, each step only if the
 * child is still running; then, if members of the group outlive the child, SIGTERM → `killGrace` →
 * SIGKILL for them. The child is always reaped (its exit is awaited); grandchildren are reparented to
 * init, which reaps them.
 *
 * A group id stays reserved while any member lives, so signalling it after the child's exit cannot reach
 * an unrelated process (unless the whole group is gone and the id was given to a new group leader; the
 * liveness probe before each signal makes that window tiny).
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type { ChildProcess } from "node:child_process"
import * as fs from "node:fs"

/** How often the group is probed for members that outlive the child. */
const GROUP_POLL_MILLIS = 10

/** @internal */
export interface Tree {
  readonly child: ChildProcess
  /** Signals reach the child's process group, not the child alone. */
  readonly group: boolean
  readonly hasExited: () => boolean
  readonly exited: Effect.Effect<unknown>
}

/**
 * Whether any process of the child's group is alive. A zombie (exited, not yet reaped by init) still
 * takes signals but is not alive: where `/proc` lists the processes (Linux), a group of zombies alone is
 * gone, so that a container whose init does not reap orphans does not hold every scope close for
 * `killGrace`.
 */
export const groupAlive = (tree: Tree): boolean => {
  const pid = tree.child.pid
  if (!tree.group || pid === undefined) return false
  try {
    process.kill(-pid, 0)
  } catch {
    return false
  }
  return livingMemberOnLinux(pid)
}

/** Some member of group `pgid` is not a zombie; `true` where that cannot be told (no `/proc`). */
const livingMemberOnLinux = (pgid: number): boolean => {
  let entries: Array<string>
  try {
    entries = fs.readdirSync("/proc")
  } catch {
    return true
  }
  for (const entry of entries) {
    if (entry.charCodeAt(0) < 48 || entry.charCodeAt(0) > 57) continue
    let stat: string
    try {
      stat = fs.readFileSync(`/proc/${entry}/stat`, "latin1")
    } catch {
      continue // gone meanwhile
    }
    // pid (comm) state ppid pgrp …; comm may hold spaces and parentheses: fields follow the last ')'.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
    if (Number(fields[2]) === pgid && fields[0] !== "Z" && fields[0] !== "X") return true
  }
  return false
}

/** Sends `signal` to the child's group (or the child alone); nothing once they are all gone. */
export const signal = (tree: Tree, signal: NodeJS.Signals): void => {
  const pid = tree.child.pid
  if (tree.group && pid !== undefined) {
    try {
      process.kill(-pid, signal)
      return
    } catch {
      // The group is gone (ESRCH): only the child could be left.
    }
  }
  if (!tree.hasExited()) tree.child.kill(signal)
}

const waitExit = (tree: Tree, millis: number) => Effect.timeoutOption(tree.exited, millis)

/** Polls until no member of the group is left, for at most `millis`; `true` if none is. */
const waitGroup = (tree: Tree, millis: number): Effect.Effect<boolean> =>
  Effect.suspend(() => {
    const deadline = Date.now() + millis
    const poll: Effect.Effect<boolean> = Effect.suspend(() => {
      if (!groupAlive(tree)) return Effect.succeed(true)
      if (Date.now() >= deadline) return Effect.succeed(false)
      return Effect.andThen(Effect.sleep(GROUP_POLL_MILLIS), poll)
    })
    return poll
  })

/**
 * The termination ladder (see the module's doc). `closeStdin` is the first step; the child (and its
 * group) is not signalled if it exits within `stdinGraceMillis` of it.
 *
 * @internal
 */
export const terminate = (
  tree: Tree,
  options: { readonly stdinGraceMillis: number; readonly killGraceMillis: number; readonly closeStdin: () => void }
): Effect.Effect<void> =>
  Effect.gen(function* () {
    if (!tree.hasExited()) {
      options.closeStdin()
      if (Option.isNone(yield* waitExit(tree, options.stdinGraceMillis))) {
        signal(tree, "SIGTERM")
        if (Option.isNone(yield* waitExit(tree, options.killGraceMillis))) {
          signal(tree, "SIGKILL")
          yield* tree.exited // SIGKILL cannot be ignored: the exit comes, and Node reaps the child
        }
      }
    }
    // What the child left running in its group goes the same way.
    if (groupAlive(tree)) {
      signal(tree, "SIGTERM")
      if (!(yield* waitGroup(tree, options.killGraceMillis))) {
        signal(tree, "SIGKILL")
        yield* waitGroup(tree, options.killGraceMillis)
      }
    }
  })
