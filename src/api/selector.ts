import { BadRequestError } from "./errors.js";

type Requirement =
  | { op: "=" | "!="; key: string; value: string }
  | { op: "in" | "notin"; key: string; values: string[] }
  | { op: "exists" | "!exists"; key: string };

/** A parsed Kubernetes label selector: "app=x,tier!=db,env in (a,b),!legacy,gpu". */
export interface LabelSelector {
  matches(labels: Record<string, string> | undefined): boolean;
}

const TERM =
  /^\s*(!?)\s*([A-Za-z0-9][-A-Za-z0-9_./]*)\s*(?:(==|=|!=)\s*([-A-Za-z0-9_.]*)|\s+(in|notin)\s*\(([^)]*)\))?\s*$/;

/** Parses a selector; throws BadRequestError with the offending term. Empty matches everything. */
export function parseLabelSelector(text: string | undefined): LabelSelector {
  const reqs: Requirement[] = [];
  // Split on commas that are not inside parentheses.
  const terms: string[] = [];
  let depth = 0;
  let cur = "";
  for (const ch of text ?? "") {
    if (ch === "(") depth++;
    if (ch === ")") depth--;
    if (ch === "," && depth === 0) {
      terms.push(cur);
      cur = "";
    } else cur += ch;
  }
  if (cur.trim() !== "") terms.push(cur);
  for (const term of terms) {
    const m = TERM.exec(term);
    if (!m)
      throw new BadRequestError(
        `invalid label selector term "${term.trim()}": use key=value, key!=value, key in (a,b), key or !key`,
      );
    const [, not, key, eq, value, setOp, set] = m;
    if (not && (eq || setOp)) {
      throw new BadRequestError(
        `invalid label selector term "${term.trim()}": '!' only negates a bare key (!key); use key!=value or key notin (a,b)`,
      );
    }
    if (eq) reqs.push({ op: eq === "!=" ? "!=" : "=", key: key!, value: value ?? "" });
    else if (setOp) {
      reqs.push({
        op: setOp as "in" | "notin",
        key: key!,
        values: set!
          .split(",")
          .map((s) => s.trim())
          .filter(Boolean),
      });
    } else reqs.push({ op: not ? "!exists" : "exists", key: key! });
  }
  return {
    matches(labels) {
      const l = labels ?? {};
      return reqs.every((r) => {
        const v = l[r.key];
        switch (r.op) {
          case "=":
            return v === r.value;
          case "!=":
            return v !== r.value;
          case "in":
            return v !== undefined && r.values.includes(v);
          case "notin":
            return v === undefined || !r.values.includes(v);
          case "exists":
            return v !== undefined;
          default:
            return v === undefined;
        }
      });
    },
  };
}
