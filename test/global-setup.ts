import { execFileSync } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";

/**
 * Network namespaces the run's Loom servers left in /run/netns: pool slots of a server a test
 * killed, gangs whose data dir a test removed. A restarted `loom up` ends its own (netns.ts
 * orphans), but a test's temp data dir never restarts, and every mount left there is one more
 * that each sandbox start copies and unmounts (bwrap), slowing the rest of the run. At the end,
 * those made during the run with no process left in them are ended; nothing else is touched.
 */
const NETNS = "/run/netns";
const list = () => (existsSync(NETNS) ? readdirSync(NETNS).filter((n) => n.startsWith("loom-")) : []);

export default function setup(): () => void {
  const before = new Set(list());
  return () => {
    for (const name of list()) {
      if (before.has(name)) continue;
      try {
        const pids = execFileSync("ip", ["netns", "pids", name], { encoding: "utf8" }).trim();
        if (pids === "") execFileSync("ip", ["netns", "delete", name], { stdio: "ignore" });
      } catch {
        // gone meanwhile, or not ours to end
      }
    }
  };
}
