#!/usr/bin/env node
import { parseArgs } from "node:util";
import { ConfigError, loadConfigFile } from "../config/load.js";
import { startNode } from "../node.js";
import { linkToParent } from "../process/parent-link.js";
import { runMain } from "../process/run-main.js";
import { KeyLoadError } from "../signing/signer.js";
import { hashPassword } from "../tokens/credentials.js";
import { PACKAGE_VERSION } from "../version.js";
import { tuneHeapForUploads } from "./upload-heap.js";

const USAGE = `usage:
  signing-node --config FILE      serve (or set SIGNING_CONFIG); SIGNING__a__b=value overrides key a.b
  signing-node hash-password      read a password on stdin, print its scrypt hash for token.credentials
  signing-node --version          print the version`;

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks)
    .toString("utf8")
    .replace(/\r?\n$/, "");
}

async function main(): Promise<number | "serving"> {
  const { values, positionals } = parseArgs({
    options: {
      config: { type: "string", short: "c" },
      help: { type: "boolean", short: "h" },
      version: { type: "boolean", short: "V" },
    },
    allowPositionals: true,
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  if (values.version) {
    console.log(PACKAGE_VERSION);
    return 0;
  }
  if (positionals[0] === "hash-password") {
    const password = await readStdin();
    if (!password) {
      console.error("hash-password: empty password on stdin");
      return 2;
    }
    console.log(await hashPassword(password));
    return 0;
  }
  if (positionals.length) {
    console.error(`unknown command ${positionals[0]}\n${USAGE}`);
    return 2;
  }
  const file = values.config ?? process.env.SIGNING_CONFIG;
  if (!file) {
    console.error(`no configuration given\n${USAGE}`);
    return 2;
  }
  tuneHeapForUploads();
  const parent = linkToParent();
  const node = await startNode(loadConfigFile(file));
  const stop = (cause: { signal: string } | { reason: string }) => {
    node.log.info({ event: "shutdown", ...cause });
    node.close().then(
      (drained) => process.exit(drained ? 0 : 1),
      () => process.exit(1),
    );
  };
  process.once("SIGTERM", () => stop({ signal: "SIGTERM" }));
  process.once("SIGINT", () => stop({ signal: "SIGINT" }));
  parent?.listening(node.url, () => stop({ reason: "parent_exited" }));
  return "serving";
}

runMain("signing-node", main, (err) => err instanceof ConfigError || err instanceof KeyLoadError);
