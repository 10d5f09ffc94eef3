import { createConnection, createServer, type Server, type Socket } from "node:net";

/**
 * A TCP proxy on 127.0.0.1 that the test can cut: a partition between the control plane and a
 * member whose own Loom stays healthy (it reaches its workers directly). Cut, it drops every
 * connection it carries and holds new ones open without forwarding a byte (requests time out, as
 * across a real partition); restored, it forwards again.
 */
export class CuttableProxy {
  private server: Server | undefined;
  private readonly live = new Set<Socket>();
  private cut = false;
  port = 0;

  constructor(
    private readonly host: string,
    private readonly targetPort: number,
  ) {}

  async start(): Promise<void> {
    this.server = createServer((client) => {
      this.live.add(client);
      client.on("close", () => this.live.delete(client));
      client.on("error", () => undefined);
      if (this.cut) return; // held open, never answered
      const upstream = createConnection({ host: this.host, port: this.targetPort });
      this.live.add(upstream);
      upstream.on("close", () => {
        this.live.delete(upstream);
        client.destroy();
      });
      upstream.on("error", () => client.destroy());
      client.on("close", () => upstream.destroy());
      client.pipe(upstream);
      upstream.pipe(client);
    });
    await new Promise<void>((ok) => this.server!.listen(0, "127.0.0.1", ok));
    this.port = (this.server.address() as { port: number }).port;
  }

  partition(): void {
    this.cut = true;
    for (const s of this.live) s.destroy();
  }

  heal(): void {
    this.cut = false;
    for (const s of this.live) s.destroy(); // the held ones: their clients retry
  }

  close(): void {
    for (const s of this.live) s.destroy();
    this.server?.close();
  }
}
