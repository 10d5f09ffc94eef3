import { readFileSync, writeFileSync } from "node:fs";
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

/**
 * A CuttableProxy in front of the API server `kubeconfig` names (TLS passes through it whole), and
 * that kubeconfig pointed at the proxy, written to `file`: a control plane given it reaches the
 * member only through what the test can cut.
 */
export async function proxiedKubeconfig(kubeconfig: string, file: string): Promise<CuttableProxy> {
  const text = readFileSync(kubeconfig, "utf8");
  const server = /server:\s*(https:\/\/127\.0\.0\.1:(\d+))/.exec(text);
  if (!server) throw new Error(`${kubeconfig} names no https://127.0.0.1 server to proxy`);
  const proxy = new CuttableProxy("127.0.0.1", Number(server[2]));
  await proxy.start();
  writeFileSync(file, text.replace(server[1]!, `https://127.0.0.1:${proxy.port}`), { mode: 0o600 });
  return proxy;
}
