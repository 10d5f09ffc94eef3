"""gpu-check's model server: examples/pretrain's TinyGPT on this replica's GPU behind the OpenAI chat API.

Randomly initialised (nothing to download, no checkpoint needed): the check is that a replica Loom
placed on the GPU computes there and answers through the gateway, not what it says. Serves
GET /health and POST /v1/chat/completions on $PORT; the answer's system_fingerprint names the
device that computed it (`cuda:<name>` or `cpu` in the CPU rehearsal).
"""
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples", "pretrain"))
from train import TinyGPT  # noqa: E402

CHARS = " .,abcdefghijklmnopqrstuvwxyz"
dev = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
WHERE = f"cuda:{torch.cuda.get_device_name(0)}" if dev.type == "cuda" else "cpu"
torch.manual_seed(0)
net = TinyGPT(len(CHARS), 64, 64, 2, 4).to_device(dev).eval()
NAME = os.environ.get("LOOM_MODEL_NAME") or os.environ.get("LOOM_WORKLOAD") or "gpucheck"


def generate(prompt, n):
    ids = [CHARS.index(c) if c in CHARS else 0 for c in prompt.lower()][-63:] or [0]
    out = []
    with torch.inference_mode():
        for _ in range(n):
            idx = torch.tensor([ids[-64:]], device=dev)
            x = net.tok(idx) + net.pos(torch.arange(idx.shape[1], device=dev))
            nxt = int(net.head(net.ln(net.blocks(x)))[0, -1].argmax())
            ids.append(nxt)
            out.append(CHARS[nxt])
    return "".join(out)


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _send(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self._send(200, {"status": "ok", "device": WHERE} if self.path == "/health" else {"data": [{"id": NAME}]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
        if self.path != "/v1/chat/completions":
            return self._send(404, {"error": {"message": f"no {self.path}"}})
        prompt = " ".join(str(m.get("content", "")) for m in body.get("messages", []))
        text = generate(prompt, int(body.get("max_tokens") or 8))
        self._send(200, {
            "id": f"chatcmpl-{time.time_ns()}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", NAME), "system_fingerprint": WHERE,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"}],
            "usage": {"prompt_tokens": len(prompt), "completion_tokens": len(text), "total_tokens": len(prompt) + len(text)},
        })

    def log_message(self, *a):
        pass


print(f"gpucheck serve: TinyGPT on {WHERE}, port {os.environ.get('PORT', '8000')}", flush=True)
ThreadingHTTPServer((os.environ.get("HOST", "127.0.0.1"), int(os.environ.get("PORT", "8000"))), H).serve_forever()
