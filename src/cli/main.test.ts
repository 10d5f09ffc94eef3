import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import type { Command } from "commander";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { ApiError } from "./client.js";
import type { Api } from "./deps.js";
import { CliError } from "./errors.js";
import { buildProgram, main } from "./main.js";

/** `loom ...` run in-process against a fake API: flags in, requests and output out. */

const BASE = "/apis/loom.dev/v1alpha1";
const TJ = `${BASE}/projects/team-a/trainingjobs`;

interface Call {
  method: string;
  path: string;
  body?: unknown;
}

type Answer = (call: Call) => unknown;

interface Run {
  calls: Call[];
  stdout: string;
  stderr: string;
  /** What parsing or the action threw (commander's own errors carry a `code`). */
  error?: Error & { code?: string };
}

function job(name: string, extra: Record<string, unknown> = {}) {
  return {
    apiVersion: "loom.dev/v1alpha1",
    kind: "TrainingJob",
    metadata: { name, project: "team-a", uid: `uid-${name}`, resourceVersion: "7" },
    spec: { command: ["python", "train.py"] },
    status: { phase: "Running", ready: "1/1", attempts: 1, restarts: 0 },
    ...extra,
  };
}

const notFound = () => new ApiError(404, { reason: "NotFound", message: "not found" });

/**
 * Runs the CLI with a fake API. `answer` gets each request and returns the body (or an Error to
 * throw); `streams` are the chunks each `api.stream` call yields, in order.
 */
async function loom(args: string[], answer: Answer = () => ({}), streams: string[][] = []): Promise<Run> {
  const run: Run = { calls: [], stdout: "", stderr: "" };
  const api: Api = {
    request: async <T>(method: string, path: string, body?: unknown): Promise<T> => {
      const call = { method, path, ...(body === undefined ? {} : { body }) };
      run.calls.push(call);
      const reply = answer(call);
      if (reply instanceof Error) throw reply;
      return reply as T;
    },
    stream: async (path: string, body?: unknown) => {
      run.calls.push({
        method: body === undefined ? "STREAM" : "STREAM POST",
        path,
        ...(body ? { body } : {}),
      });
      const chunks = streams.shift() ?? [];
      // A first chunk "headers:K=V,K=V" stands for the response's headers (loom logs reads them).
      const head = chunks[0]?.startsWith("headers:") ? chunks.shift()!.slice(8) : undefined;
      const stream = Readable.from(chunks.map((s) => Buffer.from(s)));
      return head === undefined
        ? stream
        : Object.assign(stream, {
            headers: new Headers(head.split(",").map((kv) => kv.split("=") as [string, string])),
          });
    },
  };
  const program = buildProgram({
    client: () => ({ api, defaultProject: "team-a" }),
    stdout: { write: (s) => (run.stdout += s.toString()) },
    stderr: { write: (s) => (run.stderr += s.toString()) },
  });
  // Commander's own output (help, usage errors) and exits, for the program and every command.
  const all = (c: Command): Command[] => [c, ...c.commands.flatMap(all)];
  const commands: Command[] = all(program);
  for (const c of commands) {
    c.exitOverride();
    c.configureOutput({ writeOut: (s) => (run.stdout += s), writeErr: (s) => (run.stderr += s) });
  }
  try {
    await program.parseAsync(["node", "loom", ...args]);
  } catch (err) {
    run.error = err as Run["error"];
  }
  return run;
}

function manifestFile(text: string): string {
  const dir = mkdtempSync(join(tmpdir(), "loom-cli-"));
  const file = join(dir, "m.yaml");
  writeFileSync(file, text);
  return file;
}

beforeEach(() => {
  vi.stubEnv("LOOM_KUBECONFIG", "");
});
afterEach(() => {
  vi.unstubAllEnvs();
});

