// gpu-check's steps under Loom itself: a real `loom up` (GPUs from nvidia-smi; `--gpus 1` in the
// CPU rehearsal), driven through its CLI and REST API like a user would. Plain JavaScript run by
// the node that gpu-check.sh found or unpacked: the GPU machine has no tsx, only dist/.
// Steps (each timed out, reported, and the next run anyway):
//   loom-up         the server starts and reports the GPU it found
//   frac-oom        two `gpu: 0.5` jobs on one GPU: the one allocating 70% fails with CUDA OOM, the 30% one finishes
//   frac-rate       products/s of a whole-GPU job, then of two 0.5 jobs computing at once (goal >= 0.45x each)
//   ddp             examples/pretrain with 2 workers of 0.5 on the GPU (NCCL; gloo on CUDA tensors where NCCL refuses)
//   serving         an InferenceService replica on the GPU answers an OpenAI chat request through the gateway
//   pretrain        examples/pretrain's step time under Loom and under torchrun, alternated (goal <= 1.03x)
// Env: GC_MODE (gpu|rehearse), GC_PY (python with torch), GC_WORK (scratch dir), GC_SUMMARY (file
// the result lines are appended to), GC_DEADLINE (epoch seconds the steps must end by).
import { spawn, spawnSync } from "node:child_process";
import { appendFileSync, createWriteStream, existsSync, mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
const BIN = join(ROOT, "bin", "loom.js");
const REHEARSE = process.env.GC_MODE === "rehearse";
const PY = process.env.GC_PY || "python3";
const WORK = process.env.GC_WORK || "/tmp/loom-gpu-check";
const SUMMARY = process.env.GC_SUMMARY || join(WORK, "summary.txt");
const DEADLINE = Number(process.env.GC_DEADLINE || Date.now() / 1000 + 480);
const BASE = "/apis/loom.dev/v1alpha1/projects/default";
const DEVICE = REHEARSE ? "cpu" : "cuda";
// Sizes: a GPU run worth timing; on the CPU rehearsal as small as still proves the plumbing.
const RES = REHEARSE ? { cpu: "500m", memory: "1Gi" } : { cpu: "2", memory: "8Gi" };
const PRETRAIN = REHEARSE
  ? ["--steps", "8", "--timing-warmup", "2", "--batch-size", "4", "--context", "32", "--log-every", "4"]
  : ["--steps", "400", "--timing-warmup", "50", "--batch-size", "64", "--d-model", "256", "--layers", "4", "--heads", "8", "--log-every", "100"];
const RATE_SECONDS = REHEARSE ? 2 : 10;

mkdirSync(WORK, { recursive: true });
const env = { ...process.env, LOOM_CONFIG: join(WORK, "loom-config.yaml"), LOOM_LOG_LEVEL: "info" };
delete env.LOOM_URL;
delete env.LOOM_TOKEN;
const figures = {};
let failed = false;
let url = "";
let token = "";

/** One line of the table: step, PASS/FAIL/SKIP, what was seen. */
function result(step, status, detail) {
  const line = `${step.padEnd(12)} ${status.padEnd(5)} ${detail}`;
  appendFileSync(SUMMARY, `${line}\n`);
  console.log(line);
  if (status === "FAIL") failed = true;
}

/** Runs the loom CLI; never longer than `ms`. */
function cli(args, input = "", ms = 60_000) {
  const r = spawnSync(process.execPath, [BIN, ...args], { env, cwd: ROOT, input, encoding: "utf8", timeout: ms });
  return { code: r.status ?? -1, out: `${r.stdout ?? ""}${r.stderr ?? ""}` };
}

async function api(method, path, body) {
  const res = await fetch(`${url}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body ? { "content-type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
    signal: AbortSignal.timeout(30_000),
  });
  const text = await res.text();
  try {
    return { status: res.status, body: JSON.parse(text) };
  } catch {
    return { status: res.status, body: text };
  }
}

async function startLoom() {
  const args = [BIN, "up", "--data-dir", join(WORK, "loom-data"), "--port", "0", ...(REHEARSE ? ["--gpus", "1"] : [])];
  const proc = spawn(process.execPath, args, { env, cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
  const log = createWriteStream(join(WORK, "loom-up.log"));
  proc.stderr.pipe(log);
  let out = "";
  const up = await new Promise((ok) => {
    const timer = setTimeout(() => ok(false), 60_000);
    proc.stdout.on("data", (d) => {
      out += d.toString();
      log.write(d);
      url = /is up at (\S+)/.exec(out)?.[1] ?? "";
      token = /admin token: (\S+)/.exec(out)?.[1] ?? "";
      if (url && token) {
        clearTimeout(timer);
        ok(true);
      }
    });
    proc.on("exit", () => ok(false));
  });
  const gpus = /gpus:\s+(.*)/.exec(out)?.[1]?.trim() ?? "?";
  figures.loomGpus = gpus;
  const real = REHEARSE ? /virtual/.test(gpus) : /NVIDIA|H100|H200/.test(gpus);
  if (up && real) result("loom-up", "PASS", `loom up: gpus: ${gpus}`);
  else result("loom-up", "FAIL", up ? `GPUs not found as expected: gpus: ${gpus}` : `did not start in 60 s (loom-up.log): ${out.slice(-200)}`);
  return up ? proc : undefined;
}

const job = (name, spec) =>
  api("POST", `${BASE}/trainingjobs`, {
    apiVersion: "loom.dev/v1alpha1",
    kind: "TrainingJob",
    metadata: { name },
    spec: { workingDir: ROOT, failurePolicy: { maxRestarts: 0 }, terminationGracePeriodSeconds: 5, ...spec },
  });

/** Waits for every job to end (Succeeded/Failed); returns name -> phase ("Timeout" if not). */
async function waitJobs(names, ms) {
  const phases = {};
  const end = Date.now() + ms;
  while (Date.now() < end && names.some((n) => !["Succeeded", "Failed"].includes(phases[n]))) {
    for (const n of names) phases[n] = (await api("GET", `${BASE}/trainingjobs/${n}`)).body?.status?.phase ?? "?";
    await sleep(500);
  }
  for (const n of names) if (!["Succeeded", "Failed"].includes(phases[n])) phases[n] = `Timeout(${phases[n]})`;
  return phases;
}

function logsOf(name) {
  const out = cli(["logs", `tj/${name}`]).out;
  writeFileSync(join(WORK, `job-${name}.log`), out);
  return out;
}

const pyArgs = (script, ...args) => [PY, script, ...args];
const frac = (alloc, startAt, seconds = 2) =>
  pyArgs("scripts/gpu-check/frac.py", "--alloc", String(alloc), "--seconds", String(seconds), "--start-at", String(startAt));
const rate = (log) => Number(/rate=([\d.]+)/.exec(log)?.[1] ?? Number.NaN);
const timeLeft = () => DEADLINE - Date.now() / 1000;

/** Runs `fn` unless fewer than `need` seconds are left; a throw is the step's FAIL, not the run's end. */
async function step(name, need, fn) {
  if (timeLeft() < need) return result(name, "SKIP", `out of time (${Math.round(timeLeft())} s left, needs ${need})`);
  try {
    await fn();
  } catch (err) {
    result(name, "FAIL", `error: ${String(err?.stack ?? err).split("\n").slice(0, 2).join(" ")}`);
  }
}

async function fracOom() {
  const half = { ...RES, gpu: 0.5 };
  await job("gc-within", { command: frac(0.3, 0), resources: half });
  await job("gc-over", { command: frac(0.7, 0), resources: half });
  const p = await waitJobs(["gc-within", "gc-over"], 150_000);
  const within = logsOf("gc-within");
  const over = logsOf("gc-over");
  const oom = /out of memory/i.test(over);
  const limit = /limit=(\S+)/.exec(within)?.[1] ?? "?";
  figures.oom = { within: p["gc-within"], over: p["gc-over"], limit, line: /OOM: (.*)/.exec(over)?.[1] ?? "" };
  const ok = p["gc-within"] === "Succeeded" && p["gc-over"] === "Failed" && oom;
  result(
    "frac-oom",
    ok ? "PASS" : "FAIL",
    `0.3 of the device: ${p["gc-within"]}; 0.7: ${p["gc-over"]}${oom ? " with CUDA OOM" : " (no OOM in its log)"}; MPS limit ${limit}`,
  );
}

async function fracRate() {
  await job("gc-solo", { command: frac(0.05, 0, RATE_SECONDS), resources: { ...RES, gpu: 1 } });
  await waitJobs(["gc-solo"], 120_000);
  const solo = rate(logsOf("gc-solo"));
  // Both start computing at the same moment, however far apart their processes came up. The
  // rehearsal judges no rate: a short wait still runs --start-at, without 20 s of an idle test.
  const at = Date.now() / 1000 + (REHEARSE ? 5 : 25);
  for (const n of ["gc-share-a", "gc-share-b"])
    await job(n, { command: frac(0.05, at, RATE_SECONDS), resources: { ...RES, gpu: 0.5 } });
  await waitJobs(["gc-share-a", "gc-share-b"], 150_000);
  const a = rate(logsOf("gc-share-a"));
  const b = rate(logsOf("gc-share-b"));
  figures.rate = { solo, a, b, ratioA: a / solo, ratioB: b / solo };
  const ok = REHEARSE ? a > 0 && b > 0 && solo > 0 : a / solo >= 0.45 && b / solo >= 0.45;
  result(
    "frac-rate",
    ok ? "PASS" : "FAIL",
    `whole GPU ${solo.toFixed(1)} products/s; two 0.5 jobs at once ${a.toFixed(1)} and ${b.toFixed(1)} = ${(a / solo).toFixed(2)}x, ${(b / solo).toFixed(2)}x (goal >= 0.45x${REHEARSE ? ", not judged on CPU" : ""})`,
  );
}

async function ddpRun(name, backend) {
  const args = ["--device", DEVICE, "--backend", backend, "--checkpoint-every", "0", ...PRETRAIN];
  await job(name, {
    workers: 2,
    framework: "pytorch",
    command: pyArgs("examples/pretrain/train.py", ...args),
    resources: { ...RES, gpu: 0.5 },
  });
  const phase = (await waitJobs([name], 180_000))[name];
  const log = logsOf(name);
  return { phase, log, steptime: Number(/STEPTIME mean_s=([\d.]+)/.exec(log)?.[1] ?? Number.NaN) };
}

async function ddp() {
  const nccl = await ddpRun("gc-ddp", REHEARSE ? "gloo" : "nccl");
  const refusal = /Duplicate GPU detected[^\n]*|ncclInvalidUsage[^\n]*/.exec(nccl.log)?.[0];
  figures.ddp = { backend: REHEARSE ? "gloo" : "nccl", phase: nccl.phase, steptime: nccl.steptime };
  if (nccl.phase === "Succeeded")
    return result("ddp", "PASS", `2 workers x 0.5 GPU, ${figures.ddp.backend}: ${(nccl.steptime * 1000).toFixed(1)} ms/step, ${/FINAL \S+ \S+/.exec(nccl.log)?.[0]}`);
  if (!refusal || REHEARSE) return result("ddp", "FAIL", `${figures.ddp.backend}: ${nccl.phase} (job-gc-ddp.log)`);
  // NCCL refuses two ranks on one device; gloo moves CUDA tensors through the host instead.
  const gloo = await ddpRun("gc-ddp-gloo", "gloo");
  figures.ddp = { backend: "gloo (NCCL refused)", nccl: refusal.slice(0, 160), phase: gloo.phase, steptime: gloo.steptime };
  result(
    "ddp",
    gloo.phase === "Succeeded" ? "PASS" : "FAIL",
    `NCCL refused 2 ranks on one GPU ("${refusal.slice(0, 100)}"); gloo on CUDA tensors: ${gloo.phase}, ${(gloo.steptime * 1000).toFixed(1)} ms/step`,
  );
}

async function serving() {
  const key = cli(["apikey", "create", "gpu-check", "-p", "default"]).out.trim().split("\n").pop();
  const made = await api("POST", `${BASE}/inferenceservices`, {
    apiVersion: "loom.dev/v1alpha1",
    kind: "InferenceService",
    metadata: { name: "gc-chat" },
    spec: {
      model: join(ROOT, "examples", "pretrain"),
      runtime: { command: pyArgs("scripts/gpu-check/serve.py"), workingDir: ROOT },
      resources: { ...RES, gpu: 1 },
      replicas: { min: 1, max: 1 },
    },
  });
  if (made.status !== 201) return result("serving", "FAIL", `create: ${made.status} ${JSON.stringify(made.body).slice(0, 200)}`);
  const end = Date.now() + 150_000;
  let ready = 0;
  while (Date.now() < end && ready < 1) {
    ready = (await api("GET", `${BASE}/inferenceservices/gc-chat`)).body?.status?.ready ?? 0;
    if (ready < 1) await sleep(500);
  }
  if (ready < 1) return result("serving", "FAIL", "no replica ready in 150 s (loom-up.log)");
  const t0 = performance.now();
  const res = await fetch(`${url}/v1/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: JSON.stringify({ model: "gc-chat", max_tokens: 8, messages: [{ role: "user", content: "the ship" }] }),
    signal: AbortSignal.timeout(60_000),
  });
  const ms = performance.now() - t0;
  const text = await res.text();
  writeFileSync(join(WORK, "serving-answer.json"), text);
  let body = {};
  try {
    body = JSON.parse(text);
  } catch {}
  const where = body.system_fingerprint ?? "?";
  figures.serving = { status: res.status, where, ms };
  const ok = res.status === 200 && where.startsWith(REHEARSE ? "cpu" : "cuda:") && !!body.choices?.[0]?.message;
  result("serving", ok ? "PASS" : "FAIL", `chat through the gateway: ${res.status} in ${ms.toFixed(0)} ms, computed on ${where}, replica ${res.headers.get("x-loom-replica") ?? "?"}`);
  await api("DELETE", `${BASE}/inferenceservices/gc-chat`);
}

