import { createServer, type Server } from "node:net";
import type { WorkerEndpoint } from "../../ports/runtime.js";

/** Loopback ports the kernel says are free now, distinct across the gang: `ports` per worker. */
export async function freeLoopbackEndpoints(workers: number, ports: number): Promise<WorkerEndpoint[]> {
  const servers: Server[] = [];
  try {
    const taken: number[] = [];
    for (let i = 0; i < workers * ports; i++) {
      const server = createServer();
      servers.push(server);
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen(0, "127.0.0.1", () => resolve());
      });
      taken.push((server.address() as { port: number }).port);
    }
    return Array.from({ length: workers }, (_, i) => ({
      host: "127.0.0.1",
      ports: taken.slice(i * ports, (i + 1) * ports),
    }));
  } finally {
    await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
  }
}
