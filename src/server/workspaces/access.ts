import { randomBytes } from "node:crypto";
import { ForbiddenError, UnauthorizedError } from "../../api/errors.js";
import { findKind } from "../../api/kinds.js";
import type { TokenInfo, TokenStore } from "../../ports/store.js";
import { type DecideOptions, decide } from "../authorize.js";
import { bearerAuthenticator } from "../authz.js";
import { type Rule, rule } from "../routetable.js";

/** Using a workspace is changing the project: editors and admins of that project only. */
export const WORKSPACE_ACCESS = rule.project("workspaces", "write");

export const TICKET_TTL_MS = 60_000;
export const SESSION_TTL_MS = 12 * 3600_000;
/** Past this many live entries, expired ones are swept before another is added. */
const SWEEP_AT = 10_000;

export interface AccessDeps {
  /** The server's own authenticator (bearerAuthenticator over its token store): revocation holds here too. */
  authenticate(header: string | undefined): TokenInfo | Promise<TokenInfo>;
  decide: DecideOptions;
  now?: () => number;
  ticketTtlMs?: number;
  sessionTtlMs?: number;
  /** Who may log in (default WORKSPACE_ACCESS; an App's: any member, viewers included). */
  rule?: Rule;
  /** What is logged in to, in messages: its noun and `loom open` prefix (default workspace, ws). */
  noun?: string;
  open?: string;
}

/** Who a ticket or session is for: the caller's token (kept in memory only, to re-check it) and one workspace. */
interface Grant {
  token: string;
  principalId: string;
  project: string;
  name: string;
  expires: number;
}

/** A live session, as the origin sees it. */
export interface WorkspaceSession {
  principal: TokenInfo;
  project: string;
  name: string;
}

const secret = () => randomBytes(32).toString("base64url");

/**
 * Log-in to workspace origins: one-time tickets the API hands out, and the sessions the origin
 * makes of them. A ticket is single-use, short-lived and bound to one workspace and one caller;
 * a session is bound to one workspace (its cookie is host-only, but a forged or moved value is
 * refused here too) and re-checks on every request that its token still has edit rights.
 */
export class WorkspaceAccess {
  private readonly tickets = new Map<string, Grant>();
  private readonly sessions = new Map<string, Grant>();
  private readonly now: () => number;
  private readonly noun: string;
  private readonly open: string;

  constructor(private readonly deps: AccessDeps) {
    this.now = deps.now ?? Date.now;
    this.noun = deps.noun ?? "workspace";
    this.open = deps.open ?? "ws";
  }

  /** A ticket for this caller (already authorized by the login route) to this workspace. */
  issue(token: string, principal: TokenInfo, project: string, name: string): string {
    const ticket = secret();
    sweep(this.tickets, this.now());
    const ttl = this.deps.ticketTtlMs ?? TICKET_TTL_MS;
    this.tickets.set(ticket, { token, principalId: principal.id, project, name, expires: this.now() + ttl });
    return ticket;
  }

  /**
   * Trades a ticket presented at workspace project/name's origin for a session id. The ticket is
   * gone after the first try, whatever its outcome, so it can never be replayed.
   */
  async redeem(ticket: string, project: string, name: string): Promise<string> {
    const grant = this.tickets.get(ticket);
    this.tickets.delete(ticket);
    const again = `get a new link with: loom open ${this.open}/${name} -p ${project}`;
    if (!grant) throw new UnauthorizedError(`this log-in link is unknown or was used already; ${again}`);
    if (grant.expires <= this.now())
      throw new UnauthorizedError(`this log-in link expired (links last 60 s); ${again}`);
    if (grant.project !== project || grant.name !== name)
      throw new ForbiddenError(
        `this log-in link is for ${this.noun} ${grant.project}/${grant.name}, not ${project}/${name}; ${again}`,
      );
    await this.authorize(grant);
    const id = secret();
    sweep(this.sessions, this.now());
    const ttl = this.deps.sessionTtlMs ?? SESSION_TTL_MS;
    this.sessions.set(id, { ...grant, expires: this.now() + ttl });
    return id;
  }

  /**
   * The session a cookie value names, if it is live, for this workspace, and its token still may
   * edit the project; throws (401/403) saying how to log in again otherwise.
   */
  async check(sessionId: string | undefined, project: string, name: string): Promise<WorkspaceSession> {
    const login = `log in with: loom open ${this.open}/${name} -p ${project}`;
    const what = `${this.noun} ${project}/${name}`;
    const grant = sessionId ? this.sessions.get(sessionId) : undefined;
    if (!grant) throw new UnauthorizedError(`not logged in to ${what}; ${login}`);
    if (grant.expires <= this.now()) {
      this.sessions.delete(sessionId!);
      throw new UnauthorizedError(`your session for ${what} expired; ${login}`);
    }
    if (grant.project !== project || grant.name !== name)
      throw new ForbiddenError(`this session is for another ${this.noun}, not ${project}/${name}; ${login}`);
    try {
      return { principal: await this.authorize(grant), project, name };
    } catch (err) {
      // Revoked, expired, or no longer an editor: this session is over.
      this.sessions.delete(sessionId!);
      throw err;
    }
  }

  /** Ends a session (log-out). */
  end(sessionId: string): void {
    this.sessions.delete(sessionId);
  }

  /** The token still verifies (not revoked or expired, its project not re-created) and may edit the project. */
  private async authorize(grant: Grant): Promise<TokenInfo> {
    const principal = await this.deps.authenticate(`Bearer ${grant.token}`);
    if (principal.id !== grant.principalId)
      throw new UnauthorizedError("the token behind this session changed");
    decide(principal, this.deps.rule ?? WORKSPACE_ACCESS, { project: grant.project }, this.deps.decide);
    return principal;
  }
}

function sweep(m: Map<string, Grant>, now: number): void {
  if (m.size < SWEEP_AT) return;
  for (const [k, g] of m) if (g.expires <= now) m.delete(k);
  if (m.size >= SWEEP_AT * 10)
    throw new ForbiddenError("too many workspace log-ins at once; try again later");
}

/** Workspace log-in on the server's own token store, with the API's authenticator and decision. */
export function workspaceAccessOn(
  tokens: Pick<TokenStore, "verify">,
  opts: Omit<AccessDeps, "authenticate" | "decide"> = {},
): WorkspaceAccess {
  return new WorkspaceAccess({
    ...opts,
    authenticate: bearerAuthenticator((t) => tokens.verify(t), opts.now ? { now: opts.now } : {}),
    decide: {
      kindOf: (plural) => {
        const def = findKind(plural);
        return def?.plural === plural ? def.kind : undefined;
      },
    },
  });
}
