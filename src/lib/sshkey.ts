import { createHash } from "node:crypto";

/** The public key types OpenSSH's sshd accepts by default (ssh-keygen -t …). */
const KEY_TYPES = new Set([
  "ssh-ed25519",
  "ssh-rsa",
  "ecdsa-sha2-nistp256",
  "ecdsa-sha2-nistp384",
  "ecdsa-sha2-nistp521",
  "sk-ssh-ed25519@openssh.com",
  "sk-ecdsa-sha2-nistp256@openssh.com",
]);

/** A name for a registered key: what `loom ssh-key delete NAME` takes. */
export const SSH_KEY_NAME = /^[A-Za-z0-9][A-Za-z0-9._@-]{0,62}$/;

/** An OpenSSH public key, checked: its type, its base64 blob and its SHA256 fingerprint. */
export interface PublicKey {
  type: string;
  /** The key's base64, exactly as the .pub file has it. */
  data: string;
  /** What `ssh-keygen -lf` prints: "SHA256:…". */
  fingerprint: string;
  /** The .pub file's comment (usually user@host), when it has one. */
  comment?: string;
}

/**
 * Parses one OpenSSH public key line ("TYPE BASE64 [COMMENT]", a .pub file's content) and checks
 * it is one: a known type, and a blob that decodes and names that same type. Anything else
 * (a private key, options such as command="…", several keys, junk) throws with what to give instead.
 */
export function parsePublicKey(text: string): PublicKey {
  const trimmed = text.trim();
  if (trimmed.includes("PRIVATE KEY"))
    throw new Error(
      "that is a private key: give its public half (the .pub file), and keep the private key to yourself",
    );
  const lines = trimmed.split(/\r?\n/).filter((l) => l.trim() !== "");
  if (lines.length !== 1)
    throw new Error(
      lines.length === 0
        ? "the key is empty: give an OpenSSH public key (a .pub file)"
        : "give one public key at a time",
    );
  const [type, data, ...rest] = lines[0]!.trim().split(/\s+/);
  const expected =
    "an OpenSSH public key such as 'ssh-ed25519 AAAAC3Nza… you@host' (ssh-keygen -t ed25519 makes one)";
  if (!type || !KEY_TYPES.has(type))
    throw new Error(
      `not ${expected}: it starts with ${JSON.stringify((type ?? "").slice(0, 40))} ` +
        `(known types: ${[...KEY_TYPES].join(", ")}; options before the type are not accepted)`,
    );
  if (!data || !/^[A-Za-z0-9+/]+={0,2}$/.test(data))
    throw new Error(`not ${expected}: its key data is not base64`);
  const blob = Buffer.from(data, "base64");
  // The blob is SSH wire format: a uint32 length, then the type's name again.
  const len = blob.length >= 4 ? blob.readUInt32BE(0) : -1;
  if (
    len <= 0 ||
    4 + len > blob.length ||
    blob.subarray(4, 4 + len).toString("latin1") !== type ||
    blob.length < 4 + len + 16
  )
    throw new Error(`not ${expected}: its key data is not a ${type} key`);
  const comment = rest.join(" ").replace(/[^\x20-\x7e]/g, "");
  const fingerprint = `SHA256:${createHash("sha256").update(blob).digest("base64").replace(/=+$/, "")}`;
  return { type, data, fingerprint, ...(comment ? { comment } : {}) };
}
