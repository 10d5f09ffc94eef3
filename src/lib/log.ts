import { type Logger, pino } from "pino";

/** The root logger: structured JSON on stderr, so stdout stays for what a user asked to see. */
export function createLogger(level = process.env.LOOM_LOG_LEVEL ?? "info"): Logger {
  return pino(
    { level, base: { service: "loom" }, redact: ["token", "*.token", "headers.authorization"] },
    pino.destination(2),
  );
}
