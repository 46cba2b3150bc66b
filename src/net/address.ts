import { isIP } from "node:net";

/**
 * One spelling per address (DESIGN.md §3): IPv6 in its compressed lower-case form, an
 * IPv4-mapped IPv6 address as the IPv4 address it carries (`::FFFF:10.0.0.1` and
 * `::ffff:a00:1` are `10.0.0.1`). Undefined when `text` is not an IP address.
 */
export function canonicalIp(text: string): string | undefined {
  const family = isIP(text);
  if (family === 4) return text;
  if (family !== 6 || text.includes("%")) return undefined;
  const host = new URL(`http://[${text}]`).hostname.slice(1, -1);
  const mapped = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(host);
  if (!mapped) return host;
  const [hi, lo] = [Number.parseInt(mapped[1] as string, 16), Number.parseInt(mapped[2] as string, 16)];
  return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
}

/**
 * For addresses a peer or proxy gave us: the canonical form when there is one, else the text
 * unchanged (a zoned link-local peer is still that peer).
 */
export function normalizeIp(text: string): string {
  return canonicalIp(text) ?? text.toLowerCase();
}

/**
 * Why `text` cannot name one build machine, or undefined when it can: a token is bound to one
 * unicast address, never to "any", "everyone" or a group, nor to an address whose meaning
 * depends on an interface zone.
 */
export function whyNotUnicast(text: string): string | undefined {
  if (isIP(text) === 6 && text.includes("%")) return "a zoned (link-local) address names no single machine";
  const ip = canonicalIp(text);
  if (ip === undefined) return "not an IP address";
  if (ip.startsWith("0.") || ip === "::") return "the unspecified address names no machine";
  if (ip === "255.255.255.255") return "the broadcast address names no single machine";
  const first = Number(ip.split(".")[0]);
  if ((isIP(ip) === 4 && first >= 224 && first <= 239) || /^ff[0-9a-f]{2}:/.test(ip))
    return "a multicast address names no single machine";
  return undefined;
}
