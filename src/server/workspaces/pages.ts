import type { ServerResponse } from "node:http";
import type { Duplex } from "node:stream";

const escapeHtml = (s: string) =>
  s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!);

const REASONS: Record<number, string> = {
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  502: "Bad Gateway",
  503: "Service Unavailable",
};

/** A small HTML page that says what happened and what to do; `refresh` reloads it (a starting workspace). */
export function page(status: number, title: string, message: string, refresh?: number): string {
  return (
    `<!doctype html><html><head><meta charset="utf-8"><title>${escapeHtml(title)}</title>` +
    `${refresh ? `<meta http-equiv="refresh" content="${refresh}">` : ""}</head>` +
    `<body style="font-family:sans-serif;max-width:46em;margin:3em auto">` +
    `<h1>${escapeHtml(title)}</h1><p>${escapeHtml(message)}</p><p><small>Loom workspace origin · ${status}</small></p>` +
    "</body></html>\n"
  );
}

/** Answers with a page; never cached, never framed by another origin. */
export function sendPage(
  res: ServerResponse,
  status: number,
  title: string,
  message: string,
  extra: Record<string, string> = {},
  refresh?: number,
): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = page(status, title, message, refresh);
  res.writeHead(status, {
    "content-type": "text/html; charset=utf-8",
    "content-length": Buffer.byteLength(body),
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    ...(refresh ? { "retry-after": String(refresh) } : {}),
    ...extra,
  });
  res.end(body);
}

/** The same, raw on a socket that asked to upgrade (there is no response object yet). */
export function refuseUpgrade(socket: Duplex, status: number, message: string): void {
  const body = `${message}\n`;
  socket.end(
    `HTTP/1.1 ${status} ${REASONS[status] ?? "Error"}\r\ncontent-type: text/plain; charset=utf-8\r\n` +
      `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  );
}
