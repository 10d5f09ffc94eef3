import { execFileSync, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { ROOT } from "./helpers.js";

/** One image build: scripts/image.sh's last line for it ("<ref> <tarball> <digest> <bytes>"). */
function buildImage(which: "loom" | "python", out: string) {
  const stdout = execFileSync("bash", [join(ROOT, "scripts/image.sh"), which], {
    encoding: "utf8",
    env: { ...process.env, LOOM_IMAGE_OUT: out },
    stdio: ["ignore", "pipe", "inherit"],
    maxBuffer: 16 << 20,
  });
  const [ref, tarball, digest, bytes] = stdout.trim().split("\n").at(-1)!.split(" ");
  return { ref: ref!, tarball: tarball!, digest: digest!, bytes: Number(bytes) };
}

/**
 * The image .ci/run built moments ago from this same tree (scripts/image-ci.sh, LOOM_IMAGE_PREBUILT=1),
 * as one of the builds compared: a second, independent build must give the same digest. Elsewhere
 * (a stale cache may hold an older tree's image) every build is the test's own.
 */
function prebuiltOrBuild(which: "loom" | "python", out: string) {
  const version = (JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string })
    .version;
  const name = which === "loom" ? "loom" : "loom-python";
  const tarball = join(
    process.env.LOOM_IMAGE_OUT ?? join(homedir(), ".cache/loom/image/out"),
    `${name}-${version}.tar`,
  );
  if (process.env.LOOM_IMAGE_PREBUILT !== "1" || !existsSync(tarball)) return buildImage(which, out);
  const index = JSON.parse(execFileSync("tar", ["-xOf", tarball, "./index.json"], { encoding: "utf8" }));
  const digest = index.manifests[0].digest as string;
  const ref = (index.manifests[0].annotations["io.containerd.image.name"] as string).replace(
    "docker.io/library/",
    "",
  );
  return { ref, tarball, digest, bytes: statSync(tarball).size };
}

const sha256 = (file: string) => createHash("sha256").update(readFileSync(file)).digest("hex");

/**
 * npm run image's images, built without Docker: reproducible (two builds, one digest), readable
 * by OCI tools other than ours (umoci unpacks them, skopeo converts them to a docker archive), and
 * runnable (the unpacked root filesystem runs loom, better-sqlite3 and torch; checked with bwrap).
 */
describe("the OCI images", () => {
  const dirs: string[] = [];
  const tmp = (p: string) => {
    const d = mkdtempSync(join(tmpdir(), p));
    dirs.push(d);
    return d;
  };
  afterAll(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  /** Unpacks the image with umoci (a strict OCI reader) and runs argv in its root filesystem as uid 1000. */
  const runIn = (tarball: string, tag: string, argv: string[]) => {
    const dir = tmp("loom-unpack-");
    execFileSync("tar", ["-C", dir, "-xf", tarball]);
    execFileSync("umoci", ["unpack", "--image", `${dir}:${tag}`, join(dir, "bundle")], { stdio: "ignore" });
    const r = spawnSync(
      "bwrap",
      [
        "--bind",
        join(dir, "bundle", "rootfs"),
        "/",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--tmpfs",
        "/tmp",
        "--unshare-all",
        "--uid",
        "1000",
        "--gid",
        "1000",
        "--chdir",
        "/opt/loom",
        "--setenv",
        "PATH",
        "/usr/local/bin:/usr/bin:/bin",
        "--setenv",
        "HOME",
        "/home/loom",
        ...argv,
      ],
      { encoding: "utf8", maxBuffer: 64 << 20 },
    );
    return { code: r.status, stdout: r.stdout, stderr: r.stderr };
  };

  it("loom:<version> is reproducible: built twice, the same digest and the same bytes", () => {
    const a = prebuiltOrBuild("loom", tmp("loom-image-a-"));
    const b = buildImage("loom", tmp("loom-image-b-"));
    console.log(`${a.ref}: ${(a.bytes / 2 ** 20).toFixed(1)} MiB tarball, ${a.digest}`);
    expect(a.ref).toMatch(/^loom:\d+\.\d+\.\d+/);
    expect(b.digest).toBe(a.digest);
    expect(sha256(b.tarball)).toBe(sha256(a.tarball));

    // An OCI archive containerd imports under Kubernetes' name for loom:<tag>, and a docker-save one.
    const dir = tmp("loom-layout-");
    execFileSync("tar", ["-C", dir, "-xf", a.tarball]);
    const index = JSON.parse(readFileSync(join(dir, "index.json"), "utf8"));
    expect(index.manifests[0].digest).toBe(a.digest);
    expect(index.manifests[0].annotations["io.containerd.image.name"]).toBe(`docker.io/library/${a.ref}`);
    const docker = JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8"));
    expect(docker[0].RepoTags).toEqual([a.ref]);
    // skopeo reads it as an OCI archive and writes a docker archive from it.
    const inspect = JSON.parse(
      execFileSync("skopeo", ["inspect", `oci-archive:${a.tarball}`], { encoding: "utf8" }),
    );
    expect(inspect.Digest).toBe(a.digest);
    expect(inspect.Created).toBe(
      new Date(
        Number(execFileSync("git", ["log", "-1", "--format=%ct"], { cwd: ROOT, encoding: "utf8" }).trim()) *
          1000,
      )
        .toISOString()
        .replace(".000Z", "Z"),
    );

    // It runs: loom prints its CRDs, and the native better-sqlite3 module opens a database, as uid 1000.
    const tag = a.ref.split(":")[1]!;
    const crds = runIn(a.tarball, tag, ["node", "/opt/loom/bin/loom.js", "crds"]);
    expect(crds.code, crds.stderr).toBe(0);
    expect(crds.stdout).toContain("trainingjobs.loom.dev");
    const sqlite = runIn(a.tarball, tag, [
      "node",
      "-e",
      "const D=require('/opt/loom/node_modules/better-sqlite3');console.log(new D(':memory:').prepare('select 41+1 as x').get().x)",
    ]);
    expect(sqlite.stdout.trim(), sqlite.stderr).toBe("42");
    const id = runIn(a.tarball, tag, ["id", "-un"]);
    expect(id.stdout.trim()).toBe("loom");
  }, 1_800_000);

  it("loom-python:<version> has python3, pip and CPU PyTorch, the official MLflow client beside it, and the tinygpt runtime", () => {
    const p = prebuiltOrBuild("python", tmp("loom-image-py-"));
    console.log(`${p.ref}: ${(p.bytes / 2 ** 20).toFixed(1)} MiB tarball, ${p.digest}`);
    const tag = p.ref.split(":")[1]!;
    const r = runIn(p.tarball, tag, [
      "python3",
      "-c",
      // mlflow's wheels (PyPI) load beside Debian's torch in one process, and its fluent API is there.
      "import mlflow, torch, pip, venv, os; print(torch.__version__, torch.ones(2).sum().item(), os.path.exists('runtimes/loom-tinygpt/server.py'), mlflow.__version__, callable(mlflow.log_metric))",
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim()).toMatch(/^\S+ 2\.0 True 3\.17\.2 True$/);
  }, 1_800_000);
});
