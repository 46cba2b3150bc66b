import { readFileSync } from "node:fs";
import { dirname, isAbsolute, resolve } from "node:path";
import { parse as parseYaml } from "yaml";
import { z } from "zod";
import { ClientError } from "./errors.js";

/** Where signtool looks for its defaults when `--config` is not given. */
export const CONFIG_ENV = "SIGNTOOL_CONFIG";

/** signtool's defaults, for a build machine that signs the same way every time. */
const schema = z
  .object({
    /** Signing nodes, `host:port` or URLs: used when no `-H` is given. */
    hosts: z.array(z.string().min(1)).min(1).optional(),
    /** Formats to sign in when no `-f` is given. */
    formats: z.array(z.string().min(1)).min(1).optional(),
    /** Public keys to check each format's signatures with: format → file. */
    trustedKeys: z.record(z.string(), z.string().min(1)).optional(),
    /** CA or pinned server certificate (the nodes speak https), when no `-c` is given. */
    cacert: z.string().min(1).optional(),
  })
  .strict();

/**
 * signtool's config file (`--config`, else `$SIGNTOOL_CONFIG`), checked: defaults for the
 * command line, which wins over each of them.
 */
export type SigntoolConfig = z.infer<typeof schema>;

/** Reads and checks a config file; paths in it are relative to it. */
export function readSigntoolConfig(file: string): SigntoolConfig {
  let raw: unknown;
  try {
    raw = parseYaml(readFileSync(file, "utf8"));
  } catch (err) {
    const why = (err as NodeJS.ErrnoException).code ?? (err as Error).message.split("\n")[0];
    throw new ClientError("USAGE", `cannot read config file ${file}: ${why}`);
  }
  const parsed = schema.safeParse(raw ?? {});
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new ClientError(
      "USAGE",
      `config file ${file}: ${issue?.path.join(".") || "top level"}: ${issue?.message}`,
    );
  }
  const abs = (p: string) => (isAbsolute(p) ? p : resolve(dirname(file), p));
  const c = parsed.data;
  return {
    ...c,
    ...(c.cacert ? { cacert: abs(c.cacert) } : {}),
    ...(c.trustedKeys
      ? { trustedKeys: Object.fromEntries(Object.entries(c.trustedKeys).map(([f, p]) => [f, abs(p)])) }
      : {}),
  };
}
