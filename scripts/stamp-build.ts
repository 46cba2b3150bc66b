/**
 * Part of `npm run build`: writes dist/build-info.json with the commit the build was made from
 * and when, so every node's /__version__ names its commit (runbooks compare nodes by it). A
 * tree with uncommitted changes is marked `-dirty`; outside a git checkout the commit is
 * "unknown".
 */
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

const git = (...args: string[]): string | undefined => {
  try {
    return execFileSync("git", args, { stdio: ["ignore", "pipe", "ignore"] })
      .toString()
      .trim();
  } catch {
    return undefined;
  }
};

const head = git("rev-parse", "HEAD");
const dirty = head !== undefined && git("status", "--porcelain", "--untracked-files=no") !== "";
const info = {
  commit: head ? `${head}${dirty ? "-dirty" : ""}` : "unknown",
  builtAt: new Date().toISOString(),
};
writeFileSync(fileURLToPath(new URL("../build-info.json", import.meta.url)), `${JSON.stringify(info)}\n`);