/** examples/pretrain with torchrun alone: the baseline Loom's run is compared with. */
function torchrun(i) {
  const ckpt = join(WORK, `torchrun-ckpt-${i}`);
  const r = spawnSync(
    PY,
    ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "--redirects", "1:0", "--tee", "1:0",
      "examples/pretrain/train.py", "--device", DEVICE, "--checkpoint-every", "0", ...PRETRAIN],
    { cwd: ROOT, env: { ...process.env, LOOM_CHECKPOINT_DIR: ckpt }, encoding: "utf8", timeout: 150_000 },
  );
  const log = `${r.stdout ?? ""}${r.stderr ?? ""}`;
  writeFileSync(join(WORK, `torchrun-${i}.log`), log);
  return Number(/STEPTIME mean_s=([\d.]+)/.exec(log)?.[1] ?? Number.NaN);
}

async function pretrain() {
  const loom = [];
  const base = [];
  const rounds = REHEARSE ? 1 : 2;
  for (let i = 0; i < rounds && timeLeft() > 60; i++) {
    base.push(torchrun(i));
    const name = `gc-pretrain-${i}`;
    await job(name, {
      command: pyArgs("examples/pretrain/train.py", "--device", DEVICE, "--checkpoint-every", "0", ...PRETRAIN),
      resources: { ...RES, gpu: 1 },
    });
    await waitJobs([name], 150_000);
    loom.push(Number(/STEPTIME mean_s=([\d.]+)/.exec(logsOf(name))?.[1] ?? Number.NaN));
  }
  const best = (xs) => Math.min(...xs.filter((x) => Number.isFinite(x)));
  const ratio = best(loom) / best(base);
  figures.pretrain = { loom, torchrun: base, ratio };
  const ms = (xs) => xs.map((x) => (x * 1000).toFixed(2)).join("/");
  const ok = Number.isFinite(ratio) && (REHEARSE || ratio <= 1.03);
  result("pretrain", ok ? "PASS" : "FAIL", `ms/step under Loom ${ms(loom)}, torchrun ${ms(base)}: ratio ${ratio.toFixed(3)} (best of each; goal <= 1.03${REHEARSE ? ", not judged on CPU" : ""})`);
}

/** MPS daemons outlive `loom up` by design (docs/gpus.md); the check leaves none behind. */
function stopMps() {
  const dir = join(WORK, "loom-data", "gpu-mps");
  if (!existsSync(dir)) return;
  for (const id of readdirSync(dir))
    spawnSync("nvidia-cuda-mps-control", [], {
      input: "quit\n",
      env: { ...process.env, CUDA_MPS_PIPE_DIRECTORY: join(dir, id, "pipe") },
      timeout: 20_000,
    });
}

const server = await startLoom();
if (server) {
  await step("frac-oom", 60, fracOom);
  await step("frac-rate", 70, fracRate);
  await step("ddp", 60, ddp);
  await step("serving", 40, serving);
  await step("pretrain", 60, pretrain);
  cli(["delete", "tj", "--all", "--timeout", "30"], "", 40_000);
  server.kill("SIGTERM");
  await new Promise((ok) => {
    const t = setTimeout(ok, 20_000);
    server.on("exit", () => {
      clearTimeout(t);
      ok();
    });
  });
}
stopMps();
writeFileSync(join(WORK, "loom-figures.json"), `${JSON.stringify(figures, null, 2)}\n`);
process.exit(failed || !server ? 1 : 0);
