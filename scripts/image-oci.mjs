// Assembles an OCI image from layer tars (already deterministic, see scripts/image.sh): gzips each
// layer without name or time, writes the config, manifest and index as blobs of an OCI image layout
// at <out>/<name>-<tag>/, then packs that layout (plus a docker-save manifest.json) into
// <out>/<name>-<tag>.tar with the same normal form. Prints "<ref> <tarball> <digest> <bytes>".
// Usage: node image-oci.mjs --name loom:0.1.0 --out DIR --epoch N --config JSON --layer A.tar ...
import { execFileSync, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream, mkdirSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  options: {
    name: { type: "string" },
    out: { type: "string" },
    epoch: { type: "string" },
    config: { type: "string" },
    layer: { type: "string", multiple: true },
  },
});
const [repo, tag] = values.name.split(":");
const created = new Date(Number(values.epoch) * 1000).toISOString().replace(".000Z", "Z");
const layout = join(values.out, `${repo}-${tag}`);
const tmp = `${layout}.tmp`;
rmSync(tmp, { recursive: true, force: true });
mkdirSync(join(tmp, "blobs", "sha256"), { recursive: true });

/** The sha256 of a file, streamed (layers are hundreds of MB). */
async function fileDigest(path) {
  const h = createHash("sha256");
  for await (const chunk of createReadStream(path)) h.update(chunk);
  return h.digest("hex");
}

/** Writes bytes as a blob and returns its descriptor. */
function blob(mediaType, bytes) {
  const hex = createHash("sha256").update(bytes).digest("hex");
  writeFileSync(join(tmp, "blobs", "sha256", hex), bytes);
  return { mediaType, digest: `sha256:${hex}`, size: bytes.length };
}

const layers = [];
const diffIds = [];
for (const path of values.layer) {
  diffIds.push(`sha256:${await fileDigest(path)}`);
  const gz = join(tmp, "layer.gz");
  // gzip -n: no name, no time in the header, so the same tar always gives the same bytes.
  const r = spawnSync("sh", ["-c", 'gzip -n -6 -c "$1" > "$2"', "sh", path, gz], { stdio: "inherit" });
  if (r.status !== 0) throw new Error(`gzip of ${path} failed`);
  const hex = await fileDigest(gz);
  renameSync(gz, join(tmp, "blobs", "sha256", hex));
  layers.push({ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: `sha256:${hex}`, size: statSync(join(tmp, "blobs", "sha256", hex)).size });
}

const config = {
  created,
  architecture: "amd64",
  os: "linux",
  config: { ...JSON.parse(values.config), Labels: { "org.opencontainers.image.version": tag, "org.opencontainers.image.title": repo } },
  rootfs: { type: "layers", diff_ids: diffIds },
  history: values.layer.map((_, i) => ({ created, created_by: i === 0 ? "mmdebstrap (scripts/image.sh)" : "scripts/image.sh" })),
};
const json = (v) => Buffer.from(JSON.stringify(v));
const configDesc = blob("application/vnd.oci.image.config.v1+json", json(config));
const manifestDesc = blob(
  "application/vnd.oci.image.manifest.v1+json",
  json({ schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json", config: configDesc, layers }),
);
// Kubernetes names "loom:0.1.0" docker.io/library/loom:0.1.0: containerd imports it under that name.
const fullName = `docker.io/library/${repo}:${tag}`;
writeFileSync(
  join(tmp, "index.json"),
  json({
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.index.v1+json",
    manifests: [{ ...manifestDesc, annotations: { "io.containerd.image.name": fullName, "org.opencontainers.image.ref.name": tag } }],
  }),
);
writeFileSync(join(tmp, "oci-layout"), json({ imageLayoutVersion: "1.0.0" }));
// docker load (and containerd's docker-archive path) read this one.
writeFileSync(
  join(tmp, "manifest.json"),
  json([{ Config: `blobs/sha256/${configDesc.digest.slice(7)}`, RepoTags: [`${repo}:${tag}`], Layers: layers.map((l) => `blobs/sha256/${l.digest.slice(7)}`) }]),
);
rmSync(layout, { recursive: true, force: true });
renameSync(tmp, layout);

const tarball = `${layout}.tar`;
execFileSync("sh", [
  "-c",
  'tar -C "$1" --sort=name --mtime="@$2" --owner=0 --group=0 --numeric-owner --format=posix --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime -cf "$3.tmp" . && mv "$3.tmp" "$3"',
  "sh",
  layout,
  values.epoch,
  tarball,
]);
console.log(`${repo}:${tag} ${tarball} ${manifestDesc.digest} ${statSync(tarball).size}`);
