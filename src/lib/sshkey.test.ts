import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parsePublicKey } from "./sshkey.js";

describe("parsePublicKey", () => {
  const dir = mkdtempSync(join(tmpdir(), "loom-sshkey-"));
  let n = 0;
  const make = (type: string) => {
    const file = join(dir, `id_${type}_${n++}`);
    execFileSync("ssh-keygen", ["-q", "-t", type, "-N", "", "-C", "me@laptop", "-f", file]);
    return { pub: readFileSync(`${file}.pub`, "utf8"), priv: readFileSync(file, "utf8"), file };
  };

  it("accepts what ssh-keygen makes, with ssh-keygen's own fingerprint", () => {
    for (const type of ["ed25519", "rsa", "ecdsa"]) {
      const { pub, file } = make(type);
      const key = parsePublicKey(pub);
      expect(pub.startsWith(`${key.type} ${key.data}`)).toBe(true);
      expect(key.comment).toBe("me@laptop");
      expect(execFileSync("ssh-keygen", ["-lf", `${file}.pub`]).toString()).toContain(key.fingerprint);
    }
  });

  it("refuses a private key, options, several keys, junk and a blob of another type", () => {
    const { pub, priv } = make("ed25519");
    expect(() => parsePublicKey(priv)).toThrow(/private key: give its public half/);
    expect(() => parsePublicKey(`command="rm -rf ~" ${pub}`)).toThrow(
      /options before the type are not accepted/,
    );
    expect(() => parsePublicKey(`${pub}\n${pub}`)).toThrow(/one public key at a time/);
    expect(() => parsePublicKey("")).toThrow(/empty/);
    expect(() => parsePublicKey("hello world")).toThrow(/not an OpenSSH public key/);
    expect(() => parsePublicKey("ssh-ed25519 !!!")).toThrow(/not base64/);
    expect(() => parsePublicKey(`ssh-rsa ${pub.split(" ")[1]}`)).toThrow(/not a ssh-rsa key/);
    expect(() => parsePublicKey(`ssh-ed25519 ${Buffer.from("short").toString("base64")}`)).toThrow(
      /not a ssh-ed25519 key/,
    );
  });
});
