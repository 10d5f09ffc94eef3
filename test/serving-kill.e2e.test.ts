import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { setTimeout as sleep } from "node:timers/promises";
import { Registry } from "prom-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { attachFront } from "../src/gateway/front.js";
import { Gateway, type ReplicaEndpoint, type ServiceEndpoint } from "../src/gateway/gateway.js";

/**
 * The gateway's promise when a replica dies: no request is lost unless the client already has
 * part of its answer. The real gateway (front, balancer, forwarder, upstream pool) in front of
 * replicas that are real processes, SIGKILLed one after another under a CPU hog while clients
 * send completions, half of them streamed, in a loop.
 *
 * Each replica writes a non-streamed answer as Python's http.server (the built-in runtime) does:
 * the head, then the body in a second write. A replica about to die (SIGUSR2) holds the body of
 * its next non-streamed answer, so every round kills one with a head sent and no body — the
 * window in which the gateway used to cut the client off (`SocketError: other side closed`) —
 * whatever the machine's load; the other in-flight requests die wherever they happen to be
 * (before their head, mid-stream, on an idle keep-alive connection). Counts decide each step,
 * never a clock.
 */

const ROUNDS = 40;
const CLIENTS = 8;

const REPLICA = `
import { createServer } from "node:http";
let dying = false;
process.on("SIGUSR2", () => { dying = true; });
const say = (line) => process.stdout.write(line + "\\n");
const server = createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    const body = JSON.parse(Buffer.concat(chunks).toString());
    const n = body.max_tokens;
    if (body.stream) {
      res.writeHead(200, { "content-type": "text/event-stream" });
      res.flushHeaders();
      let i = 0;
      const next = () => {
        if (i++ < n) {
          res.write("data: " + JSON.stringify({ choices: [{ text: "t" + i }] }) + "\\n\\n");
          setTimeout(next, 1);
        } else res.end("data: [DONE]\\n\\n");
      };
      setTimeout(next, 1);
      return;
    }
    const answer = JSON.stringify({
      choices: [{ text: "t".repeat(n) }],
      usage: { prompt_tokens: 3, completion_tokens: n, total_tokens: n + 3 },
    });
    setTimeout(() => {
      res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(answer) });
      res.flushHeaders(); // the head alone
      if (dying) {
        say("held");
        return; // no body: SIGKILL comes
      }
      setImmediate(() => res.end(answer));
    }, 2);
  });
});
server.keepAliveTimeout = 60_000;
server.listen(0, "127.0.0.1", () => say("port " + server.address().port));
`;

interface Upstream {
  id: string;
  port: number;
  proc: ChildProcess;
  /** Resolves at the first answer held by a dying replica. */
  held: Promise<void>;
}

interface Outcome {
  stream: boolean;
  status: number;
  /** Bytes the client had of a 200 answer (1 for its head alone). */
  bytes: number;
  error?: string;
}

