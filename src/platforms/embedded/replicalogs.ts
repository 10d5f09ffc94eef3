import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { NotFoundError } from "../../api/errors.js";
import { kindByKind } from "../../api/kinds.js";
import type { ReplicaLog, ReplicaLogOptions, Runtime, WorkloadRef } from "../../ports/runtime.js";
import { tailFile } from "./tail.js";

/** How much of an exited replica's output is kept (its end: where a crash says why). */
const KEEP_BYTES = 1024 * 1024;

/**
 * The output of each revision's last exited replica, as the kubelet keeps a crashed container's
 * for `kubectl logs --previous`: the process runtime forgets a replica's files when it is
 * released, so its output is copied beside the revision's record first
 * (`DIR/PROJECT/REVISION.previous.log`, the replica's id in `.previous.replica`).
 */
export class PreviousLogs {
  constructor(
    private readonly dir: string,
    private readonly runtime: Pick<Runtime, "logs">,
  ) {}

  /** Keeps an exited replica's output (before its release); returns its last lines, for an event. */
  async keep(ref: WorkloadRef, revision: string): Promise<string> {
    let text: Buffer;
    try {
      text = await readAll(await this.runtime.logs(ref, { worker: 0 }), KEEP_BYTES);
    } catch {
      return "";
    }
    mkdirSync(join(this.dir, ref.project), { recursive: true });
    const base = this.base(ref.project, revision);
    writeFileSync(`${base}.log`, text);
    writeFileSync(`${base}.replica`, ref.name);
    return lastLines(text.toString("utf8"));
  }

  /** The last exited replica of the revision and its output; undefined when none exited. */
  read(project: string, revision: string): { replica: string; stream: Readable } | undefined {
    const base = this.base(project, revision);
    if (!existsSync(`${base}.log`)) return undefined;
    const replica = existsSync(`${base}.replica`) ? readFileSync(`${base}.replica`, "utf8") : revision;
    return { replica, stream: tailFile(`${base}.log`, { follow: false, finished: () => true }) };
  }

  /** Forgets a deleted revision's output. */
  remove(project: string, revision: string): void {
    const base = this.base(project, revision);
    rmSync(`${base}.log`, { force: true });
    rmSync(`${base}.replica`, { force: true });
  }

  private base(project: string, revision: string): string {
    return join(this.dir, project, `${revision}.previous`);
  }
}

/** A running replica `loom logs` may show. */
export interface LiveReplica {
  id: string;
  ref: WorkloadRef;
  ready: boolean;
  startedAt: string;
}

/**
 * Picks the replica `loom logs` shows and streams its output: the one asked for (id or index),
 * else the first ready, else the newest; the last exited one when asked (`previous`) or when none
 * runs. Undefined when no replica runs or ran.
 */
export async function replicaLogsOf(
  live: LiveReplica[],
  previous: (revision: string) => { replica: string; stream: Readable } | undefined,
  revisions: string[],
  runtime: Pick<Runtime, "logs">,
  opts: ReplicaLogOptions,
): Promise<ReplicaLog | undefined> {
  const exited = () => {
    for (const rev of revisions) {
      const p = previous(rev);
      if (p) return p;
    }
    return undefined;
  };
  if (opts.previous) {
    const p = exited();
    if (!p) return undefined;
    if (opts.replica !== undefined && !/^\d+$/.test(opts.replica) && opts.replica !== p.replica) {
      p.stream.destroy();
      throw new NotFoundError(
        `replica ${opts.replica} is not the last one that exited (that is ${p.replica}); omit --replica`,
      );
    }
    return { replica: p.replica, previous: true, stream: p.stream };
  }
  let chosen: LiveReplica | undefined;
  if (opts.replica !== undefined) {
    const ids = live.map((r) => r.id);
    chosen = /^\d+$/.test(opts.replica)
      ? live[Number(opts.replica)]
      : live.find((r) => r.id === opts.replica);
    if (!chosen) {
      throw new NotFoundError(
        ids.length === 0
          ? `no replica runs now, so there is no replica ${opts.replica}; loom logs --previous shows the last one that exited`
          : `no running replica ${opts.replica}; the running ones are ${ids.map((id, i) => `${i} (${id})`).join(", ")}`,
      );
    }
  } else {
    chosen =
      live.find((r) => r.ready) ??
      [...live].sort((a, b) => Date.parse(b.startedAt) - Date.parse(a.startedAt))[0];
  }
  if (!chosen) {
    const p = exited();
    return p ? { replica: p.replica, previous: true, stream: p.stream } : undefined;
  }
  const stream = await runtime.logs(chosen.ref, { worker: 0, follow: !!opts.follow });
  return { replica: chosen.id, previous: false, stream };
}

/** A stream's content, its last `max` bytes only. */
async function readAll(stream: Readable, max: number): Promise<Buffer> {
  let chunks: Buffer[] = [];
  let size = 0;
  for await (const c of stream) {
    const b = Buffer.isBuffer(c) ? c : Buffer.from(c as string);
    chunks.push(b);
    size += b.length;
    if (size > 2 * max) {
      const all = Buffer.concat(chunks);
      chunks = [all.subarray(all.length - max)];
      size = max;
    }
  }
  const all = Buffer.concat(chunks);
  return all.length > max ? all.subarray(all.length - max) : all;
}

/**
 * The last few non-empty lines of an output, short enough for an event or a condition message
 * (what `kubectl describe` would make a user look up with `kubectl logs --previous`).
 */
export function lastLines(text: string, lines = 5, maxChars = 600): string {
  const kept = text
    .split("\n")
    .map((l) => l.trimEnd())
    .filter((l) => l !== "")
    .slice(-lines)
    .map((l) => (l.length > 200 ? `${l.slice(0, 200)}…` : l));
  const joined = kept.join(" | ");
  return joined.length > maxChars ? `…${joined.slice(joined.length - maxChars)}` : joined;
}

/** The command that shows a service's last exited replica: `loom logs ws/NAME --previous`. */
export function previousLogsCommand(service: WorkloadRef): string {
  const def = kindByKind(service.kind);
  const short = def?.shortNames[0] ?? service.kind.toLowerCase();
  return `loom logs ${short}/${service.name} --previous`;
}

/** What an exit event adds: the output's last lines and where to read the rest. */
export function exitOutput(service: WorkloadRef, output: string): string {
  return output
    ? `; last output: ${output} (${previousLogsCommand(service)})`
    : ` (${previousLogsCommand(service)})`;
}
