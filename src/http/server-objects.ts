import { IncomingMessage, ServerResponse } from "node:http";
import type { Express } from "express";

export interface ServerObjects {
  IncomingMessage: typeof IncomingMessage;
  ServerResponse: typeof ServerResponse;
}

/**
 * Request and response classes for the node's HTTP server that are express's own from birth.
 *
 * Express gives each request and response its prototypes (`app.request`, `app.response`) with
 * `Object.setPrototypeOf` as they enter the app. Changing a live object's prototype throws away
 * V8's fast layout for it and the caches that had seen it, on every request: most of what
 * express costs the node (docs/performance.md, "Patched dependency internals", has the
 * measured cost, which is why this stays). Here the server builds objects of subclasses whose
 * prototypes carry express's methods, and the app's prototypes are those: express's
 * `setPrototypeOf` then changes nothing. A server built without these (supertest's) still
 * works: it just pays the change. test/unit/server-objects.test.ts fails when express or node
 * stops fitting this.
 */
export function expressServerObjects(app: Express): ServerObjects {
  class ExpressRequest extends IncomingMessage {}
  class ExpressResponse extends ServerResponse {}
  carryOver(app.request, ExpressRequest.prototype);
  carryOver(app.response, ExpressResponse.prototype);
  app.request = ExpressRequest.prototype as Express["request"];
  app.response = ExpressResponse.prototype as unknown as Express["response"];
  return { IncomingMessage: ExpressRequest, ServerResponse: ExpressResponse as typeof ServerResponse };
}

/** Copies what express's prototype chain adds above node's class (methods, getters, `app`). */
function carryOver(expressProto: object, onto: object): void {
  const base = Object.getPrototypeOf(Object.getPrototypeOf(onto)) as object;
  const layers: object[] = [];
  for (let p: object | null = expressProto; p !== base; p = Object.getPrototypeOf(p) as object | null) {
    if (p === null) throw new Error("express's request or response does not extend node's own");
    layers.unshift(p);
  }
  // Deepest first, so the app's own layer (`app`) wins over express's defaults.
  for (const layer of layers) Object.defineProperties(onto, Object.getOwnPropertyDescriptors(layer));
}
