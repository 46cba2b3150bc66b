import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import { test } from "node:test";

/**
 * The house rule "a doc comment on every exported options type", checked: an exported interface
 * or type named like what a caller fills in (…Options, …Config, …Deps, …Settings, …Limits,
 * …Policy, …Request) has a doc comment right above it, in every folder of src/ a caller builds
 * on, and in monitor/.
 */
const root = new URL("../../../", import.meta.url).pathname;
const FOLDERS = [
  ...["http", "client", "admin", "config", "store", "tokens", "process", "signing", "keys"].map((f) =>
    join(root, "src", f),
  ),
  join(root, "monitor"),
];
const OPTIONS_NAME =
  /^export (?:interface|type) (\w*(?:Options|Config|Deps|Settings|Limits|Policy|Request))\b/;

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && e.name.endsWith(".ts"))
    .map((e) => join(e.parentPath, e.name));
}

/** `file:line Name` for each options type in `file` without a doc comment above it. */
function undocumented(file: string): string[] {
  const lines = readFileSync(file, "utf8").split("\n");
  return lines.flatMap((line, i) => {
    const name = OPTIONS_NAME.exec(line)?.[1];
    if (!name) return [];
    const above = lines
      .slice(0, i)
      .reverse()
      .find((l) => l.trim() !== "");
    return above?.trim().endsWith("*/") ? [] : [`${relative(root, file)}:${i + 1} ${name}`];
  });
}

test("every exported options or config type has a doc comment", () => {
  const files = FOLDERS.flatMap(sources);
  assert.ok(files.length > 20, `found the sources (${files.length} files)`);
  assert.deepEqual(files.flatMap(undocumented), []);
});
