import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { once } from "node:events";
import { chmodSync } from "node:fs";
import { request } from "node:http";
import { connect, type Socket } from "node:net";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { jobYaml, LoomProcess, ROOT } from "./helpers.js";

/**
 * `loom port-forward` on a real `loom up`: a TrainingJob runs a raw TCP echo server and a sink
 * (which answers the byte count and sha256 of what it read) on its own loopback (its own network
 * namespace where Loom runs as root); the real CLI forwards a local port to them through Loom's
 * API. Fences: a viewer, another project's member and a port nothing listens on are refused.
 */
const BASE = "/apis/loom.dev/v1alpha1";
const MB = 1024 * 1024;

const SERVER = `
import socket, threading, hashlib
def serve(s, f):
    while True:
        c, _ = s.accept()
        threading.Thread(target=f, args=(c,), daemon=True).start()
def echo(c):
    while True:
        d = c.recv(1 << 16)
        if not d: break
        c.sendall(d)
    c.shutdown(socket.SHUT_WR); c.close()
def sink(c):
    h = hashlib.sha256(); n = 0
    while True:
        d = c.recv(1 << 20)
        if not d: break
        h.update(d); n += len(d)
    c.sendall(("%d %s\\n" % (n, h.hexdigest())).encode()); c.close()
ports = []
for f in (echo, sink):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0)); s.listen(16); ports.append(s.getsockname()[1])
    threading.Thread(target=serve, args=(s, f), daemon=True).start()
print("ports", *ports, flush=True)
threading.Event().wait()
`;

/** 100 MB of data: one random MiB, each copy made distinct by its index. */
function* payload(total = 100 * MB): Generator<Buffer> {
  const block = randomBytes(MB);
  for (let i = 0; i < total / MB; i++) {
    const b = Buffer.from(block);
    b.writeUInt32BE(i, 0);
    yield b;
  }
}

/** The first whole line a stream prints (a pipe may hand it over in pieces). */
async function firstLine(stream: NodeJS.ReadableStream): Promise<string> {
  let text = "";
  for await (const chunk of stream) {
    text += String(chunk);
    if (text.includes("\n")) return text.slice(0, text.indexOf("\n"));
  }
  return text;
}

async function dial(port: number): Promise<Socket> {
  const s = connect({ host: "127.0.0.1", port, allowHalfOpen: true });
  await once(s, "connect");
  return s;
}

/** Sends everything, half-closes, and reads the whole answer; sha256 of both sides. */
async function exchange(
  port: number,
  data: Iterable<Buffer>,
): Promise<{ sent: string; got: Buffer; ms: number }> {
  const s = await dial(port);
  const chunks: Buffer[] = [];
  s.on("data", (c: Buffer) => chunks.push(c));
  const ended = once(s, "end");
  const sent = createHash("sha256");
  const t0 = performance.now();
  for (const b of data) {
    sent.update(b);
    if (!s.write(b)) await once(s, "drain");
  }
  s.end();
  await ended;
  const ms = performance.now() - t0;
  s.destroy();
  return { sent: sent.digest("hex"), got: Buffer.concat(chunks), ms };
}

