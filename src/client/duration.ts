const UNITS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400 };

/** "90", "90s", "15m", "2h", "1d" → seconds. */
export function parseDuration(text: string): number {
  const m = /^(\d+)\s*([smhd]?)$/.exec(text.trim());
  if (!m) throw new Error(`invalid duration "${text}": use seconds or a number with s, m, h or d`);
  const seconds = Number(m[1]) * (UNITS[m[2] || "s"] as number);
  if (seconds <= 0) throw new Error(`invalid duration "${text}": must be positive`);
  return seconds;
}