describe("loom get", () => {
  it("-A -l -o wide lists across projects with the selector, PROJECT and the wide columns", async () => {
    const r = await loom(["get", "tj", "-A", "-l", "a=b", "-o", "wide"], () => ({
      items: [job("one"), { ...job("two"), metadata: { ...job("two").metadata, project: "team-b" } }],
      metadata: { resourceVersion: "9" },
    }));
    expect(r.error).toBeUndefined();
    expect(r.calls).toEqual([{ method: "GET", path: `${BASE}/trainingjobs?labelSelector=a%3Db` }]);
    const [header, ...rows] = r.stdout.trimEnd().split("\n");
    expect(header?.split(/\s+/)).toEqual([
      "PROJECT",
      "NAME",
      "PHASE",
      "READY",
      "ATTEMPT",
      "RESTARTS",
      "CHECKPOINT",
      "REASON",
      "NODE",
      "AGE",
    ]);
    expect(rows.map((l) => l.split(/\s+/).slice(0, 2))).toEqual([
      ["team-a", "one"],
      ["team-b", "two"],
    ]);
  });

  it("lists the default project without wide columns, and says so on stderr when it is empty", async () => {
    const r = await loom(["get", "trainingjobs"], () => ({ items: [], metadata: { resourceVersion: "1" } }));
    expect(r.calls).toEqual([{ method: "GET", path: `${TJ}?` }]);
    expect(r.stdout).toBe("");
    expect(r.stderr).toBe("No trainingjobs found in project team-a.\n");
  });

  it("-p picks the project; a cluster-scoped kind ignores it", async () => {
    const r1 = await loom(["get", "tj", "-p", "other"], () => ({ items: [job("x")], metadata: {} }));
    expect(r1.calls[0]?.path).toBe(`${BASE}/projects/other/trainingjobs?`);
    expect(r1.stdout.split("\n")[0]?.split(/\s+/)).toEqual([
      "NAME",
      "PHASE",
      "READY",
      "ATTEMPT",
      "REASON",
      "AGE",
    ]);
    const r2 = await loom(["get", "projects", "-p", "other"], () => ({ items: [], metadata: {} }));
    expect(r2.calls[0]?.path).toBe(`${BASE}/projects?`);
    expect(r2.stderr).toBe("No projects found.\n");
  });

  it("KIND/NAME -o json fetches the one object and prints it whole", async () => {
    const r = await loom(["get", "tj/hello", "-o", "json"], () => job("hello"));
    expect(r.calls).toEqual([{ method: "GET", path: `${TJ}/hello` }]);
    expect(JSON.parse(r.stdout)).toEqual(job("hello"));
  });

  it("-o name and -o yaml print names and a List", async () => {
    const list = () => ({ items: [job("a"), job("b")], metadata: {} });
    expect((await loom(["get", "tj", "-o", "name"], list)).stdout).toBe(
      "trainingjob.loom.dev/a\ntrainingjob.loom.dev/b\n",
    );
    const yaml = (await loom(["get", "tj", "-o", "yaml"], list)).stdout;
    expect(yaml).toMatch(/^apiVersion: loom.dev\/v1alpha1\nkind: TrainingJobList\nitems:\n/);
  });

  it("an unknown -o format is an error that lists the formats", async () => {
    const r = await loom(["get", "tj", "-o", "xml"], () => ({ items: [], metadata: {} }));
    expect(r.error).toBeInstanceOf(CliError);
    expect(r.error?.message).toBe('unknown output format "xml": use wide, json, yaml or name');
  });

  it("an unknown kind names the known ones and sends nothing", async () => {
    const r = await loom(["get", "jobz"]);
    expect(r.error).toBeInstanceOf(CliError);
    expect(r.error?.message).toMatch(
      /^unknown kind "jobz"; known kinds: Project \(projects, proj\), TrainingJob/,
    );
    expect(r.calls).toEqual([]);
  });

  it("without a kind, commander says what is missing", async () => {
    const r = await loom(["get"]);
    expect(r.error?.code).toBe("commander.missingArgument");
    expect(r.stderr).toContain("error: missing required argument 'kind'");
  });

  it("an unknown flag is refused", async () => {
    const r = await loom(["get", "tj", "--bogus"]);
    expect(r.error?.code).toBe("commander.unknownOption");
    expect(r.stderr).toContain("unknown option '--bogus'");
  });

  it("-w lists, then prints the watched changes to that name from the list's resourceVersion", async () => {
    const events = [
      { type: "MODIFIED", object: job("hello", { status: { phase: "Succeeded" } }) },
      { type: "MODIFIED", object: job("other") },
    ];
    const text = events.map((e) => `${JSON.stringify(e)}\n`).join("");
    const r = await loom(
      ["get", "tj", "hello", "-w", "-l", "x=y"],
      () => ({ items: [job("hello"), job("other")], metadata: { resourceVersion: "42" } }),
      [[text.slice(0, 20), text.slice(20)]],
    );
    expect(r.error).toBeUndefined();
    expect(r.calls).toEqual([
      { method: "GET", path: `${TJ}?labelSelector=x%3Dy` },
      { method: "STREAM", path: `${TJ}?watch=1&resourceVersion=42&labelSelector=x%3Dy` },
    ]);
    const lines = r.stdout.trimEnd().split("\n");
    expect(lines).toHaveLength(3); // header, the listed hello, its change; never "other"
    expect(lines[1]).toMatch(/^hello\s+Running/);
    expect(lines[2]).toMatch(/^hello\s+Succeeded/);
  });

  it("a watch ERROR event ends the command with its message", async () => {
    const r = await loom(["get", "tj", "-w"], () => ({ items: [], metadata: { resourceVersion: "1" } }), [
      [`${JSON.stringify({ type: "ERROR", object: { message: "too old" } })}\n`],
    ]);
    expect(r.error).toBeInstanceOf(CliError);
    expect(r.error?.message).toBe("watch ended: too old");
  });

  it("nodes: a table, one node, or an error naming the missing node", async () => {
    const node = {
      name: "n1",
      pool: "default",
      capacity: { cpuMillis: 8000, memoryBytes: 2 ** 34, gpus: 2 },
      allocated: { cpuMillis: 500, memoryBytes: 2 ** 30, gpus: 1, pods: 1 },
      workloads: ["team-a/hello"],
    };
    const nodes = () => ({ items: [node] });
    const r = await loom(["get", "nodes", "-o", "wide"], nodes);
    expect(r.calls).toEqual([{ method: "GET", path: `${BASE}/nodes` }]);
    expect(r.stdout).toContain("WORKLOADS");
    expect(r.stdout).toMatch(/n1\s+default\s+-\s+1\/2\s+0\.50\/8\s+1Gi\/16Gi\s+1\s+team-a\/hello/);
    expect(JSON.parse((await loom(["get", "no", "n1", "-o", "json"], nodes)).stdout)).toEqual(node);
    const missing = await loom(["get", "node", "n9"], nodes);
    expect(missing.error?.message).toBe('node "n9" not found');
  });
});

