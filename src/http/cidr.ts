import { BlockList, isIP } from "node:net";
import { normalizeIp } from "../tokens/codec.js";

/** An allow-list of CIDRs (node's BlockList does the matching). */
export class CidrList {
  private readonly list = new BlockList();

  constructor(cidrs: readonly string[]) {
    for (const cidr of cidrs) {
      const [net, bits] = cidr.split("/") as [string, string];
      const family = isIP(net) === 6 ? "ipv6" : "ipv4";
      this.list.addSubnet(net, Number(bits), family);
    }
  }

  has(ip: string): boolean {
    const addr = normalizeIp(ip);
    const family = isIP(addr);
    if (family === 0) return false;
    return this.list.check(addr, family === 6 ? "ipv6" : "ipv4");
  }
}
