import { randomBytes } from "node:crypto";
import type { KubeClient } from "./client.js";
import { frame, PORTFORWARD_PROTOCOL, parseFrame } from "./portforward.js";

/** pods/exec's channels in v4.channel.k8s.io: each binary message starts with its channel's byte. */
const STDOUT = 1;
const STDERR = 2;
/** The exec's outcome: a metav1.Status as JSON ("Success", or "Failure" with the exit code). */
const STATUS = 3;

/** pods/exec's stdin channel: what the client writes starts with this byte. */
const STDIN = 0;
/** Stdin is sent in frames of this size. */
const STDIN_CHUNK = 64 << 10;

/** What a command run in a pod printed, and how it ended. */
export interface ExecResult {
  stdout: string;
  /** stdout as bytes (binary output: a tar stream). */
  stdoutBytes: Buffer;
  stderr: string;
  /** The API server's Status: "Success", else why (a non-zero exit, no such executable). */
  status: { status?: string; message?: string; reason?: string };
}

/**
 * Runs `command` (no shell) in the first container of pod `pod` in namespace `ns` through the API
 * server's `pods/exec` (a WebSocket, v4.channel.k8s.io, as kubectl's WebSocket client speaks it):
 * no TTY, output collected up to `maxBytes` (more fails the exec), `stdin` written when given
 * (v4 cannot close stdin: the command must read only as many bytes as it is sent, e.g. `head -c`).
 * Rejects when the exec cannot be opened or does not end within `timeoutMs`; a command that fails
 * resolves with its Status.
 */
export async function execInPod(
  client: KubeClient,
  ns: string,
  pod: string,
  command: string[],
  opts: { timeoutMs?: number; maxBytes?: number; container?: string; stdin?: Buffer } = {},
): Promise<ExecResult> {
  const { socket, head } = await client.upgrade(
    `/api/v1/namespaces/${ns}/pods/${pod}/exec`,
    {
      command,
      stdout: "true",
      stderr: "true",
      ...(opts.stdin ? { stdin: "true" } : {}),
      ...(opts.container ? { container: opts.container } : {}),
    },
    {
      connection: "Upgrade",
      upgrade: "websocket",
      "sec-websocket-version": "13",
      "sec-websocket-key": randomBytes(16).toString("base64"),
      "sec-websocket-protocol": PORTFORWARD_PROTOCOL,
    },
  );
  const max = opts.maxBytes ?? 4 << 20;
  return new Promise((resolve, reject) => {
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let status = "";
    let size = 0;
    let overflow = false;
    let buffer: Buffer = Buffer.alloc(0);
    let fragments: Buffer[] = [];
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`exec in pod ${ns}/${pod} did not end within ${opts.timeoutMs ?? 10_000} ms`));
    }, opts.timeoutMs ?? 10_000);
    const done = () => {
      clearTimeout(timer);
      socket.destroy();
      if (overflow) {
        reject(new Error(`exec in pod ${ns}/${pod} printed more than ${max} bytes`));
        return;
      }
      let parsed: ExecResult["status"] = {};
      try {
        parsed = status ? (JSON.parse(status) as ExecResult["status"]) : { status: "Success" };
      } catch {
        parsed = { status: "Failure", message: status };
      }
      const stdoutBytes = Buffer.concat(out);
      resolve({
        stdout: stdoutBytes.toString("utf8"),
        stdoutBytes,
        stderr: Buffer.concat(err).toString("utf8"),
        status: parsed,
      });
    };
    const onMessage = (m: Buffer) => {
      if (m.length < 1) return;
      const body = m.subarray(1);
      if (m[0] === STATUS) status += body.toString("utf8");
      else if (size + body.length <= max) {
        size += body.length;
        (m[0] === STDOUT ? out : m[0] === STDERR ? err : []).push(body);
      } else overflow = true;
    };
    const onData = (chunk: Buffer) => {
      buffer = buffer.length ? Buffer.concat([buffer, chunk]) : chunk;
      for (;;) {
        const f = parseFrame(buffer);
        if (!f) return;
        buffer = buffer.subarray(f.size);
        if (f.opcode === 0x9) socket.write(frame(0xa, f.payload));
        else if (f.opcode === 0x8) return done();
        else if (f.opcode <= 0x2) {
          fragments.push(f.payload);
          if (f.fin) {
            onMessage(Buffer.concat(fragments));
            fragments = [];
          }
        }
      }
    };
    socket.on("data", onData);
    socket.on("end", done);
    socket.on("close", done);
    socket.on("error", (e: Error) => {
      clearTimeout(timer);
      reject(e);
    });
    if (head.length) onData(head);
    const stdin = opts.stdin;
    if (stdin)
      for (let i = 0; i < stdin.length; i += STDIN_CHUNK)
        socket.write(frame(0x2, Buffer.concat([Buffer.from([STDIN]), stdin.subarray(i, i + STDIN_CHUNK)])));
  });
}

/** The TCP ports with a LISTEN socket in /proc/net/tcp{,6} text (several tables concatenated). */
export function listeningPortsOf(text: string): number[] {
  const ports = new Set<number>();
  for (const line of text.split("\n")) {
    const f = line.trim().split(/\s+/);
    // sl local_address rem_address st ...: state 0A is LISTEN; header lines have "local_address".
    if (f.length < 4 || f[3] !== "0A" || !/^\d+:$/.test(f[0]!)) continue;
    const port = Number.parseInt(f[1]!.split(":")[1] ?? "", 16);
    if (Number.isInteger(port) && port > 0) ports.add(port);
  }
  return [...ports].sort((a, b) => a - b);
}

/**
 * The TCP ports pod `pod` listens on, from its network namespace's own tables: `cat` of
 * /proc/net/tcp and tcp6 through pods/exec (the image needs a `cat`, as nearly every one has).
 * Rejects, saying why, when the exec fails.
 */
export async function podListeningPorts(client: KubeClient, ns: string, pod: string): Promise<number[]> {
  const r = await execInPod(client, ns, pod, ["cat", "/proc/net/tcp", "/proc/net/tcp6"]);
  // tcp6 is missing where IPv6 is off: cat then fails, having printed tcp's table.
  if (r.status.status !== "Success" && !r.stdout.includes("local_address"))
    throw new Error(`reading the listening ports of pod ${ns}/${pod}: ${r.status.message ?? r.stderr}`);
  return listeningPortsOf(r.stdout);
}