describe("loom logs", () => {
  it("KIND/NAME --worker --attempt -f become the log stream's query", async () => {
    const r = await loom(["logs", "tj/x", "--worker", "1", "--attempt", "2", "-f"], undefined, [
      ["step 1\n", "step 2\n"],
    ]);
    expect(r.error).toBeUndefined();
    expect(r.calls).toEqual([{ method: "STREAM", path: `${TJ}/x/log?worker=1&attempt=2&follow=true` }]);
    expect(r.stdout).toBe("step 1\nstep 2\n");
  });

  it("-f waits for a job that has not started, saying why, then follows it", async () => {
    let gets = 0;
    const r = await loom(["logs", "tj/x", "-f"], () => {
      gets++;
      return gets < 2
        ? {
            status: {
              phase: "Pending",
              conditions: [
                { type: "Admitted", status: "False", reason: "InsufficientCapacity", message: "no GPU free" },
              ],
            },
          }
        : { status: { phase: "Running", attempts: 1 } };
    }, [["step 1\n"]]);
    expect(r.error).toBeUndefined();
    expect(r.stderr).toBe(
      "waiting for trainingjob.loom.dev/x to start (InsufficientCapacity: no GPU free); Ctrl-C to stop\n",
    );
    expect(r.calls.map((c) => c.method)).toEqual(["GET", "GET", "STREAM"]);
    expect(r.stdout).toBe("step 1\n");
  });

  it("KIND NAME -p works too, with no query by default", async () => {
    const r = await loom(["logs", "trainingjob", "x", "-p", "p2"]);
    expect(r.calls).toEqual([{ method: "STREAM", path: `${BASE}/projects/p2/trainingjobs/x/log?` }]);
  });

  it("a lone name is a training job's: loom logs hello is tj/hello", async () => {
    const r = await loom(["logs", "hello", "--worker", "0"]);
    expect(r.error).toBeUndefined();
    expect(r.calls).toEqual([{ method: "STREAM", path: `${TJ}/hello/log?worker=0` }]);
  });

  it("ws/NAME, app/NAME, isvc/NAME: a replica's output, --replica --previous -f in the query", async () => {
    const r = await loom(["logs", "ws/nb", "--replica", "1", "--previous", "-f"], undefined, [["boom\n"]]);
    expect(r.error).toBeUndefined();
    expect(r.calls).toEqual([
      {
        method: "STREAM",
        path: `${BASE}/projects/team-a/workspaces/nb/log?replica=1&previous=true&follow=true`,
      },
    ]);
    expect(r.stdout).toBe("boom\n");
    // -f on a service does not wait for a training job's attempt (no GET first).
    expect((await loom(["logs", "app/chat", "-f"])).calls).toEqual([
      { method: "STREAM", path: `${BASE}/projects/team-a/apps/chat/log?follow=true` },
    ]);
    expect((await loom(["logs", "isvc", "m"])).calls).toEqual([
      { method: "STREAM", path: `${BASE}/projects/team-a/inferenceservices/m/log?` },
    ]);
  });

  it("when nothing runs and the server sends the last exited replica's output, says whose it is", async () => {
    const r = await loom(["logs", "ws/nb"], undefined, [
      ["headers:x-loom-replica=nb-ws1-r3,x-loom-previous=true", "Traceback\n"],
    ]);
    expect(r.stderr).toBe(
      "no replica of workspace.loom.dev/nb runs; this is the output of nb-ws1-r3, the last one that exited\n",
    );
    expect(r.stdout).toBe("Traceback\n");
    const asked = await loom(["logs", "ws/nb", "--previous"], undefined, [
      ["headers:x-loom-replica=nb-ws1-r3,x-loom-previous=true", "Traceback\n"],
    ]);
    expect(asked.stderr).toBe("");
  });

  it("a job's flags on a service and a service's on a job say which to use", async () => {
    expect((await loom(["logs", "ws/nb", "--worker", "0"])).error?.message).toBe(
      "--worker and --attempt are for training jobs; a Workspace has replicas: use --replica or --previous",
    );
    expect((await loom(["logs", "tj/x", "--previous"])).error?.message).toBe(
      "--replica and --previous are for workspaces, apps and services; use --worker or --attempt",
    );
  });

  it("a kind without a name, or a name twice, says how to name it", async () => {
    expect((await loom(["logs", "tj"])).error?.message).toBe(
      "name the trainingjob: loom logs tj/NAME (or tj NAME)",
    );
    expect((await loom(["describe", "hello"])).error?.message).toMatch(
      /^say which kind "hello" is: loom describe KIND\/hello, e\.g\. loom describe tj\/hello \(kinds: Project /,
    );
    expect((await loom(["logs", "tj/x", "y"])).error?.message).toBe(
      'give either KIND/NAME or KIND NAME, not both ("tj/x" "y")',
    );
  });
});

describe("loom describe", () => {
  it("fetches the object and its events, and prints them in sections", async () => {
    const r = await loom(["describe", "tj", "hello", "-p", "p2"], (c) =>
      c.path.includes("/events")
        ? {
            items: [
              {
                type: "Normal",
                reason: "Started",
                message: "worker 0 started",
                count: 1,
                firstTimestamp: "2020-01-01T00:00:00Z",
                lastTimestamp: "2020-01-01T00:00:00Z",
              },
            ],
          }
        : job("hello"),
    );
    expect(r.calls).toEqual([
      { method: "GET", path: `${BASE}/projects/p2/trainingjobs/hello` },
      { method: "GET", path: `${BASE}/projects/p2/events?kind=TrainingJob&name=hello` },
    ]);
    expect(r.stdout).toMatch(/^Name: +hello\n/);
    expect(r.stdout).toMatch(
      /Events:\n {2}TYPE +REASON +AGE +COUNT +MESSAGE\n {2}Normal +Started +\S+ +1 +worker 0 started\n$/,
    );
  });

  it("a cluster-scoped kind has no events request", async () => {
    const r = await loom(["describe", "project/p1"], () => ({
      apiVersion: "loom.dev/v1alpha1",
      kind: "Project",
      metadata: { name: "p1" },
      spec: {},
    }));
    expect(r.calls).toEqual([{ method: "GET", path: `${BASE}/projects/p1` }]);
    expect(r.stdout).not.toContain("Project: ");
  });

  it("without arguments commander names the missing one", async () => {
    const r = await loom(["describe"]);
    expect(r.error?.code).toBe("commander.missingArgument");
    expect(r.stderr).toContain("missing required argument 'kind'");
    expect(r.stderr).toBe("error: missing required argument 'kind' (see 'loom describe --help')\n");
  });
});

describe("loom apply", () => {
  const two = `apiVersion: loom.dev/v1alpha1
kind: TrainingJob
metadata: {name: a, resourceVersion: "3"}
spec: {}
---
apiVersion: loom.dev/v1alpha1
kind: TrainingJob
metadata: {name: b, project: mine}
spec: {}
`;

  it("validates every document first, then creates or updates each", async () => {
    const r = await loom(["apply", "-f", manifestFile(two)], (c) => {
      if (c.path.includes("dryRun")) return {};
      if (c.method === "POST" && c.path === `${TJ}`) return {};
      if (c.method === "POST") return new ApiError(409, { reason: "AlreadyExists", message: "exists" });
      if (c.method === "GET")
        return job("b", { metadata: { name: "b", resourceVersion: "5", labels: { team: "x" } } });
      return { metadata: { resourceVersion: "6" }, spec: { command: ["python", "train.py"] }, status: {} };
    });
    expect(r.error).toBeUndefined();
    expect(r.calls.map((c) => `${c.method} ${c.path}`)).toEqual([
      `POST ${TJ}?dryRun=All`,
      `POST ${BASE}/projects/mine/trainingjobs?dryRun=All`,
      `POST ${TJ}`,
      `POST ${BASE}/projects/mine/trainingjobs`,
      `GET ${BASE}/projects/mine/trainingjobs/b`,
      `PUT ${BASE}/projects/mine/trainingjobs/b`,
    ]);
    // The stored resourceVersion is dropped on create, the current one sent on update.
    expect(r.calls[2]?.body).toMatchObject({ metadata: { name: "a", project: "team-a" } });
    expect(r.calls[2]?.body).not.toHaveProperty("metadata.resourceVersion");
    expect(r.calls[5]?.body).toMatchObject({
      metadata: { name: "b", project: "mine", resourceVersion: "5" },
    });
    // b's command is as stored and its label goes: a metadata-only change.
    expect(r.stdout).toBe(
      "trainingjob.loom.dev/a created\ntrainingjob.loom.dev/b configured (labels/annotations only: the job is not restarted)\n",
    );
  });

  it("an update that changes nothing says unchanged", async () => {
    const r = await loom(["apply", "-f", manifestFile(two), "-p", "p9"], (c) => {
      if (c.path.includes("dryRun")) return {};
      if (c.method === "POST") return new ApiError(409, { reason: "AlreadyExists", message: "exists" });
      return { metadata: { resourceVersion: "5" } };
    });
    expect(r.calls[0]?.path).toBe(`${BASE}/projects/p9/trainingjobs?dryRun=All`);
    expect(r.stdout).toBe("trainingjob.loom.dev/a unchanged\ntrainingjob.loom.dev/b unchanged\n");
  });

  it("a document the server rejects means nothing is written, and each problem is named", async () => {
    const r = await loom(["apply", "-f", manifestFile(two)], (c) =>
      c.path.startsWith(TJ)
        ? new ApiError(422, {
            details: { causes: [{ field: "spec.command", message: "required field is missing" }] },
          })
        : {},
    );
    expect(r.error).toBeInstanceOf(CliError);
    expect(r.error?.message).toMatch(
      /^nothing was applied:\n.*m\.yaml: TrainingJob "a": spec\.command: required field is missing$/,
    );
    expect(r.calls.every((c) => c.path.includes("dryRun=All"))).toBe(true);
  });

  it("--dry-run asks for the admission preview and prints it, writing nothing", async () => {
    const r = await loom(["apply", "--dry-run", "-f", manifestFile(two)], (c) =>
      c.path.startsWith(TJ) ? { status: { admissionPreview: { message: "would start now" } } } : {},
    );
    expect(r.calls.map((c) => c.path)).toEqual([
      `${TJ}?dryRun=All&preview=admission`,
      `${BASE}/projects/mine/trainingjobs?dryRun=All&preview=admission`,
    ]);
    expect(r.stdout).toBe(
      "trainingjob.loom.dev/a created (dry run): would start now\ntrainingjob.loom.dev/b created (dry run)\n",
    );
  });

  it("-f is required", async () => {
    const r = await loom(["apply"]);
    expect(r.error?.code).toBe("commander.missingMandatoryOptionValue");
    expect(r.stderr).toContain("required option '-f, --filename <path...>' not specified");
  });
});

describe("loom delete", () => {
  it("deletes each name and, with --wait false, returns at once", async () => {
    const r = await loom(["delete", "tj", "a", "b", "--wait", "false"]);
    expect(r.calls).toEqual([
      { method: "DELETE", path: `${TJ}/a` },
      { method: "DELETE", path: `${TJ}/b` },
    ]);
    expect(r.stdout).toBe("trainingjob.loom.dev/a deleted\ntrainingjob.loom.dev/b deleted\n");
  });

  it("--all lists the kind, deletes each, then waits until each is gone", async () => {
    const r = await loom(["delete", "tj", "--all"], (c) => {
      if (c.method === "GET" && c.path === TJ) return { items: [job("a")] };
      if (c.method === "GET") return notFound();
      return {};
    });
    expect(r.error).toBeUndefined();
    expect(r.calls.map((c) => `${c.method} ${c.path}`)).toEqual([
      `GET ${TJ}`,
      `DELETE ${TJ}/a`,
      `GET ${TJ}/a`,
    ]);
  });

  it("an object that cannot be deleted is reported and the command fails", async () => {
    const r = await loom(["delete", "tj/a", "--wait", "false"], () => notFound());
    expect(r.stderr).toBe("error: not found\n");
    expect(r.error?.message).toBe("some objects were not deleted");
  });

  it("says what to name when nothing or only a kind is given", async () => {
    expect((await loom(["delete"])).error?.message).toBe(
      "name what to delete: loom delete KIND NAME, loom delete KIND --all, or loom delete -f FILE",
    );
    expect((await loom(["delete", "tj"])).error?.message).toBe(
      "name the trainingjob to delete, or pass --all",
    );
  });

  it("-f deletes the objects the manifests name, in their projects", async () => {
    const file = manifestFile("kind: TrainingJob\nmetadata: {name: m, project: p3}\n");
    const r = await loom(["delete", "-f", file, "--wait", "false"]);
    expect(r.calls).toEqual([{ method: "DELETE", path: `${BASE}/projects/p3/trainingjobs/m` }]);
  });
});

describe("the other commands", () => {
  it("top asks for project usage and nodes", async () => {
    const r = await loom(["top"], () => ({ items: [] }));
    expect(r.calls.map((c) => c.path).sort()).toEqual([`${BASE}/nodes`, `${BASE}/usage/projects`]);
    expect(r.stdout).toMatch(/^PROJECT\s+GPUS\s+DESERVED/);
  });

  it("token create sends name, role and project, and prints the token", async () => {
    const r = await loom(["token", "create", "bot", "--role", "viewer", "-p", "p1"], () => ({
      token: "t0k",
    }));
    expect(r.calls).toEqual([
      { method: "POST", path: `${BASE}/tokens`, body: { name: "bot", role: "viewer", project: "p1" } },
    ]);
    expect(r.stdout).toBe("t0k\n");
  });

  it("apikey create sends the services of the default project", async () => {
    const r = await loom(["apikey", "create", "k", "--service", "s1", "s2"], () => ({ key: "lk-1" }));
    expect(r.calls).toEqual([
      {
        method: "POST",
        path: `${BASE}/projects/team-a/apikeys`,
        body: { name: "k", services: ["s1", "s2"] },
      },
    ]);
    expect(r.stdout).toBe("lk-1\n");
  });

  it("token and apikey: --ttl on create, list shows no secret, revoke by id", async () => {
    const created = await loom(["token", "create", "ci", "--ttl", "12h"], () => ({ token: "t" }));
    expect(created.calls[0]?.body).toEqual({ name: "ci", role: "editor", ttl: "12h" });
    const soon = new Date(Date.now() + 7200_000).toISOString();
    const listed = await loom(["token", "list"], () => ({
      items: [
        { id: "id-1", name: "ci", role: "editor", createdAt: new Date().toISOString(), expiresAt: soon },
      ],
    }));
    expect(listed.calls).toEqual([{ method: "GET", path: `${BASE}/tokens` }]);
    expect(listed.stdout).toMatch(/^ID\s+NAME\s+ROLE\s+PROJECT\s+AGE\s+EXPIRES\s+LAST USED\n/);
    expect(listed.stdout).toMatch(/id-1\s+ci\s+editor\s+\*\s+\S+\s+in (1h|2h|119m|120m)\s+-/);
    const revoked = await loom(["token", "revoke", "id-1"], () => ({}));
    expect(revoked.calls).toEqual([{ method: "DELETE", path: `${BASE}/tokens/id-1` }]);
    const key = await loom(["apikey", "revoke", "k-1", "-p", "p2"], () => ({}));
    expect(key.calls).toEqual([{ method: "DELETE", path: `${BASE}/projects/p2/apikeys/k-1` }]);
    const keys = await loom(["apikey", "list"], () => ({ items: [] }));
    expect(keys.calls).toEqual([{ method: "GET", path: `${BASE}/projects/team-a/apikeys` }]);
  });

  it("a misuse is one line and exit code 1, for nested commands too", async () => {
    const r = await loom(["token", "bogus"]);
    expect((r.error as { exitCode?: number })?.exitCode).toBe(1);
    expect(r.stderr).toBe("error: unknown command 'bogus' (see 'loom token --help')\n");
    const missing = await loom(["apikey", "revoke"]);
    expect((missing.error as { exitCode?: number })?.exitCode).toBe(1);
    expect(missing.stderr).toBe("error: missing required argument 'id' (see 'loom apikey revoke --help')\n");
  });

  it("chat streams a completion request and prints the streamed deltas", async () => {
    const sse = [
      'data: {"choices":[{"delta":{"content":"Hel"}}]}\n\n',
      'data: {"choices":[{"delta":{"content":"lo"}}]}\n\ndata: [DONE]\n\n',
    ];
    const r = await loom(["chat", "svc", "say", "hi", "--max-tokens", "5", "--temperature", "0"], undefined, [
      sse,
    ]);
    expect(r.calls).toEqual([
      {
        method: "STREAM POST",
        path: "/v1/chat/completions",
        body: {
          model: "team-a/svc",
          messages: [{ role: "user", content: "say hi" }],
          max_tokens: 5,
          temperature: 0,
          stream: true,
        },
      },
    ]);
    expect(r.stdout).toBe("Hello\n");
  });

  it("crds prints a JSON List or YAML documents, and refuses other formats", async () => {
    const json = JSON.parse((await loom(["crds", "-o", "json"])).stdout) as {
      kind: string;
      items: unknown[];
    };
    expect(json.kind).toBe("List");
    expect(json.items.length).toBeGreaterThan(0);
    const yaml = (await loom(["crds"])).stdout;
    expect(yaml.split("---\n")).toHaveLength(json.items.length);
    expect((await loom(["crds", "-o", "xml"])).error?.message).toBe(
      'unknown output format "xml": use yaml or json',
    );
  });

  it("version prints the client's version and the server's, or why it has none", async () => {
    const ok = await loom(["version"], () => ({ version: "9.9.9" }));
    expect(ok.stdout).toMatch(/^Client: \S+\nServer: 9\.9\.9\n$/);
    const down = await loom(["version"], () => new CliError("cannot reach Loom"));
    expect(down.stdout).toMatch(/\nServer: unavailable \(cannot reach Loom\)\n$/);
  });

  it("an unknown command is refused with help", async () => {
    const r = await loom(["frobnicate"]);
    expect(r.error?.code).toBe("commander.unknownCommand");
    expect(r.stderr).toContain("unknown command 'frobnicate'");
  });
});

describe("main", () => {
  it("prints a user error as one line on stderr and sets exit code 1", async () => {
    const stderr = vi.spyOn(process.stderr, "write").mockImplementation(() => true);
    try {
      await main(["node", "loom", "get", "nope"]);
      expect(process.exitCode).toBe(1);
      expect(stderr).toHaveBeenCalledTimes(1);
      expect(String(stderr.mock.calls[0]?.[0])).toMatch(/^error: unknown kind "nope"; known kinds: .*\n$/);
    } finally {
      stderr.mockRestore();
      process.exitCode = undefined;
    }
  });
});
