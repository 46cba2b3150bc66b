import { isIP } from "node:net";
import type { NextFunction, Request, Response } from "express";
import { normalizeIp } from "../net/address.js";
import type { CidrList } from "./cidr.js";
import { ApiError } from "./errors.js";

/**
 * The client's address: the peer's, unless the peer is one of our proxies (`node.trustProxy`);
 * then the right-most X-Forwarded-For entry that is not a trusted proxy. Never believed from
 * anyone else: a client cannot claim another build machine's address.
 */
export function resolveClientIp(peer: string, forwardedFor: string | undefined, trusted: CidrList): string {
  const peerIp = normalizeIp(peer);
  if (!forwardedFor || !trusted.has(peerIp)) return peerIp;
  const hops = forwardedFor.split(",").map((h) => normalizeIp(h.trim()));
  for (let i = hops.length - 1; i >= 0; i--) {
    const hop = hops[i] as string;
    // Garbage in the chain, or a chain of trusted addresses only (whose left end the client
    // may have written itself): fail closed, the client is the proxy.
    if (isIP(hop) === 0) return peerIp;
    if (!trusted.has(hop)) return hop;
  }
  return peerIp;
}

/** Resolves the client address once per request and refuses clients outside `node.allowedClients`. */
export function clientGate(trustProxy: CidrList, allowed: CidrList) {
  return (req: Request, res: Response, next: NextFunction) => {
    const ip = resolveClientIp(req.socket.remoteAddress ?? "", req.get("x-forwarded-for"), trustProxy);
    res.locals.clientIp = ip;
    if (!allowed.has(ip)) {
      res.set("Connection", "close");
      next(new ApiError("CLIENT_NOT_ALLOWED", "this address may not use the signing service"));
      return;
    }
    next();
  };
}

export function clientIp(req: Request): string {
  return (req.res?.locals.clientIp as string | undefined) ?? normalizeIp(req.socket.remoteAddress ?? "");
}
