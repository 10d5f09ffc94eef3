import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { createServer } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { dialAddress, listeningPortsOf, parseTcpTable, workloadListeners } from "./listening.js";
import { NamespaceDialer } from "./nsdial.js";

const children: ChildProcess[] = [];
afterEach(() => {
  // The whole group: the listener is the shell's child.
  for (const c of children.splice(0)) process.kill(-c.pid!, "SIGKILL");
});

/** A process that listens on a free port (bound to `host`), through a child of its own. */
async function listener(host: string, wrap: string[] = []): Promise<{ pid: number; port: number }> {
  const script = `const s=require("net").createServer(c=>c.pipe(c));s.listen(0,${JSON.stringify(host)},()=>console.log(s.address().port));`;
  // /bin/sh first: the listener is the worker's descendant, as a workload's server is.
  const child = spawn("/bin/sh", ["-c", `${wrap.join(" ")} ${process.execPath} -e '${script}'`], {
    stdio: ["ignore", "pipe", "inherit"],
    detached: true,
  });
  children.push(child);
  // The whole line: a pipe may hand it over in pieces.
  let text = "";
  for await (const chunk of child.stdout!) {
    text += String(chunk);
    if (text.includes("\n")) break;
  }
  return { pid: child.pid!, port: Number(text.trim()) };
}

describe("listening ports", () => {
  it("parses LISTEN rows of /proc/net/tcp only", () => {
    const text = [
      "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode",
      "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1",
      "   1: 0100007F:1F91 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 12346 1",
    ].join("\n");
    const l = parseTcpTable(text, 4);
    expect(l).toEqual([{ port: 8080, pid: 0, inode: "12345", family: 4, address: "0100007F" }]);
    expect(dialAddress(l, 8080)?.host).toBe("127.0.0.1");
    expect(dialAddress([{ port: 1, pid: 0, inode: "1", family: 4, address: "020012C6" }], 1)?.host).toBe(
      "198.18.0.2",
    );
    expect(dialAddress(l, 9)).toBeUndefined();
  });

  it("finds the ports a workload's processes listen on, and not another process's", async () => {
    const w = await listener("127.0.0.1");
    const other = createServer();
    await new Promise<void>((r) => other.listen(0, "127.0.0.1", r));
    try {
      const ports = listeningPortsOf([w.pid], Date.now() + 10_000);
      expect(ports).toContain(w.port);
      expect(ports).not.toContain((other.address() as { port: number }).port);
      expect(listeningPortsOf([])).toEqual([]);
    } finally {
      other.close();
    }
  });

  it.runIf(process.getuid?.() === 0)(
    "reads a workload's own network namespace and dials its loopback from outside",
    async () => {
      const w = await listener("127.0.0.1", [
        "unshare",
        "--net",
        "sh",
        "-c",
        '\'ip link set lo up; exec "$0" "$@"\'',
      ]);
      // The inner listener is not on the host's loopback at all: only the namespace has it.
      const found = workloadListeners([w.pid], Date.now() + 20_000);
      expect(found.map((l) => l.port)).toContain(w.port);
      const dialer = new NamespaceDialer();
      try {
        const at = found.find((l) => l.port === w.port)!;
        const sock = await dialer.dial(at.pid, "127.0.0.1", w.port);
        sock.write("ping");
        const [echo] = (await once(sock, "data")) as [Buffer];
        expect(echo.toString()).toBe("ping");
        sock.destroy();
        await expect(dialer.dial(at.pid, "127.0.0.1", 1)).rejects.toThrow(/ECONNREFUSED/);
      } finally {
        dialer.close();
      }
    },
  );

  it("is cheap enough to poll every second for many workloads", async () => {
    const w = await listener("127.0.0.1");
    const n = 20;
    const t0 = performance.now();
    // A fresh process table each call: the worst case (no shared scan within a poll round).
    for (let i = 0; i < n; i++) listeningPortsOf([w.pid], Date.now() + 1000 * (i + 100));
    const cold = (performance.now() - t0) / n;
    const t1 = performance.now();
    const now = Date.now() + 1_000_000;
    for (let i = 0; i < n; i++) listeningPortsOf([w.pid], now);
    const shared = (performance.now() - t1) / n;
    console.log(
      `listeningPorts: ${cold.toFixed(2)} ms per workload with its own /proc scan, ${shared.toFixed(3)} ms sharing one scan per round`,
    );
    expect(cold).toBeGreaterThan(0);
  });
});
