"""A Gradio chat over the project's model, as Loom hosts it: `openai.OpenAI()` needs no
configuration (Loom gives every App OPENAI_BASE_URL and a key for its project's models), and the
reply streams token by token. MODEL names the InferenceService (default `tiny`).

The system prompt comes from the project's prompt registry (prompts:/playground-system@champion,
see prompts.py), and every exchange is recorded as a trace in the experiment TRACE_EXPERIMENT
(default `playground`): Loom gives every App MLFLOW_TRACKING_URI and a tracking credential too,
so mlflow needs no configuration either."""
import os

import gradio as gr
from openai import OpenAI

from prompts import load_system_prompt

MODEL = os.environ.get("MODEL", "tiny")
TEMPERATURE = float(os.environ.get("TEMPERATURE", "0.8"))
client = OpenAI()
SYSTEM, SOURCE = load_system_prompt()

try:
    import mlflow  # optional: without it (or without tracking) the chat records nothing
except ImportError:
    mlflow = None
TRACING = mlflow is not None and bool(os.environ.get("MLFLOW_TRACKING_URI"))
if TRACING:
    try:
        mlflow.set_experiment(os.environ.get("TRACE_EXPERIMENT", "playground"))
    except Exception as err:  # tracking unreachable: chat on, untraced
        print(f"not recording traces: {type(err).__name__}: {err}", flush=True)
        TRACING = False


def trace_start(messages):
    """A span for one exchange, opened before the stream (Gradio may resume the generator on
    another thread: a span bound to no context survives that)."""
    if not TRACING:
        return None
    try:
        return mlflow.start_span_no_context(
            "playground-chat",
            span_type="CHAT_MODEL",
            inputs={"model": MODEL, "messages": messages},
            attributes={"system_prompt": SOURCE},
        )
    except Exception:
        return None


def trace_end(span, reply, error=None):
    """Ends the exchange's span once: returns None for the caller to keep instead."""
    if span is None:
        return None
    try:
        span.end(outputs={"reply": reply}, status="ERROR" if error else "OK")
    except Exception:
        pass
    return None


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
    span = trace_start(messages)
    reply, error = "", None
    try:
        stream = client.chat.completions.create(
            model=MODEL, messages=messages, stream=True, max_tokens=64, temperature=TEMPERATURE
        )
        # One chunk behind: the last value is yielded after the span has ended, so the trace is
        # recorded even though Gradio may never resume the generator after its last value.
        pending = False
        for chunk in stream:
            choice = chunk.choices[0] if chunk.choices else None
            if choice and choice.delta.content:
                if pending:
                    yield reply
                reply += choice.delta.content
                pending = True
            if choice and choice.finish_reason:
                break
        span = trace_end(span, reply)
        if pending:
            yield reply
    except Exception as err:
        error = err
        raise
    finally:  # a stream that failed, or one Gradio closed (the user pressed stop)
        trace_end(span, reply, error)


gr.ChatInterface(
    respond,
    title="Loom playground",
    description=f"Model: `{MODEL}` · system prompt: {SOURCE}",
).launch()
