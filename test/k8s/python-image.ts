import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";

/**
 * `npm run image`'s images in real-0's containerd, for the real-node suites and bench:k8s-node
 * (no vitest here: the bench imports it too).
 */
const ROOT = join(import.meta.dirname, "../..");
const VERSION = (JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string }).version;
/** Where `npm run image` writes the images (scripts/image.sh). */
export const IMAGE_OUT = process.env.LOOM_IMAGE_OUT ?? join(homedir(), ".cache/loom/image/out");

/** ctr against real-0's containerd (the cluster in `state`), in the kubelet's namespace. */
export function ctr(state: string, args: string[]): string {
  const node = join(state, "node");
  return execFileSync(
    join(node, "bin/ctr"),
    ["--address", join(node, "containerd.sock"), "-n", "k8s.io", ...args],
    {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
}

/**
 * Imports `npm run image`'s tarball of `name` (loom, loom-python) into real-0's containerd unless
 * it holds that very digest: a rebuilt image replaces an older one of the same tag.
 */
export function importImage(state: string, name: string): void {
  const layout = join(IMAGE_OUT, `${name}-${VERSION}`);
  const digest = (
    JSON.parse(readFileSync(join(layout, "index.json"), "utf8")) as { manifests: { digest: string }[] }
  ).manifests[0]!.digest;
  if (ctr(state, ["images", "ls", `name==docker.io/library/${name}:${VERSION}`]).includes(digest)) return;
  ctr(state, ["images", "import", `${layout}.tar`]);
}

/** `npm run image`'s Python image (PyTorch on CPU, the mlflow client), as pods on the real node name it. */
export const PYTHON_IMAGE = `loom-python:${VERSION}`;

/** Imports loom-python into real-0's containerd, building it first (minutes) if it is missing. */
export function importPythonImage(state: string): void {
  if (!existsSync(join(IMAGE_OUT, `loom-python-${VERSION}.tar`)))
    execFileSync("bash", [join(ROOT, "scripts/image.sh"), "python"], {
      stdio: ["ignore", "ignore", "inherit"],
    });
  importImage(state, "loom-python");
}
