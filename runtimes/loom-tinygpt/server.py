#!/usr/bin/python3
"""loom-tinygpt: Loom's built-in inference runtime. Serves the tiny character-level GPT of
examples/pretrain (and its LoRA-merged fine-tunes from examples/finetune) with the OpenAI API.

    LOOM_MODEL_DIR=/tmp/ft/model PORT=8000 /usr/bin/python3 runtimes/loom-tinygpt/server.py

Standard library plus torch only (Debian's python3 3.11 and python3-torch). See README.md next to
this file for the contract; in short:

- HOST (127.0.0.1) and PORT (8000), or --host/--port. LOOM_MODEL_DIR (or --model-dir): a directory
  with model.pt + config.json (finetune.py's model/), or with ckpt.pt (train.py's checkpoint), or
  with a model/ subdirectory holding model.pt + config.json. No model there: exit 2.
- GET /health, GET /v1/models[/ID], POST /v1/completions, /v1/chat/completions, /v1/embeddings.
  Tokens are characters of the model's vocabulary.
- LOOM_MODEL_NAME (tinygpt) is the model id; LOOM_REPLICA is echoed in `x-loom-replica`;
  LOOM_SLOW_MS adds a delay per generated character.
- SIGTERM/SIGINT: stop accepting, let in-flight requests finish (at most 10 s), exit 0. While the
  model loads: the default action (ended at once).
"""
import argparse
import base64
import importlib.util
import json
import os
import random
import select
import signal
import socket
import struct
import sys
import threading
import time
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

sys.dont_write_bytecode = True  # nothing written next to the examples in the checkout
# One thread per torch op, in every thread (set before torch is imported: set_num_threads alone
# does not reach the OpenMP pools of threads started later).
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

HERE = os.path.dirname(os.path.abspath(__file__))
PRETRAIN_DIR = os.path.normpath(os.path.join(HERE, "..", "..", "examples", "pretrain"))

DRAIN_SECONDS = 10.0
KEEPALIVE_SECONDS = 75.0  # longer than the idle timeout of common client pools (Node: 4-5 s)
MAX_BODY = 8 << 20
MAX_TOKENS_LIMIT = int(os.environ.get("LOOM_MAX_TOKENS_LIMIT") or 4096)
MAX_EMBED_INPUTS = 2048


def log(*a):
    print("loom-tinygpt:", *a, file=sys.stderr, flush=True)


def die(msg, code=2):
    log(msg)
    sys.stderr.flush()
    os._exit(code)  # also from the main thread while the server thread runs


# ---------------------------------------------------------------------------------------------
# The model


def locate_model(model_dir):
    """(kind, directory) of the model in model_dir, or exit 2. Checked before torch is imported."""
    hint = ("  Point LOOM_MODEL_DIR (or --model-dir) at finetune.py's model directory (model.pt + "
            "config.json: $LOOM_CHECKPOINT_DIR/model/ or the artifacts of runs:/<run_id>/model) or at a "
            "pretrain checkpoint directory (ckpt.pt), e.g.\n"
            "    LOOM_CHECKPOINT_DIR=/tmp/pt python3 examples/pretrain/train.py --steps 40\n"
            "    LOOM_MODEL_DIR=/tmp/pt python3 runtimes/loom-tinygpt/server.py")
    if not model_dir:
        die("no model: LOOM_MODEL_DIR is not set (nor --model-dir).\n" + hint)
    if not os.path.isdir(model_dir):
        die(f"no model: {model_dir} is not a directory.\n" + hint)
    for cand in (model_dir, os.path.join(model_dir, "model")):
        if os.path.isfile(os.path.join(cand, "model.pt")):
            if not os.path.isfile(os.path.join(cand, "config.json")):
                die(f"no model: {cand} has model.pt but no config.json.\n" + hint)
            return "merged", cand
        if cand == model_dir and os.path.isfile(os.path.join(cand, "ckpt.pt")):
            return "pretrain", cand
    die(f"no model: {model_dir} has neither model.pt + config.json nor ckpt.pt (nor model/model.pt).\n" + hint)


