import { readdirSync, readFileSync, readlinkSync } from "node:fs";

/**
 * Which TCP ports a workload listens on, from /proc: the LISTEN sockets of its network's tables
 * (/proc/PID/net/tcp and tcp6 of a worker: a process's view is its own network namespace's, so
 * a gang with a namespace of its own is read without entering it) whose inode one of the
 * workload's processes holds (/proc/PID/fd links). The workload's processes are its workers,
 * their descendants and process groups and, where it has a namespace of its own, every process
 * in it (a daemon that double-forks out of the tree stays in its network).
 *
 * One scan of the process table, and one read of each network's table, is shared by the calls
 * made within `TABLE_TTL_MS` (a poll over many workloads reads them once, not once per workload).
 */

interface Proc {
  pid: number;
  ppid: number;
  pgrp: number;
}

/** How long one scan of /proc's process list serves (a poll round over many workloads). */
const TABLE_TTL_MS = 250;
let table: { at: number; procs: Proc[] } | undefined;

function processTable(now: number): Proc[] {
  if (table && now - table.at < TABLE_TTL_MS) return table.procs;
  const procs: Proc[] = [];
  for (const entry of readdirSync("/proc")) {
    if (entry.charCodeAt(0) > 57) continue; // not a digit: not a process
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, "latin1");
    } catch {
      continue; // exited meanwhile
    }
    // The command name may hold spaces and parentheses: fields restart after the last ')'.
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ", 3);
    procs.push({ pid: Number(entry), ppid: Number(rest[1]), pgrp: Number(rest[2]) });
  }
  table = { at: now, procs };
  return procs;
}

function netnsOf(pid: number | "self"): string | undefined {
  try {
    return readlinkSync(`/proc/${pid}/ns/net`);
  } catch {
    return undefined;
  }
}

/** Whether the process runs in a network namespace other than Loom's own. */
export function hasOwnNetwork(pid: number): boolean {
  const ns = netnsOf(pid);
  return ns !== undefined && ns !== netnsOf("self");
}

/** The workload's processes: the roots, their descendants and process groups, their network's. */
function workloadProcesses(roots: number[], procs: Proc[]): Set<number> {
  const rootSet = new Set(roots);
  const children = new Map<number, number[]>();
  const found = new Set<number>();
  for (const p of procs) {
    if (!children.has(p.ppid)) children.set(p.ppid, []);
    children.get(p.ppid)!.push(p.pid);
    if (rootSet.has(p.pgrp)) found.add(p.pid);
  }
  const stack = [...roots, ...found];
  while (stack.length) {
    const pid = stack.pop()!;
    found.add(pid);
    for (const c of children.get(pid) ?? []) if (!found.has(c)) stack.push(c);
  }
  // A process that entered a network of its own takes everything in that network with it.
  const self = netnsOf("self");
  const ownNets = new Set(
    [...found].map((pid) => netnsOf(pid)).filter((ns) => ns !== undefined && ns !== self),
  );
  if (ownNets.size > 0) for (const p of procs) if (ownNets.has(netnsOf(p.pid))) found.add(p.pid);
  return found;
}

/** Socket inodes the processes hold open. */
function socketInodes(pids: Iterable<number>): Set<string> {
  const inodes = new Set<string>();
  for (const pid of pids) {
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue; // exited, or not ours to read
    }
    for (const fd of fds) {
      try {
        const link = readlinkSync(`/proc/${pid}/fd/${fd}`);
        if (link.startsWith("socket:[")) inodes.add(link.slice(8, -1));
      } catch {
        // closed meanwhile
      }
    }
  }
  return inodes;
}

/** A LISTEN socket of a table: its port, and whether it is bound to loopback only. */
export interface Listener {
  port: number;
  /** A process of the network the socket is in (to dial it there); 0 where parsed from text. */
  pid: number;
  inode: string;
  family: 4 | 6;
  address: string;
}

/** Parses /proc/net/tcp or tcp6: the LISTEN (state 0A) sockets. */
export function parseTcpTable(text: string, family: 4 | 6): Listener[] {
  const out: Listener[] = [];
  for (const line of text.split("\n").slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10 || f[3] !== "0A") continue;
    const [addr, port] = f[1]!.split(":");
    out.push({ port: Number.parseInt(port!, 16), pid: 0, inode: f[9]!, family, address: addr! });
  }
  return out;
}

/** Each network's LISTEN table, read once per poll round (the kernel formats every socket). */
const tables = new Map<string, { at: number; listeners: Listener[] }>();

function listenersOf(pid: number, ns: string, now: number): Listener[] {
  const had = tables.get(ns);
  if (had && now - had.at < TABLE_TTL_MS) return had.listeners;
  if (tables.size > 1000) tables.clear();
  const read = (file: string, family: 4 | 6) => {
    try {
      return parseTcpTable(readFileSync(`/proc/${pid}/net/${file}`, "latin1"), family).map((l) => ({
        ...l,
        pid,
      }));
    } catch {
      return []; // exited, or no IPv6
    }
  };
  const listeners = [...read("tcp", 4), ...read("tcp6", 6)];
  tables.set(ns, { at: now, listeners });
  return listeners;
}

/**
 * The LISTEN sockets the workload whose workers are `roots` holds (ascending by port, one per
 * port and family). `roots` are live worker pids; none: nothing.
 */
export function workloadListeners(roots: number[], now = Date.now()): Listener[] {
  if (roots.length === 0) return [];
  const procs = workloadProcesses(roots, processTable(now));
  const inodes = socketInodes(procs);
  // One table per network the workload's processes are in (a gang's workers share one).
  const byNet = new Map<string, number>();
  for (const pid of procs) {
    const ns = netnsOf(pid);
    if (ns !== undefined && !byNet.has(ns)) byNet.set(ns, pid);
  }
  const seen = new Set<string>();
  const out: Listener[] = [];
  for (const [ns, pid] of byNet) {
    for (const l of listenersOf(pid, ns, now)) {
      const key = `${l.port}/${l.family}`;
      if (!inodes.has(l.inode) || seen.has(key)) continue;
      seen.add(key);
      out.push(l);
    }
  }
  return out.sort((a, b) => a.port - b.port || a.family - b.family);
}

/** Ports only: what `Runtime.listeningPorts` answers. */
export function listeningPortsOf(roots: number[], now = Date.now()): number[] {
  return [...new Set(workloadListeners(roots, now).map((l) => l.port))];
}

/**
 * Where to dial a listener from inside its network (and a process in that network): IPv4 unless the port is
 * only on IPv6 (then ::1, which a socket bound to :: or ::1 accepts).
 */
export function dialAddress(listeners: Listener[], port: number): { host: string; pid: number } | undefined {
  const mine = listeners.filter((l) => l.port === port);
  const v4 = mine.find((l) => l.family === 4);
  if (v4) {
    // /proc prints an IPv4 address as one little-endian hex word.
    const b = Buffer.from(v4.address, "hex").reverse();
    // Bound to every address or to loopback: loopback; to one address (the link's): that one.
    const host = b.readUInt32BE(0) === 0 || b[0] === 127 ? "127.0.0.1" : [...b].join(".");
    return { host, pid: v4.pid };
  }
  return mine[0] ? { host: "::1", pid: mine[0].pid } : undefined;
}
