/**
 * A node or monitor started by the local cluster or a test rig (scripts/node-process.ts) must
 * not outlive it, even when it is SIGKILLed and cannot stop its children; and the rig must know
 * that the process answering on its port is this child, not another cluster left running there.
 *
 * The rig spawns its children with an IPC channel and PARENT_LINK_ENV=1. The channel is a
 * socket the kernel closes when the parent dies, however it dies, so `disconnect` needs no
 * polling (unlike watching process.ppid) and no pid that could be reused; the same channel
 * carries the child's "listening" message. A process started any other way (systemd, a shell)
 * has neither, and nothing here changes how it runs.
 */
export const PARENT_LINK_ENV = "SIGNING_PARENT_LINK";

/** The message a linked child sends once its server is listening. */
export interface ListeningMessage {
  event: "listening";
  url: string;
  pid: number;
}

export function isListeningMessage(m: unknown): m is ListeningMessage {
  return typeof m === "object" && m !== null && (m as { event?: unknown }).event === "listening";
}

/** A child's side of the link to the process that started it (see linkToParent). */
export interface ParentLink {
  /** The server is up: tell the parent, and from now on stop with `stop` when the parent dies. */
  listening(url: string, stop: () => void): void;
}

/**
 * Call before starting to serve: a parent that dies while the child is still starting (its
 * Redis gone with it, say) must not leave the child waiting forever. Undefined when the
 * process was not started linked.
 */
export function linkToParent(): ParentLink | undefined {
  if (process.env[PARENT_LINK_ENV] !== "1" || !process.send) return undefined;
  // Still starting: nothing in flight to drain.
  let stop: () => void = () => process.exit(1);
  process.once("disconnect", () => stop());
  // The channel only watches the parent: it must not keep the process alive by itself.
  process.channel?.unref();
  if (!process.connected) stop();
  return {
    listening(url, stopServing) {
      stop = stopServing;
      if (!process.connected) return stopServing();
      const message: ListeningMessage = { event: "listening", url, pid: process.pid };
      // A send failing means the parent is gone: `disconnect` stops the process.
      process.send?.(message, undefined, undefined, () => {});
    },
  };
}
