import { hashPassword } from "../tokens/credentials.js";
import { AdminError } from "./target.js";

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

/**
 * Reads one password from stdin (the first line; a trailing newline is not part of it) and
 * returns its scrypt hash for `token.credentials[].passwordHash`.
 */
export async function hashPasswordFromStdin(): Promise<string> {
  if (process.stdin.isTTY) process.stderr.write("password (then Enter and Ctrl-D): ");
  const text = await readStdin();
  const password = text.replace(/\r?\n$/, "");
  if (!password) throw new AdminError("no password on stdin");
  if (/[\r\n]/.test(password)) throw new AdminError("stdin holds more than one line: give one password");
  return hashPassword(password);
}
