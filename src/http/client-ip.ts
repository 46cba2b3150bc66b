import type { Request } from "express";
import { normalizeIp } from "../tokens/codec.js";

/** The peer's address. X-Forwarded-For is not believed: there is no trusted proxy yet. */
export function clientIp(req: Request): string {
  return normalizeIp(req.socket.remoteAddress ?? "");
}
