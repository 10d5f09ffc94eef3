import { randomUUID } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { isSameProcessAlive, processStartTicks } from "./procfs.js";

/**
 * Takes the data dir for this process. Two servers on one data dir would each supervise the same
 * workers, so a second one is refused while the first is alive (a lock left by a killed server
 * is taken over).
 */
export function lockDataDir(dataDir: string): () => void {
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  // The data dir holds the database, the admin token and every project's files: the server's
  // user only (it was 0755 before, so an older one is tightened here).
  chmodSync(dataDir, 0o700);
  const file = join(dataDir, "loom.lock");
  if (existsSync(file)) {
    try {
      const held = JSON.parse(readFileSync(file, "utf8")) as { pid: number; startTicks: number };
      if (held.pid !== process.pid && isSameProcessAlive(held.pid, held.startTicks)) {
        throw new Error(
          `data dir ${dataDir} is in use by another loom server (pid ${held.pid}); stop it or use --data-dir`,
        );
      }
    } catch (err) {
      if (err instanceof Error && err.message.startsWith("data dir")) throw err;
    }
  }
  writeFileSync(file, JSON.stringify({ pid: process.pid, startTicks: processStartTicks(process.pid) }));
  return () => rmSync(file, { force: true });
}

/** A stable id for this installation, so its worker processes are told apart from others'. */
export function instanceId(dataDir: string): string {
  const file = join(dataDir, "instance-id");
  if (existsSync(file)) return readFileSync(file, "utf8").trim();
  const id = randomUUID();
  writeFileSync(file, id);
  return id;
}

export function readSecretFile(file: string): string | undefined {
  return existsSync(file) ? readFileSync(file, "utf8").trim() : undefined;
}

/** Writes a secret readable by its owner only (0600). */
export function writeSecretFile(file: string, value: string): void {
  writeFileSync(file, `${value}\n`, { mode: 0o600 });
  chmodSync(file, 0o600);
}
