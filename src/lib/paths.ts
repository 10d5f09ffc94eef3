/**
 * One spelling of every path, decided before the router and the authorizer see it: they must
 * agree on what was asked for, and a path that can be read two ways is refused instead of guessed.
 */

/** RFC 3986's unreserved characters: their percent-encodings mean the same as the characters. */
const UNRESERVED = /^[A-Za-z0-9\-._~]$/;

/** Where an encoded '/' is part of a name: the model ids of the OpenAI routes. */
const MODEL_IDS = "/v1/models/";

/** The canonical form of a request target, or why it was refused (answered 400). */
export type CanonicalUrl = { url: string } | { refused: string };

/**
 * Decodes the percent-encoded unreserved characters of a request target's path (`%61pis` →
 * `apis`), upper-cases the hex of every other encoding, and refuses what could mean two things:
 * an encoded '/' (but in a model id under /v1/models/), '\' or '%', NUL or another control byte,
 * a backslash, '.' or '..' segments (literal or encoded), empty segments (`//`), malformed escapes
 * and anything but an origin-form target. The query is kept as it came. Routing and
 * authorization then read the same string.
 */
export function canonicalUrl(raw: string): CanonicalUrl {
  const q = raw.indexOf("?");
  const path = q < 0 ? raw : raw.slice(0, q);
  const query = q < 0 ? "" : raw.slice(q);
  if (!path.startsWith("/")) return { refused: "the request target must be a path starting with '/'" };
  let out = "";
  for (let i = 0; i < path.length; i++) {
    const c = path[i]!;
    const code = c.charCodeAt(0);
    if (code <= 0x20 || code >= 0x7f)
      return { refused: "the path has a control, space or non-ASCII byte: percent-encode it" };
    if (c === "\\") return { refused: "the path has a backslash: use '/' between segments" };
    if (c === "#") return { refused: "the path has a '#': fragments are not sent to a server" };
    if (c !== "%") {
      out += c;
      continue;
    }
    const hex = path.slice(i + 1, i + 3);
    if (!/^[0-9A-Fa-f]{2}$/.test(hex))
      return { refused: `malformed percent-encoding at "${path.slice(i, i + 3)}"` };
    const byte = Number.parseInt(hex, 16);
    i += 2;
    if (byte === 0x2f) {
      // OpenAI's clients encode a model id's '/' ("project/service"): one segment, kept encoded.
      if (out.startsWith(MODEL_IDS)) {
        out += "%2F";
        continue;
      }
      return { refused: "the path has an encoded '/' (%2F): a name cannot contain '/'" };
    }
    if (byte === 0x5c) return { refused: "the path has an encoded backslash (%5C)" };
    if (byte === 0x25) return { refused: "the path has an encoded '%' (%25): double encoding is refused" };
    if (byte < 0x20 || byte === 0x7f)
      return { refused: `the path has an encoded control byte (%${hex.toUpperCase()})` };
    const ch = String.fromCharCode(byte);
    out += UNRESERVED.test(ch) ? ch : `%${hex.toUpperCase()}`;
  }
  const segments = out.split("/");
  // segments[0] is the empty string before the leading '/'; the last may be empty (a trailing '/').
  for (let i = 1; i < segments.length; i++) {
    const s = segments[i]!;
    if (s === "." || s === "..")
      return { refused: `the path has a '${s}' segment: send the path it resolves to` };
    if (s === "" && i < segments.length - 1) return { refused: "the path has an empty segment ('//')" };
  }
  return { url: out + query };
}