def import_pretrain():
    """examples/pretrain/train.py as a module (it puts its own directory on sys.path for corpus.py)."""
    path = os.path.join(PRETRAIN_DIR, "train.py")
    if not os.path.isfile(path):
        die(f"cannot find the TinyGPT model code at {path} (this runtime expects the Loom checkout's "
            "layout: runtimes/loom-tinygpt/ next to examples/pretrain/)", 1)
    sys.path.insert(0, PRETRAIN_DIR)
    spec = importlib.util.spec_from_file_location("loom_pretrain_train", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# Characters outside the vocabulary: the other case if the model knows it, else this table, else
# dropped. \r is dropped (so \r\n becomes \n); other whitespace becomes a space.
_FALLBACK = {":": ",", ";": ",", "?": ".", "\t": " ", "\r": "", "\u00a0": " "}


class Model:
    def __init__(self, torch, net, cfg, chars, source):
        self.torch = torch
        self.net = net
        self.cfg = cfg
        self.chars = chars
        self.context = int(cfg["context"])
        self.vocab = int(cfg["vocab"])
        self.d_model = int(cfg["d_model"])
        self.source = source
        self.stoi = {c: i for i, c in enumerate(chars)}
        self.positions = torch.arange(self.context)
        self._map_cache = {}

    def encode(self, text):
        ids, stoi, cache = [], self.stoi, self._map_cache
        for ch in text:
            i = stoi.get(ch)
            if i is None:
                i = cache.get(ch, -2)
                if i == -2:
                    i = self._fallback(ch)
                    if len(cache) < 10000:
                        cache[ch] = i
                if i < 0:
                    continue
            ids.append(i)
        return ids

    def _fallback(self, ch):
        for alt in (ch.lower(), ch.upper()):
            if alt in self.stoi:
                return self.stoi[alt]
        alt = _FALLBACK.get(ch)
        if alt is None and ch.isspace():
            alt = " "
        if alt and alt in self.stoi:
            return self.stoi[alt]
        return -1

    def decode(self, ids):
        return "".join(self.chars[i] for i in ids)

    def next_logits(self, ids):
        """Logits for the character after ids (the last `context` of them are used)."""
        torch, net = self.torch, self.net
        ctx = ids[-self.context:]
        idx = torch.tensor([ctx], dtype=torch.long)
        x = net.tok(idx) + net.pos(self.positions[: len(ctx)])
        h = net.blocks(x)[:, -1]
        return net.head(net.ln(h))[0]

    def embed(self, ids):
        """Mean over positions of the final hidden state (after the last LayerNorm), L2-normalised.
        Inputs longer than the context are cut into consecutive windows of `context` characters."""
        torch, net = self.torch, self.net
        total = torch.zeros(self.d_model)
        for i in range(0, len(ids), self.context):
            chunk = ids[i: i + self.context]
            idx = torch.tensor([chunk], dtype=torch.long)
            h = net.ln(net.blocks(net.tok(idx) + net.pos(self.positions[: len(chunk)])))[0]
            total += h.sum(dim=0)
        v = total / len(ids)
        n = float(v.norm())
        if n > 0:
            v = v / n
        return v


def load_model(kind, path):
    import torch

    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    pretrain = import_pretrain()
    if kind == "merged":
        with open(os.path.join(path, "config.json")) as f:
            cfg = json.load(f)
        state = torch.load(os.path.join(path, "model.pt"), map_location="cpu")
        if isinstance(state, dict) and isinstance(state.get("model"), dict):
            state = state["model"]
        source = os.path.join(path, "model.pt")
    else:
        ckpt = torch.load(os.path.join(path, "ckpt.pt"), map_location="cpu")
        cfg, state = ckpt["config"], ckpt["model"]
        source = os.path.join(path, "ckpt.pt") + f" (step {ckpt.get('step')})"
    missing = [k for k in ("vocab", "context", "d_model", "layers", "heads") if k not in cfg]
    if missing:
        raise ValueError(f"the model config lacks {missing}")
    chars = cfg.get("chars")
    if not chars:
        # train.py's checkpoint has no vocabulary: it is the pretraining corpus's (default size).
        chars = "".join(sorted(set(pretrain.make_corpus())))
    if len(chars) != int(cfg["vocab"]):
        raise ValueError(f"the model has vocab {cfg['vocab']} but its vocabulary has {len(chars)} characters")
    net = pretrain.TinyGPT(int(cfg["vocab"]), int(cfg["context"]), int(cfg["d_model"]), int(cfg["layers"]),
                           int(cfg["heads"]))
    net.load_state_dict(state)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    model = Model(torch, net, cfg, chars, source)
    model.linear_backend = use_onednn(torch, model)
    return model


def use_onednn(torch, model):
    """Run the Linear layers through oneDNN (mkldnn_linear) when this torch has it.

    Debian's torch links the generic reference BLAS: one 64x64 @ 64x256 matmul takes ~0.8 ms there,
    ~0.05 ms through oneDNN, which makes generation ~10x faster. The swap is checked against the
    plain model on a probe input and undone if it disagrees or fails. LOOM_ONEDNN=0 turns it off."""
    if os.environ.get("LOOM_ONEDNN", "1") == "0":
        return "blas (LOOM_ONEDNN=0)"
    if not torch.backends.mkldnn.is_available() or not hasattr(torch._C._nn, "mkldnn_linear"):
        return "blas (no oneDNN in this torch)"
    nn = torch.nn
    mkldnn_linear = torch._C._nn.mkldnn_linear

    class OneDNNLinear(nn.Module):
        def __init__(self, lin):
            super().__init__()
            self.out_features = lin.out_features
            self.w = lin.weight.detach().contiguous().to_mkldnn()
            self.b = None if lin.bias is None else lin.bias.detach().contiguous()

        def forward(self, x):
            shape = x.shape
            y = mkldnn_linear(x.reshape(-1, shape[-1]).contiguous().to_mkldnn(), self.w, self.b).to_dense()
            return y.reshape(*shape[:-1], self.out_features)

    net = model.net
    swaps = []
    for parent in net.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Linear):
                swaps.append((parent, name, child))
    probe = list(range(model.vocab)) * (model.context // model.vocab + 1)
    probe = probe[: model.context]
    try:
        with torch.inference_mode():
            want = model.next_logits(probe)
            for parent, name, child in swaps:
                setattr(parent, name, OneDNNLinear(child))
            got = model.next_logits(probe)
        err = float((got - want).abs().max())
        if not err <= 1e-3 * max(1.0, float(want.abs().max())):
            raise ValueError(f"differs from the plain model by {err:g}")
        return "onednn"
    except Exception as e:  # noqa: BLE001
        for parent, name, child in swaps:
            setattr(parent, name, child)
        return f"blas (oneDNN failed: {e})"


# ---------------------------------------------------------------------------------------------
# Generation


class ClientGone(Exception):
    pass


class Generation:
    """Iterate to get the text to emit, piece by piece (normally one character each); then
    finish_reason and completion_tokens are set. Text that may be the start of a stop sequence is
    held back until it is known not to be one; a stop sequence ends generation and is not emitted."""

    def __init__(self, model, prompt_ids, max_tokens, temperature, top_p, seed, stops, slow_s, alive=None):
        self.model = model
        self.ids = list(prompt_ids)
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.stops = stops
        self.slow_s = slow_s
        self.alive = alive
        torch = model.torch
        self.gen = torch.Generator()
        self.gen.manual_seed((seed if seed is not None else random.SystemRandom().getrandbits(63)) % (1 << 64))
        self.finish_reason = None
        self.completion_tokens = 0

    def _sample(self):
        torch = self.model.torch
        logits = self.model.next_logits(self.ids)
        if self.temperature == 0:
            return int(logits.argmax())
        probs = torch.softmax(logits.float() / self.temperature, dim=-1)
        if self.top_p is not None and self.top_p < 1.0:
            sp, si = probs.sort(descending=True)
            keep = (sp.cumsum(0) - sp) < self.top_p  # always keeps the most likely
            sp = sp * keep
            return int(si[torch.multinomial(sp, 1, generator=self.gen)])
        return int(torch.multinomial(probs, 1, generator=self.gen))

    def __iter__(self):
        torch = self.model.torch
        stops = self.stops
        pending = ""
        with torch.inference_mode():
            for n in range(self.max_tokens):
                if self.slow_s:
                    time.sleep(self.slow_s)
                if self.alive is not None and n % 8 == 7 and not self.alive():
                    raise ClientGone()
                nxt = self._sample()
                self.ids.append(nxt)
                self.completion_tokens += 1
                ch = self.model.chars[nxt]
                if not stops:
                    yield ch
                    continue
                pending += ch
                cut = -1
                for s in stops:
                    i = pending.find(s)
                    if i >= 0 and (cut < 0 or i < cut):
                        cut = i
                if cut >= 0:
                    if cut:
                        yield pending[:cut]
                    self.finish_reason = "stop"
                    return
                hold = 0  # the longest suffix of pending that begins a stop sequence
                for s in stops:
                    for k in range(min(len(s) - 1, len(pending)), hold, -1):
                        if pending.endswith(s[:k]):
                            hold = k
                            break
                if len(pending) > hold:
                    yield pending[: len(pending) - hold]
                    pending = pending[len(pending) - hold:]
        if pending:
            yield pending
        self.finish_reason = "length"


# ---------------------------------------------------------------------------------------------
# Request validation


class ApiError(Exception):
    def __init__(self, status, message, param=None, code=None, type_="invalid_request_error", headers=()):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type_
        self.headers = headers


def bad(message, param=None, code=None):
    return ApiError(400, message, param=param, code=code)


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def opt_int(body, name, default, lo=None, hi=None):
    v = body.get(name)
    if v is None:
        return default
    if not _is_int(v):
        raise bad(f"'{name}' must be an integer, not {json.dumps(v)[:60]}", name, "invalid_type")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        rng = f"at least {lo}" if hi is None else f"between {lo} and {hi}"
        raise bad(f"'{name}' must be {rng}, not {v}", name, "invalid_value")
    return v


def opt_num(body, name, default, lo, hi, lo_open=False):
    v = body.get(name)
    if v is None:
        return default
    if not _is_num(v):
        raise bad(f"'{name}' must be a number, not {json.dumps(v)[:60]}", name, "invalid_type")
    if v > hi or v < lo or (lo_open and v == lo):
        raise bad(f"'{name}' must be {'>' if lo_open else '>='} {lo} and <= {hi}, not {v}", name, "invalid_value")
    return float(v)


def opt_bool(body, name, default=False):
    v = body.get(name)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise bad(f"'{name}' must be a boolean, not {json.dumps(v)[:60]}", name, "invalid_type")
    return v


def sampling_params(body, chat):
    n = body.get("n")
    if n is not None and (not _is_int(n) or n != 1):
        raise bad(f"only n=1 is supported, not {json.dumps(n)[:60]}", "n", "unsupported_value")
    best_of = body.get("best_of")
    if best_of is not None and (not _is_int(best_of) or best_of != 1):
        raise bad("only best_of=1 is supported", "best_of", "unsupported_value")
    if body.get("echo"):
        raise bad("echo is not supported", "echo", "unsupported_value")
    lp = body.get("logprobs")
    if lp not in (None, False) and not (not chat and lp == 0 and _is_int(lp)):
        raise bad("logprobs are not supported", "logprobs", "unsupported_value")
    if chat and body.get("top_logprobs") not in (None, 0):
        raise bad("top_logprobs is not supported", "top_logprobs", "unsupported_value")
    name = "max_tokens"
    if chat and body.get("max_completion_tokens") is not None:
        name = "max_completion_tokens"
    max_tokens = opt_int(body, name, 16, 0, MAX_TOKENS_LIMIT)
    temperature = opt_num(body, "temperature", 1.0, 0.0, 2.0)
    top_p = opt_num(body, "top_p", 1.0, 0.0, 1.0, lo_open=True)
    seed = opt_int(body, "seed", None)
    stream = opt_bool(body, "stream")
    so = body.get("stream_options")
    include_usage = False
    if so is not None:
        if not stream:
            raise bad("'stream_options' is only allowed when 'stream' is true", "stream_options")
        if not isinstance(so, dict):
            raise bad("'stream_options' must be an object", "stream_options", "invalid_type")
        include_usage = opt_bool(so, "include_usage")
    stop = body.get("stop")
    if stop is None:
        stops = []
    elif isinstance(stop, str):
        stops = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        stops = list(stop)
    else:
        raise bad("'stop' must be a string or a list of strings", "stop", "invalid_type")
    if len(stops) > 16:
        raise bad("at most 16 stop sequences", "stop", "invalid_value")
    stops = [s for s in dict.fromkeys(stops) if s]
    return dict(max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed, stream=stream,
                include_usage=include_usage, stops=stops)


def token_list(model, v, param):
    if not all(_is_int(t) for t in v):
        return None
    bad_ids = [t for t in v if not 0 <= t < model.vocab]
    if bad_ids:
        raise bad(f"token ids must be in [0, {model.vocab}); got {bad_ids[0]}", param, "invalid_value")
    return list(v)


def completion_prompt(model, body):
    p = body.get("prompt")
    if p is None:
        raise bad("'prompt' is required", "prompt", "missing_required_parameter")
    if isinstance(p, list):
        if len(p) == 1 and isinstance(p[0], (str, list)):
            p = p[0]
        elif p and all(_is_int(t) for t in p):
            pass
        elif not p:
            raise bad("'prompt' is an empty list", "prompt", "invalid_value")
        else:
            raise bad("only one prompt per request is supported (a string, or a list of one string)",
                      "prompt", "unsupported_value")
    if isinstance(p, str):
        ids = model.encode(p)
        if not ids:
            raise bad(_empty_message("the prompt", p), "prompt", "empty_prompt")
        return ids
    if isinstance(p, list):
        ids = token_list(model, p, "prompt")
        if ids is None:
            raise bad("'prompt' must be a string, a list of one string, or a list of token ids", "prompt", "invalid_type")
        if not ids:
            raise bad("'prompt' is empty", "prompt", "empty_prompt")
        return ids
    raise bad("'prompt' must be a string or a list of one string", "prompt", "invalid_type")


def _empty_message(what, text):
    if not text:
        return f"{what} is empty"
    return (f"{what} is empty after dropping the characters the model does not know: its vocabulary "
            f"is the {len(STATE.model.chars)} characters {json.dumps(STATE.model.chars)}")


CHAT_ROLES = ("system", "developer", "user", "assistant", "tool", "function")


def chat_prompt(model, body):
    """messages -> "role: content\\n" per message, then "assistant: " (mapped like any prompt: ':' -> ',')."""
    msgs = body.get("messages")
    if msgs is None:
        raise bad("'messages' is required", "messages", "missing_required_parameter")
    if not isinstance(msgs, list) or not msgs:
        raise bad("'messages' must be a non-empty list", "messages", "invalid_value")
    parts = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise bad(f"messages[{i}] must be an object", f"messages[{i}]", "invalid_type")
        role = m.get("role")
        if role not in CHAT_ROLES:
            raise bad(f"messages[{i}].role must be one of {', '.join(CHAT_ROLES)}; got {json.dumps(role)[:40]}",
                      f"messages[{i}].role", "invalid_value")
        content = m.get("content")
        if content is None:
            content = ""
        elif isinstance(content, list):
            texts = []
            for j, part in enumerate(content):
                if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise bad(f"messages[{i}].content[{j}]: only text parts ({{\"type\": \"text\", \"text\": ...}}) "
                              "are supported", f"messages[{i}].content", "unsupported_value")
                texts.append(part["text"])
            content = "\n".join(texts)
        elif not isinstance(content, str):
            raise bad(f"messages[{i}].content must be a string or a list of text parts",
                      f"messages[{i}].content", "invalid_type")
        parts.append(f"{role}: {content}\n")
    text = "".join(parts) + "assistant: "
    return model.encode(text)


def embedding_inputs(model, body):
    v = body.get("input")
    if v is None:
        raise bad("'input' is required", "input", "missing_required_parameter")
    if isinstance(v, str):
        items = [v]
    elif isinstance(v, list) and v and all(_is_int(t) for t in v):
        items = [v]
    elif isinstance(v, list) and v:
        items = v
    else:
        raise bad("'input' must be a string, a non-empty list of strings, or token ids", "input", "invalid_value")
    if len(items) > MAX_EMBED_INPUTS:
        raise bad(f"at most {MAX_EMBED_INPUTS} inputs per request", "input", "invalid_value")
    out = []
    for i, it in enumerate(items):
        if isinstance(it, str):
            ids = model.encode(it)
            if not ids:
                raise bad(_empty_message(f"input[{i}]", it), "input", "empty_input")
        elif isinstance(it, list):
            ids = token_list(model, it, "input")
            if ids is None:
                raise bad(f"input[{i}] must be a string or a list of token ids", "input", "invalid_type")
            if not ids:
                raise bad(f"input[{i}] is empty", "input", "empty_input")
        else:
            raise bad(f"input[{i}] must be a string or a list of token ids", "input", "invalid_type")
        out.append(ids)
    fmt = body.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise bad("'encoding_format' must be 'float' or 'base64'", "encoding_format", "invalid_value")
    dims = body.get("dimensions")
    if dims is not None and dims != model.d_model:
        raise bad(f"this model's embeddings have {model.d_model} dimensions; 'dimensions' cannot change that",
                  "dimensions", "unsupported_value")
    return out, fmt


# ---------------------------------------------------------------------------------------------
# Server state and HTTP


class State:
    def __init__(self):
        self.model = None
        self.ready = False
        self.draining = False
        self.created = int(time.time())
        self.name = os.environ.get("LOOM_MODEL_NAME") or "tinygpt"
        self.replica = os.environ.get("LOOM_REPLICA") or None
        self.slow_s = max(0.0, float(os.environ.get("LOOM_SLOW_MS") or 0) / 1000.0)
        self.lock = threading.Lock()
        self.idle = threading.Condition(self.lock)
        self.active = 0  # requests being handled
        self.conns = set()

    def begin(self):
        with self.lock:
            self.active += 1

    def end(self):
        with self.lock:
            self.active -= 1
            if self.active == 0:
                self.idle.notify_all()


STATE = State()


def new_id(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "loom-tinygpt/1"
    sys_version = ""
    timeout = KEEPALIVE_SECONDS

    def version_string(self):
        return self.server_version

    # -- connection bookkeeping (for draining) --

    def setup(self):
        super().setup()
        self.busy = False
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with STATE.lock:
            STATE.conns.add(self)

    def finish(self):
        try:
            super().finish()
        finally:
            with STATE.lock:
                STATE.conns.discard(self)

    def __getattr__(self, name):  # every do_METHOD goes to the router: 404/405 rather than 501
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)

    def log_request(self, code="-", size="-"):
        pass  # one line per request from _dispatch instead

    def log_message(self, fmt, *args):
        log(f"{self.address_string()} {fmt % args}")

    # -- responses --

    def _common_headers(self):
        if STATE.replica:
            self.send_header("x-loom-replica", STATE.replica)
        if self.close_connection:
            self.send_header("Connection", "close")
        elif self.request_version == "HTTP/1.0":
            self.send_header("Connection", "keep-alive")

    def _write(self, data):
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError, OSError) as e:
            raise ClientGone() from e

    def send_json(self, status, obj, headers=()):
        body = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
        self.status = status
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self._common_headers()
        self.end_headers()
        if self.command != "HEAD":
            self._write(body)

    def send_api_error(self, e):
        self.send_json(e.status, {"error": {"message": e.message, "type": e.type, "param": e.param, "code": e.code}},
                       e.headers)

    def send_error(self, code, message=None, explain=None):
        # Malformed requests the base class rejects (bad request line, headers too long, ...): JSON too.
        self.close_connection = True
        try:
            msg = message or self.responses.get(code, ("error",))[0]
            self.send_json(code, {"error": {"message": msg, "type": "invalid_request_error", "param": None,
                                            "code": None}})
        except ClientGone:
            pass

    # -- streaming (Server-Sent Events over chunked transfer encoding; HTTP/1.0: until close) --

    def start_stream(self):
        self.chunked = self.request_version != "HTTP/1.0"
        if not self.chunked:
            self.close_connection = True
        self.status = 200
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("X-Accel-Buffering", "no")
        if self.chunked:
            self.send_header("Transfer-Encoding", "chunked")
        self._common_headers()
        self.end_headers()

    def send_event(self, obj):
        data = obj if isinstance(obj, str) else json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
        payload = b"data: " + data.encode() + b"\n\n"
        if self.chunked:
            payload = b"%x\r\n%s\r\n" % (len(payload), payload)
        self._write(payload)

    def end_stream(self):
        if self.chunked:
            self._write(b"0\r\n\r\n")

    def client_alive(self):
        """False once the client has closed its side (checked during long non-streamed generations)."""
        try:
            r, _, _ = select.select([self.connection], [], [], 0)
            if not r:
                return True
            return self.connection.recv(1, socket.MSG_PEEK) != b""
        except (OSError, ValueError):
            return False

    # -- request body --

    def read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            chunks, size = [], 0
            while True:
                line = self.rfile.readline(1024)
                if not line:
                    raise ClientGone()
                try:
                    n = int(line.split(b";")[0].strip(), 16)
                except ValueError:
                    self.close_connection = True
                    raise bad("malformed chunked request body")
                if n == 0:
                    while True:  # trailers
                        t = self.rfile.readline(8192)
                        if t in (b"\r\n", b"\n", b""):
                            break
                    break
                size += n
                if size > MAX_BODY:
                    self.close_connection = True
                    raise ApiError(413, f"request body larger than {MAX_BODY} bytes")
                chunks.append(self.rfile.read(n))
                self.rfile.readline(8)
            return b"".join(chunks)
        cl = self.headers.get("Content-Length")
        if cl is None:
            return b""
        try:
            n = int(cl)
            if n < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            raise bad("invalid Content-Length")
        if n > MAX_BODY:
            self.close_connection = True
            raise ApiError(413, f"request body larger than {MAX_BODY} bytes")
        data = self.rfile.read(n)
        if len(data) < n:
            raise ClientGone()
        return data

    def json_body(self, raw):
        if not raw.strip():
            raise bad("the request body must be a JSON object; it is empty")
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, ValueError) as e:
            raise bad(f"the request body is not valid JSON: {e}")
        if not isinstance(body, dict):
            raise bad("the request body must be a JSON object")
        return body

    # -- routing --

    def _dispatch(self):
        self.busy = True
        self.status = None
        self.gone = False
        t0 = time.monotonic()
        STATE.begin()
        try:
            if STATE.draining:
                self.close_connection = True
            path = urlsplit(self.path).path.rstrip("/") or "/"
            method = self.command
            try:
                raw = self.read_body()
                route, allowed = self.route(path)
                if route is None:
                    raise ApiError(404, f"Invalid URL ({method} {path})", code="not_found")
                if method not in allowed:
                    raise ApiError(405, f"Method {method} is not allowed for {path}; use {', '.join(allowed)}",
                                   code="method_not_allowed", headers=(("Allow", ", ".join(allowed)),))
                if path != "/health" and not STATE.ready:
                    raise ApiError(503, "the model is still loading", type_="service_unavailable",
                                   code="model_loading", headers=(("Retry-After", "1"),))
                body = self.json_body(raw) if method == "POST" else None
                route(body)
            except ApiError as e:
                self.send_api_error(e)
        except ClientGone:
            self.close_connection = True
            self.gone = True
        except Exception:  # noqa: BLE001
            traceback.print_exc()
            self.close_connection = True
            if self.status is None:
                try:
                    self.send_api_error(ApiError(500, "internal error", type_="server_error", code="internal_error"))
                except ClientGone:
                    pass
        finally:
            self.busy = False
            STATE.end()
            gone = " (client went away)" if self.gone else ""
            log(f'"{self.command} {self.path}" {self.status or "-"} {1000 * (time.monotonic() - t0):.1f}ms{gone}')

    def route(self, path):
        if path == "/health":
            return self.health, ("GET", "HEAD")
        if path == "/v1/models":
            return self.models, ("GET",)
        if path.startswith("/v1/models/"):
            return (lambda _b: self.model_info(path[len("/v1/models/"):])), ("GET",)
        if path == "/v1/completions":
            return (lambda b: self.completions(b, chat=False)), ("POST",)
        if path == "/v1/chat/completions":
            return (lambda b: self.completions(b, chat=True)), ("POST",)
        if path == "/v1/embeddings":
            return self.embeddings, ("POST",)
        return None, ()

    # -- endpoints --

    def health(self, _body):
        if not STATE.ready:
            raise ApiError(503, "the model is still loading", type_="service_unavailable", code="model_loading")
        self.send_json(200, {"status": "ok"})

    def _model_obj(self):
        return {"id": STATE.name, "object": "model", "created": STATE.created, "owned_by": "loom"}

    def models(self, _body):
        self.send_json(200, {"object": "list", "data": [self._model_obj()]})

    def model_info(self, mid):
        if mid != STATE.name:
            raise ApiError(404, f"The model '{mid}' does not exist", param="model", code="model_not_found")
        self.send_json(200, self._model_obj())

    def completions(self, body, chat):
        model = STATE.model
        p = sampling_params(body, chat)
        if chat:
            ids = chat_prompt(model, body)
        else:
            ids = completion_prompt(model, body)
        gen = Generation(model, ids, p["max_tokens"], p["temperature"], p["top_p"], p["seed"], p["stops"],
                         STATE.slow_s, alive=None if p["stream"] else self.client_alive)
        rid = new_id("chatcmpl" if chat else "cmpl")
        created = int(time.time())
        obj = "chat.completion" if chat else "text_completion"

        def usage():
            return {"prompt_tokens": len(ids), "completion_tokens": gen.completion_tokens,
                    "total_tokens": len(ids) + gen.completion_tokens}

        if not p["stream"]:
            text = "".join(gen)
            if chat:
                choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                          "finish_reason": gen.finish_reason}
            else:
                choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": gen.finish_reason}
            self.send_json(200, {"id": rid, "object": obj, "created": created, "model": STATE.name,
                                 "choices": [choice], "usage": usage()})
            return

        chunk_obj = "chat.completion.chunk" if chat else "text_completion"
        with_usage = p["include_usage"]

        def chunk(delta_or_text, finish=None):
            if chat:
                c = {"index": 0, "delta": delta_or_text, "logprobs": None, "finish_reason": finish}
            else:
                c = {"text": delta_or_text, "index": 0, "logprobs": None, "finish_reason": finish}
            out = {"id": rid, "object": chunk_obj, "created": created, "model": STATE.name, "choices": [c]}
            if with_usage:
                out["usage"] = None
            return out

        self.start_stream()
        if chat:
            self.send_event(chunk({"role": "assistant", "content": ""}))
        for piece in gen:
            for ch in piece:  # one event per character
                self.send_event(chunk({"content": ch} if chat else ch))
        self.send_event(chunk({} if chat else "", gen.finish_reason))
        if with_usage:
            self.send_event({"id": rid, "object": chunk_obj, "created": created, "model": STATE.name,
                             "choices": [], "usage": usage()})
        self.send_event("[DONE]")
        self.end_stream()

    def embeddings(self, body):
        model = STATE.model
        inputs, fmt = embedding_inputs(model, body)
        data = []
        with model.torch.inference_mode():
            for i, ids in enumerate(inputs):
                v = model.embed(ids)
                if fmt == "base64":
                    vals = v.tolist()
                    emb = base64.b64encode(struct.pack(f"<{len(vals)}f", *vals)).decode()
                else:
                    emb = [round(x, 7) for x in v.tolist()]
                data.append({"object": "embedding", "index": i, "embedding": emb})
        n = sum(len(ids) for ids in inputs)
        self.send_json(200, {"object": "list", "data": data, "model": STATE.name,
                             "usage": {"prompt_tokens": n, "total_tokens": n}})


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


