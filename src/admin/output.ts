/** Rendering for humans (aligned tables) and for scripts (one JSON document). */

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

export function print(text: string): void {
  process.stdout.write(text.endsWith("\n") ? text : `${text}\n`);
}

/** Columns padded to their widest cell; the last column is not padded. */
export function table(headers: string[], rows: string[][], indent = ""): string {
  const all = [headers, ...rows];
  const widths = headers.map((_, i) => Math.max(...all.map((r) => (r[i] ?? "").length)));
  return all
    .map((r) =>
      `${indent}${r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i] ?? 0))).join("  ")}`.trimEnd(),
    )
    .join("\n");
}

/** A two-column `name  value` block under a title. */
export function section(title: string, fields: [string, string][]): string {
  const width = Math.max(0, ...fields.map(([k]) => k.length));
  return [title, ...fields.map(([k, v]) => `  ${k.padEnd(width)}  ${v}`)].join("\n");
}

export const iso = (ms: number | undefined): string =>
  ms === undefined || !Number.isFinite(ms) ? "-" : new Date(ms).toISOString();

/** 3725 → "1h2m5s"; 42 → "42s". */
export function duration(seconds: number): string {
  if (!Number.isFinite(seconds)) return "-";
  let s = Math.max(0, Math.round(seconds));
  const d = Math.floor(s / 86400);
  s -= d * 86400;
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  const parts = [d && `${d}d`, h && `${h}h`, m && `${m}m`, (s || !(d || h || m)) && `${s}s`];
  return parts.filter(Boolean).join("");
}

export const ago = (ms: number, now = Date.now()): string => `${duration((now - ms) / 1000)} ago`;
