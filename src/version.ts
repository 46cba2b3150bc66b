import { readFileSync } from "node:fs";

/**
 * The package's version, read once from package.json: the one place the node's /__version__
 * and every CLI's `--version` take it from, so they cannot disagree. Compiled to
 * dist/src/version.js, two levels below the package root.
 */
export const PACKAGE_VERSION = (
  JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string }
).version;

/**
 * The commit and time of the build (dist/build-info.json, written by `npm run build`); the
 * SIGNING_COMMIT environment variable wins, for builds made outside a git checkout.
 */
export function buildInfo(env: NodeJS.ProcessEnv = process.env): { commit: string; builtAt: string } {
  let stamped: { commit?: string; builtAt?: string } = {};
  try {
    stamped = JSON.parse(readFileSync(new URL("../build-info.json", import.meta.url), "utf8"));
  } catch {
    // not built by npm run build
  }
  return { commit: env.SIGNING_COMMIT ?? stamped.commit ?? "unknown", builtAt: stamped.builtAt ?? "unknown" };
}