# ---------------------------------------------------------------------------------------------
# Main


def drain(server):
    """Stop accepting, close idle keep-alive connections, let requests in flight finish (10 s)."""
    STATE.draining = True
    server.shutdown()  # the accept loop ends...
    server.socket.close()  # ...and nothing more is accepted
    deadline = time.monotonic() + DRAIN_SECONDS
    with STATE.lock:
        inflight = STATE.active
    log(f"draining: {inflight} request(s) in flight")
    while True:
        with STATE.lock:
            for h in list(STATE.conns):
                if h.busy:
                    h.close_connection = True  # close after this response
                else:
                    try:
                        h.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
            if STATE.active == 0:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                log(f"drain: {STATE.active} request(s) still running after {DRAIN_SECONDS:g}s; exiting anyway")
                break
            STATE.idle.wait(min(left, 0.1))
    log("stopped")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="loom-tinygpt: serve the tiny GPT with the OpenAI API")
    p.add_argument("--model-dir", default=os.environ.get("LOOM_MODEL_DIR") or None,
                   help="model.pt + config.json, or ckpt.pt (env LOOM_MODEL_DIR)")
    p.add_argument("--host", default=os.environ.get("HOST") or "127.0.0.1", help="env HOST (127.0.0.1)")
    p.add_argument("--port", type=int, default=int(os.environ.get("PORT") or 8000), help="env PORT (8000)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    kind, path = locate_model(args.model_dir)

    stop = threading.Event()

    def on_signal(signum, _frame):
        if stop.is_set():
            log(f"second {signal.Signals(signum).name}: exiting now")
            os._exit(128 + signum)
        log(f"{signal.Signals(signum).name}: stopping")
        stop.set()

    # While the model loads, a stop ends the process at once by the kernel's default action: a
    # Python handler runs only between bytecodes, and torch's import sits in C (loading its
    # libraries) for many seconds on a loaded machine, so a replica stopped then outlived its
    # grace period (CI: SIGKILLed after 15 s). The draining handler comes once there is
    # something to drain.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)

    Server.address_family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    try:
        server = Server((args.host, args.port), Handler)
    except OSError as e:
        die(f"cannot listen on {args.host}:{args.port}: {e}", 1)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="accept", daemon=True).start()
    log(f"listening on http://{args.host}:{server.server_address[1]} (model loading)")

    t0 = time.monotonic()
    try:
        STATE.model = load_model(kind, path)
    except SystemExit:
        raise
    except Exception as e:  # noqa: BLE001
        die(f"cannot load the model from {path}: {type(e).__name__}: {e}", 2)
    m = STATE.model
    STATE.created = int(time.time())
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    STATE.ready = True
    log(f"ready: model '{STATE.name}' from {m.source}: vocab {m.vocab}, context {m.context}, d_model {m.d_model}, "
        f"{m.cfg['layers']} layers; linear layers: {m.linear_backend}; loaded in {time.monotonic() - t0:.1f}s"
        + (f"; replica {STATE.replica}" if STATE.replica else "")
        + (f"; {STATE.slow_s * 1000:g} ms per token" if STATE.slow_s else ""))

    while not stop.wait(1.0):
        pass
    drain(server)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