/** An upgrade request as `loom port-forward` makes it, with the given token: its status and body. */
function upgrade(url: string, path: string, token: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(`${url}${path}`, {
      headers: { connection: "Upgrade", upgrade: "loom-portforward", authorization: `Bearer ${token}` },
      agent: false,
    });
    req.on("upgrade", (_res, socket) => {
      socket.destroy();
      resolve({ status: 101, body: "" });
    });
    req.on("response", (res) => {
      let body = "";
      res.on("data", (d: Buffer) => {
        body += d.toString();
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on("error", reject);
    req.end();
  });
}

describe("loom port-forward", () => {
  const loom = new LoomProcess();
  const forwards: ChildProcess[] = [];
  let echoPort = 0;
  let sinkPort = 0;

  async function forward(args: string[]): Promise<{ port: number; output: () => string }> {
    const f = loom.cliBackground(["port-forward", ...args]);
    forwards.push(f.proc);
    for (let i = 0; i < 600; i++) {
      const m = /Forwarding from 127\.0\.0\.1:(\d+) -> (\d+)/.exec(f.output());
      if (m) return { port: Number(m[1]), output: f.output };
      if (f.proc.exitCode !== null) break;
      await sleep(50);
    }
    throw new Error(`loom port-forward did not start: ${f.output()}`);
  }

  beforeAll(async () => {
    await loom.start();
    const r = await loom.cli(["apply", "-f", "-"], { input: jobYaml("echo", ["python3", "-c", SERVER]) });
    expect(r.code, r.stderr).toBe(0);
    for (let i = 0; i < 600 && !echoPort; i++) {
      const logs = await loom.cli(["logs", "tj/echo", "--worker", "0"]);
      const m = /ports (\d+) (\d+)/.exec(logs.stdout);
      if (m) [echoPort, sinkPort] = [Number(m[1]), Number(m[2])];
      else await sleep(100);
    }
    expect(echoPort).toBeGreaterThan(0);
  }, 120_000);

  afterAll(async () => {
    for (const f of forwards) f.kill("SIGTERM");
    await loom.stop();
  });

  it("carries a raw TCP echo exactly, and 100 MB both ways byte-exact", async () => {
    const { port: local } = await forward(["tj/echo", `:${echoPort}`]);
    const hello = await exchange(local, [Buffer.from("hello, raw tcp\n")]);
    expect(hello.got.toString()).toBe("hello, raw tcp\n");
    const big = await exchange(local, payload());
    expect(big.got.length).toBe(100 * MB);
    expect(createHash("sha256").update(big.got).digest("hex")).toBe(big.sent);
  }, 300_000);

  it("moves 100 MB into the workload byte-exact, and says how fast against a direct loopback copy", async () => {
    const { port: local } = await forward(["tj/echo", `:${sinkPort}`, "--worker", "0"]);
    const through = await exchange(local, payload());
    expect(through.got.toString()).toBe(`${100 * MB} ${through.sent}\n`);
    // The same sink, run here on the host's loopback: the direct copy to compare with.
    const direct = spawn("python3", ["-c", SERVER], { stdio: ["ignore", "pipe", "inherit"] });
    try {
      const line = await firstLine(direct.stdout!);
      const directSink = Number(/ports \d+ (\d+)/.exec(line)?.[1]);
      const plain = await exchange(directSink, payload());
      expect(plain.got.toString()).toBe(`${100 * MB} ${plain.sent}\n`);
      const mbps = (ms: number) => (100 / ms) * 1000;
      console.log(
        `port-forward: ${mbps(through.ms).toFixed(0)} MB/s through loom port-forward, ${mbps(plain.ms).toFixed(0)} MB/s direct loopback, ratio ${(plain.ms / through.ms).toFixed(2)}x`,
      );
    } finally {
      direct.kill("SIGKILL");
    }
  }, 300_000);

  it("refuses a viewer, another project's member, a port nothing listens on, and a plain GET", async () => {
    const path = (port: number) => `${BASE}/projects/default/trainingjobs/echo/portforward?port=${port}`;
    const project = "apiVersion: loom.dev/v1alpha1\nkind: Project\nmetadata: {name: other}\nspec: {}\n";
    expect((await loom.cli(["apply", "-f", "-"], { input: project })).code).toBe(0);
    const token = async (args: string[]) => {
      const r = await loom.cli(["token", "create", ...args]);
      expect(r.code, r.stderr).toBe(0);
      return r.stdout.trim();
    };
    const viewer = await token(["pf-viewer", "--role", "viewer", "-p", "default"]);
    const foreign = await token(["pf-foreign", "--role", "editor", "-p", "other"]);
    const editor = await token(["pf-editor", "--role", "editor", "-p", "default"]);

    const v = await upgrade(loom.url, path(echoPort), viewer);
    expect(v.status).toBe(403);
    const f = await upgrade(loom.url, path(echoPort), foreign);
    expect(f.status).toBe(403);
    const closed = await upgrade(loom.url, path(1), editor);
    expect(closed.status).toBe(400);
    expect(closed.body).toMatch(new RegExp(`does not listen on port 1; it listens on .*${echoPort}`));
    // The editor of this project gets through, as the admin's CLI did.
    expect((await upgrade(loom.url, path(echoPort), editor)).status).toBe(101);
    const plain = await loom.api("GET", path(echoPort));
    expect(plain.status).toBe(400);
    expect(JSON.stringify(plain.body)).toMatch(/Upgrade: loom-portforward/);

    // The CLI says why on a refused connection, and keeps listening.
    const refused = await forward(["tj/echo", ":1"]);
    const s = await dial(refused.port);
    s.resume();
    await once(s, "end"); // the CLI ends the local connection it could not tunnel
    s.destroy();
    for (let i = 0; i < 100 && !refused.output().includes("error forwarding"); i++) await sleep(50);
    expect(refused.output()).toMatch(/error forwarding port 1: .*does not listen on port 1/);
    expect(forwards.at(-1)!.exitCode).toBeNull();
  }, 120_000);

  it("ssh-key add/list/delete: the real ssh client logs in through loom ssh --proxy with a registered key, not with another", async () => {
    const keygen = (name: string) => {
      const key = join(loom.home, name);
      execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", `${name}@laptop`, "-f", key]);
      chmodSync(key, 0o600);
      return key;
    };
    const key = keygen("id_ed25519");
    const stranger = keygen("id_stranger");
    // Registered by the CLI as a user does (the admin is an editor of every project).
    const added = await loom.cli(["ssh-key", "add", `${key}.pub`]);
    expect(added.code, added.stderr).toBe(0);
    expect(added.stdout).toMatch(/^ssh key "id_ed25519@laptop" added \(ssh-ed25519 SHA256:\S+\)$/m);
    const listed = await loom.cli(["ssh-key", "list"]);
    expect(listed.stdout).toMatch(/NAME\s+TYPE\s+FINGERPRINT\s+AGE/);
    expect(listed.stdout).toContain("id_ed25519@laptop");
    // The same key twice, a private key, junk: refused with what to do.
    expect((await loom.cli(["ssh-key", "add", `${key}.pub`])).stderr).toMatch(/registered already/);
    const priv = await loom.cli(["ssh-key", "add", key]);
    expect(priv.code).not.toBe(0);
    expect(priv.stderr).toMatch(/give its public half/);
    const junk = await loom.cli(["ssh-key", "add", "-"], { input: "not a key at all\n" });
    expect(junk.code).not.toBe(0);
    expect(junk.stderr).toMatch(/not an OpenSSH public key/);
    // Another user sees none of it and cannot delete it; an API key is refused outright.
    const bob = (
      await loom.cli(["token", "create", "bob", "--role", "editor", "-p", "default"])
    ).stdout.trim();
    const asBob = { env: { LOOM_URL: loom.url, LOOM_TOKEN: bob } };
    expect((await loom.cli(["ssh-key", "list"], asBob)).stdout).not.toContain("id_ed25519@laptop");
    const steal = await loom.cli(["ssh-key", "delete", "id_ed25519@laptop"], asBob);
    expect(steal.code).not.toBe(0);
    expect(steal.stderr).toMatch(/no SSH key named "id_ed25519@laptop"/);
    const apiKey = (await loom.cli(["apikey", "create", "k", "-p", "default"])).stdout.trim();
    expect((await loom.api("GET", `${BASE}/sshkeys`, undefined, apiKey)).status).toBe(403);

    const sshd = join(ROOT, "runtimes", "loom-sshd", "loom-sshd.sh");
    // No keys in the job: Loom gives its workers the project's registered keys as a file.
    const job = jobYaml("box", ["/bin/sh", sshd]);
    const applied = await loom.cli(["apply", "-f", "-"], { input: job });
    expect(applied.code, applied.stderr).toBe(0);
    const proxy = `${process.execPath} ${join(ROOT, "bin", "loom.js")} ssh --proxy tj/box`;
    const ssh = (identity = key) =>
      new Promise<{ code: number; out: string }>((resolve) => {
        const p = spawn(
          "ssh",
          [
            "-o",
            `ProxyCommand=${proxy}`,
            "-o",
            "StrictHostKeyChecking=accept-new",
            "-o",
            `UserKnownHostsFile=${join(loom.home, "known_hosts")}`,
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-i",
            identity,
            "loom@tj-box",
            "echo",
            "hi",
          ],
          { env: loom.env(), stdio: ["ignore", "pipe", "pipe"] },
        );
        let out = "";
        p.stdout.on("data", (d: Buffer) => {
          out += d.toString();
        });
        p.stderr.on("data", (d: Buffer) => {
          out += d.toString();
        });
        p.on("close", (code) => resolve({ code: code ?? -1, out }));
      });
    // Until sshd listens (the tunnel refuses a port nothing listens on, and ssh says so).
    let r = await ssh();
    for (let i = 0; i < 120 && r.code !== 0; i++) {
      await sleep(250);
      r = await ssh();
    }
    expect(r.code, r.out).toBe(0);
    expect(r.out).toMatch(/^hi$/m);
    // A key nobody registered: sshd refuses it.
    const refused = await ssh(stranger);
    expect(refused.code, refused.out).toBe(255);
    expect(refused.out).toMatch(/Permission denied \(publickey\)/);
    // Deleted: gone from the list.
    expect((await loom.cli(["ssh-key", "delete", "id_ed25519@laptop"])).stdout).toBe(
      'ssh key "id_ed25519@laptop" deleted\n',
    );
    expect((await loom.cli(["ssh-key", "list"])).stdout).not.toContain("id_ed25519@laptop");
  }, 120_000);

  it("loom ssh ws/NAME: the real ssh client runs a command in a workspace's home with a registered key; another key, or one added after the start, is refused until the next start", async () => {
    // On a machine without network namespaces, the job above's sshd would hold 127.0.0.1:2222.
    await loom.cli(["delete", "tj", "box", "--timeout", "30"]);
    const keygen = (name: string) => {
      const key = join(loom.home, name);
      execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", `${name}@laptop`, "-f", key]);
      chmodSync(key, 0o600);
      return key;
    };
    const key = keygen("id_ws");
    const stranger = keygen("id_ws_stranger");
    const late = keygen("id_ws_late");
    expect((await loom.cli(["ssh-key", "add", `${key}.pub`])).code).toBe(0);
    // The workspace writes a file in its own home, then serves on its port; nothing in it asks for ssh.
    const ws = `apiVersion: loom.dev/v1alpha1
kind: Workspace
metadata: {name: shell}
spec:
  ide: none
  command: [/bin/sh, -c, 'echo "written in $HOME" > note.txt; exec python3 -m http.server $PORT --bind 127.0.0.1']
`;
    const applied = await loom.cli(["apply", "-f", "-"], { input: ws });
    expect(applied.code, applied.stderr).toBe(0);
    // `loom ssh ws/NAME -- CMD` as a user runs it: the workspace's host key learnt into Loom's own
    // known_hosts (beside LOOM_CONFIG, in this test's home), no agent's keys.
    const env = { SSH_AUTH_SOCK: "" };
    const ssh = (identity: string) =>
      loom.cli(["ssh", "ws/shell", "-i", identity, "--", "cat", "note.txt"], { env });
    let r = await ssh(key);
    // Until the workspace runs and its sshd listens (the tunnel refuses a port nothing listens on).
    for (let i = 0; i < 240 && r.code !== 0; i++) {
      await sleep(250);
      r = await ssh(key);
    }
    expect(r.code, r.stderr + loom.log.slice(-3000)).toBe(0);
    expect(r.stdout).toBe(`written in ${join(loom.dataDir, "homes", "default", "shell")}\n`);
    // Loom's sshd is for the tunnel, not a /proxy/ port of the workspace.
    const got = await loom.api("GET", `${BASE}/projects/default/workspaces/shell`);
    const status = (got.body as { status: { phase: string; ports?: { port: number }[] } }).status;
    expect(status.phase).toBe("Running");
    expect((status.ports ?? []).map((p) => p.port)).not.toContain(2222);
    // A key nobody registered: sshd refuses it.
    const refused = await ssh(stranger);
    expect(refused.code, refused.stderr).toBe(255);
    expect(refused.stderr).toMatch(/Permission denied \(publickey\)/);
    // A key registered now counts from the workspace's next start: the running one keeps its file.
    expect((await loom.cli(["ssh-key", "add", `${late}.pub`])).code).toBe(0);
    expect((await ssh(late)).stderr).toMatch(/Permission denied \(publickey\)/);
    expect((await loom.cli(["stop", "ws/shell"])).code).toBe(0);
    for (let i = 0; i < 240; i++) {
      const w = await loom.api("GET", `${BASE}/projects/default/workspaces/shell`);
      if ((w.body as { status?: { phase?: string } }).status?.phase === "Stopped") break;
      await sleep(250);
    }
    expect((await loom.cli(["start", "ws/shell"])).code).toBe(0);
    r = await ssh(late);
    for (let i = 0; i < 240 && r.code !== 0; i++) {
      await sleep(250);
      r = await ssh(late);
    }
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^written in /m);
    await loom.cli(["delete", "ws", "shell", "--timeout", "30"]);
  }, 240_000);
});