describe("serving: a replica killed mid-request (under a CPU hog)", () => {
  const dir = mkdtempSync(join(tmpdir(), "loom-kill-"));
  const script = join(dir, "replica.mjs");
  const hogs: ChildProcess[] = [];
  const replicas: Upstream[] = [];
  let spawned = 0;
  let server: Server;
  let gw: Gateway;
  const registry = new Registry();

  const endpoint = (): ServiceEndpoint => ({
    project: "team",
    service: "llama",
    revisions: [
      {
        name: "llama-1",
        weight: 100,
        replicas: replicas.map(
          (r): ReplicaEndpoint => ({ id: r.id, host: "127.0.0.1", port: r.port, ready: true }),
        ),
      },
    ],
    autoscaling: { minReplicas: 3, maxReplicas: 3, targetConcurrency: 4 },
  });

  async function upstream(): Promise<Upstream> {
    const proc = spawn(process.execPath, [script], { stdio: ["ignore", "pipe", "inherit"] });
    const lines = createInterface({ input: proc.stdout! });
    let onHeld: () => void = () => undefined;
    const held = new Promise<void>((resolve) => {
      onHeld = resolve;
    });
    const port = await new Promise<number>((resolve, reject) => {
      proc.once("exit", (code) => reject(new Error(`replica exited (${code}) before listening`)));
      lines.on("line", (line) => {
        if (line.startsWith("port ")) resolve(Number(line.slice(5)));
        else if (line === "held") onHeld();
      });
    });
    return { id: `llama-1-${++spawned}`, port, proc, held };
  }

  beforeAll(async () => {
    writeFileSync(script, REPLICA);
    // One busy loop per core: the gateway, the clients and the replicas all wait for CPU.
    for (let i = 0; i < availableParallelism(); i++)
      hogs.push(spawn(process.execPath, ["-e", "for (;;) {}"], { stdio: "ignore" }));
    for (let i = 0; i < 3; i++) replicas.push(await upstream());
    gw = new Gateway(
      {
        directory: { resolve: (model) => (model === "llama" ? endpoint() : undefined) },
        scaler: { setDesired: () => undefined },
        registry,
      },
      {},
    );
    // The real front on the client side, as on Loom's port.
    server = createServer((_req, res) => res.writeHead(404).end());
    attachFront(server, {
      claims: (method, url) => method === "POST" && url.startsWith("/v1/"),
      serve: (req, res, _auth, body) => gw.serve(req, res, { body }),
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  });

  afterAll(async () => {
    for (const h of hogs) h.kill("SIGKILL");
    for (const r of replicas) r.proc.kill("SIGKILL");
    gw?.close();
    server?.closeAllConnections();
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
    rmSync(dir, { recursive: true, force: true });
  });

  async function complete(url: string, stream: boolean): Promise<Outcome> {
    let bytes = 0;
    try {
      const res = await fetch(url, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ model: "llama", prompt: "Mira found the", max_tokens: 8, stream }),
      });
      if (res.status === 200) bytes = 1;
      const text = await res.text();
      if (res.status === 200) bytes += text.length;
      if (stream && res.status === 200 && !text.includes("data: [DONE]"))
        return { stream, status: -1, bytes, error: "stream cut off" };
      return { stream, status: res.status, bytes, ...(res.status === 200 ? {} : { error: text }) };
    } catch (err) {
      return { stream, status: -1, bytes, error: String((err as Error).cause ?? err) };
    }
  }

  it(`loses no request that had not started streaming, over ${ROUNDS} kills`, async () => {
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/completions`;
    const results: Outcome[] = [];
    let stopped = false;
    const clients = Array.from({ length: CLIENTS }, async (_, i) => {
      while (!stopped) results.push(await complete(url, i % 2 === 0));
    });
    const progress = async (n: number, what: string) => {
      const want = results.length + n;
      for (let waited = 0; results.length < want; waited++) {
        if (waited > 6000) throw new Error(`no progress: ${what}`); // a hang, not slowness (60 s)
        await sleep(10);
      }
    };
    for (let round = 0; round < ROUNDS; round++) {
      await progress(CLIENTS, `round ${round}: traffic before the kill`);
      const at = round % replicas.length;
      const victim = replicas[at]!;
      victim.proc.kill("SIGUSR2");
      await victim.held; // a non-streamed answer's head is out, its body never will be
      const exited = new Promise((resolve) => victim.proc.once("exit", resolve));
      victim.proc.kill("SIGKILL");
      await exited;
      // Replaced as the controller would: the dead one stays listed until its successor is up.
      replicas[at] = await upstream();
      gw.update(endpoint());
    }
    await progress(CLIENTS, "traffic after the last kill");
    stopped = true;
    await Promise.all(clients);

    const failed = results.filter((r) => r.status !== 200);
    const lost = failed.filter((r) => !r.stream || r.bytes === 0);
    const retries = (await registry.getMetricsAsJSON()).find((m) => m.name === "loom_gateway_retries_total");
    const retried = ((retries?.values ?? []) as { value: number }[]).reduce((a, v) => a + v.value, 0);
    console.log(
      `kill: ${ROUNDS} kills, ${results.length} requests (${results.filter((r) => r.stream).length} streamed), ` +
        `${retried} retries, ${failed.length} failed: ${lost.length} lost, ${failed.length - lost.length} mid-stream`,
    );
    expect(lost, JSON.stringify(lost.slice(0, 5))).toEqual([]);
  }, 240_000);
});
