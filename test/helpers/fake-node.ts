import { createServer, type Server } from "node:net";

/**
 * Nodes that misbehave at the HTTP level, for the client's error handling: `garbage` answers
 * 200 with a body that matches none of its headers; `hangup` promises a body and closes
 * half-way through it.
 */
export async function startFakeNode(
  mode: "garbage" | "hangup",
): Promise<{ url: string; hits: () => number; close(): Promise<void> }> {
  let hits = 0;
  const server: Server = createServer((socket) => {
    socket.on("error", () => {});
    socket.once("data", () => {
      hits++;
      if (mode === "garbage") {
        const body = "this is not a signature";
        socket.end(
          `HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-SHA1-Digest: ${"0".repeat(40)}\r\n` +
            `X-SHA256-Digest: ${"0".repeat(64)}\r\nX-Nonce: garbage\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`,
        );
      } else {
        socket.write(
          "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\npartial sig",
        );
        setTimeout(() => socket.destroy(), 20);
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address() as { port: number };
  return {
    url: `http://127.0.0.1:${port}`,
    hits: () => hits,
    close: () => new Promise((r) => server.close(() => r())),
  };
}
