import type { Command } from "commander";
import type { CliDeps } from "../deps.js";

/** `loom chat SERVICE "prompt"`: one streamed chat completion through the gateway. */
export function registerChat(program: Command, deps: CliDeps): void {
  program
    .command("chat")
    .description('ask an InferenceService through the gateway, streaming the answer: loom chat NAME "prompt"')
    .argument("<service>", "the InferenceService (its name is the model name)")
    .argument("<prompt...>", "what to say")
    .option("-p, --project <project>", "project of the service")
    .option("--max-tokens <n>", "most tokens to generate", "64")
    .option("--temperature <t>", "sampling temperature (0: greedy)", "0.8")
    .action(
      async (
        service: string,
        words: string[],
        opts: { project?: string; maxTokens: string; temperature: string },
      ) => {
        const { api, defaultProject } = deps.client();
        const project = opts.project ?? defaultProject;
        const stream = await api.stream("/v1/chat/completions", {
          model: `${project}/${service}`,
          messages: [{ role: "user", content: words.join(" ") }],
          max_tokens: Number(opts.maxTokens),
          temperature: Number(opts.temperature),
          stream: true,
        });
        // Server-sent events: "data: {chunk}" blocks separated by a blank line, "data: [DONE]" last.
        let buffered = "";
        for await (const chunk of stream) {
          buffered += (chunk as Buffer).toString();
          let i = buffered.indexOf("\n\n");
          while (i >= 0) {
            const event = buffered.slice(0, i);
            buffered = buffered.slice(i + 2);
            i = buffered.indexOf("\n\n");
            const data = event.replace(/^data: ?/, "");
            if (data === "[DONE]") continue;
            const parsed = JSON.parse(data) as { choices?: { delta?: { content?: string } }[] };
            deps.stdout.write(parsed.choices?.[0]?.delta?.content ?? "");
          }
        }
        deps.stdout.write("\n");
      },
    );
}
