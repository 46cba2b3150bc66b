import { readFileSync } from "node:fs";

/**
 * The package's version, read once from package.json: the one place the node's /__version__
 * and every CLI's `--version` take it from, so they cannot disagree. Compiled to
 * dist/src/version.js, two levels below the package root.
 */
export const PACKAGE_VERSION = (
  JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string }
).version;
