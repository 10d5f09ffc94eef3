import type { FastifyInstance } from "fastify";
import { jsonTooDeep, MAX_JSON_DEPTH } from "../lib/json.js";

/**
 * The API's JSON body parsers (application/json and application/merge-patch+json): Fastify's own
 * (empty bodies and __proto__ refused), after a depth check, so a deeply nested body is a 400
 * with a message rather than a stack overflow somewhere later.
 */
export function installJsonParsers(app: FastifyInstance): void {
  const parse = app.getDefaultJsonParser("error", "error");
  app.removeContentTypeParser("application/json");
  app.addContentTypeParser(
    ["application/json", "application/merge-patch+json"],
    { parseAs: "string" },
    (req, body, done) => {
      if (jsonTooDeep(body as string)) {
        const err = new Error(`the JSON body nests deeper than ${MAX_JSON_DEPTH} levels`);
        (err as { statusCode?: number }).statusCode = 400;
        return done(err, undefined);
      }
      return parse(req, body as string, done);
    },
  );
}
