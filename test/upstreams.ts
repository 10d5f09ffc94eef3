import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

/**
 * Throwaway HTTP upstreams on 127.0.0.1 for the gateway's tests: `listen` one, `deadPort` for a
 * port nothing listens on, `closeUpstreams` in afterEach.
 */
const servers: Server[] = [];

export async function listen(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<number> {
  return listenOn(createServer(handler));
}

/** Listens with a server made elsewhere (closed by `closeUpstreams` too). */
export async function listenOn(s: Server): Promise<number> {
  servers.push(s);
  await new Promise<void>((resolve) => s.listen(0, "127.0.0.1", resolve));
  return (s.address() as AddressInfo).port;
}

/** A port nothing listens on (bound, then closed). */
export async function deadPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((resolve) => s.listen(0, "127.0.0.1", resolve));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

export async function closeUpstreams(): Promise<void> {
  await Promise.all(
    servers.splice(0).map(
      (s) =>
        new Promise<void>((resolve) => {
          s.closeAllConnections();
          s.close(() => resolve());
        }),
    ),
  );
}
