"""A Gradio chat over the project's model, as Loom hosts it: `openai.OpenAI()` needs no
configuration (Loom gives every App OPENAI_BASE_URL and a key for its project's models), and the
reply streams token by token. MODEL names the InferenceService (default `tiny`)."""
import os

import gradio as gr
from openai import OpenAI

from prompts import load_system_prompt

MODEL = os.environ.get("MODEL", "tiny")
TEMPERATURE = float(os.environ.get("TEMPERATURE", "0.8"))
client = OpenAI()
SYSTEM, SOURCE = load_system_prompt()


def text_of(content):
    """A history message's text: a string, or a list of content parts (Gradio 6 may give either)."""
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else [content]
    return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in parts)


def respond(message, history):
    messages = [{"role": "system", "content": SYSTEM}]
    for turn in history:  # Gradio's "messages" history: {"role", "content"} dicts
        messages.append({"role": turn["role"], "content": text_of(turn["content"])})
    messages.append({"role": "user", "content": message})
    stream = client.chat.completions.create(
        model=MODEL, messages=messages, stream=True, max_tokens=64, temperature=TEMPERATURE
    )
    reply = ""
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            reply += chunk.choices[0].delta.content
            yield reply


gr.ChatInterface(
    respond,
    title="Loom playground",
    description=f"Model: `{MODEL}` · system prompt: {SOURCE}",
).launch()
