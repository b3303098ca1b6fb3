"""vLLM STAND-IN for tests: not vLLM, and it runs no model.

vLLM cannot run on machines without a GPU, so the console's vLLM path is tested against
this small server instead. It takes the flags of `vllm serve` (the ones Cortex sets and
the common ones users add) and, like vLLM's argparse, exits with status 2 on an unknown
flag. It then behaves like vLLM's OpenAI server from the outside:

- while "loading" (STANDIN_LOAD_DELAY seconds, default 0) nothing listens, as with vLLM,
  whose HTTP server only binds once the engine is up;
- STANDIN_EXIT_CODE=N makes it exit with N after the delay instead (a failed load);
- then GET /health -> 200 (empty body), GET /v1/models -> the served name, GET /metrics,
  POST /v1/chat/completions (plain and `stream: true` SSE ending in `data: [DONE]`),
  with `--api-key` enforced as a Bearer token like vLLM does: on `/v1/*` only. Like vLLM,
  the routes outside `/v1` answer without a key: /health, /metrics, GET /version,
  GET|POST /ping, and POST /invocations (SageMaker's: a chat or completion body, answered
  as /v1/chat/completions would).

Python standard library only, so the image needs nothing but python3.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vllm serve", allow_abbrev=False)
    p.add_argument("model_tag", nargs="?", help="model name or path (positional form)")
    p.add_argument("--model")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--served-model-name", nargs="+")
    p.add_argument("--api-key")
    p.add_argument("--tensor-parallel-size", "-tp", type=int, default=1)
    p.add_argument("--pipeline-parallel-size", "-pp", type=int, default=1)
    p.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    p.add_argument("--dtype", default="auto",
                   choices=["auto", "half", "float16", "bfloat16", "float", "float32"])
    p.add_argument("--quantization", "-q")
    p.add_argument("--max-model-len", type=int)
    p.add_argument("--kv-cache-dtype", default="auto")
    p.add_argument("--enforce-eager", action="store_true")
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--enable-prefix-caching", action=argparse.BooleanOptionalAction)
    p.add_argument("--max-num-seqs", type=int)
    p.add_argument("--max-num-batched-tokens", type=int)
    p.add_argument("--download-dir")
    p.add_argument("--swap-space", type=float)
    p.add_argument("--cpu-offload-gb", type=float)
    p.add_argument("--block-size", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--runner", choices=["auto", "generate", "pooling", "draft"])
    p.add_argument("--task")
    p.add_argument("--tokenizer")
    p.add_argument("--revision")
    p.add_argument("--chat-template")
    p.add_argument("--disable-log-requests", action="store_true")
    p.add_argument("--uvicorn-log-level")
    return p


def make_handler(served: str, api_key: str | None, max_len: int):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # vLLM-like access log on stdout
            print(f"INFO:     {self.address_string()} - \"{self.requestline}\" {args[1] if len(args) > 1 else ''}", flush=True)

        def _send(self, code: int, body: bytes = b"", ctype: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, code: int, obj) -> None:
            self._send(code, json.dumps(obj).encode())

        def _authorized(self) -> bool:
            if not api_key or not self.path.startswith("/v1/"):
                return True
            if self.headers.get("Authorization") == f"Bearer {api_key}":
                return True
            self._json(401, {"error": "Unauthorized"})
            return False

        def do_GET(self):
            if not self._authorized():
                return
            if self.path == "/health":
                self._send(200)
            elif self.path == "/v1/models":
                self._json(200, {"object": "list", "data": [
                    {"id": served, "object": "model", "owned_by": "vllm", "max_model_len": max_len}]})
            elif self.path == "/version":
                self._json(200, {"version": "0.0.0-standin"})
            elif self.path == "/ping":
                self._send(200)
            elif self.path == "/metrics":
                self._send(200, b"vllm:num_requests_running 0\nvllm:gpu_cache_usage_perc 0.0\n",
                           "text/plain; version=0.0.4")
            else:
                self._json(404, {"detail": "Not Found"})

        def do_POST(self):
            if not self._authorized():
                return
            if self.path == "/ping":
                self._send(200)
                return
            if self.path not in ("/v1/chat/completions", "/invocations"):
                self._json(404, {"detail": "Not Found"})
                return
            req = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            if req.get("model") != served:
                self._json(404, {"object": "error", "message": f"The model `{req.get('model')}` does not exist.",
                                 "type": "NotFoundError", "code": 404})
                return
            words = ["stand-in", "reply", "from", served][: max(1, int(req.get("max_tokens") or 4))]
            created = int(time.time())
            if not req.get("stream"):
                self._json(200, {
                    "id": "chatcmpl-standin", "object": "chat.completion", "created": created, "model": served,
                    "choices": [{"index": 0, "finish_reason": "length",
                                 "message": {"role": "assistant", "content": " ".join(words)}}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": len(words), "total_tokens": len(words) + 1}})
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            for i, word in enumerate(words):
                chunk = {"id": "chatcmpl-standin", "object": "chat.completion.chunk", "created": created,
                         "model": served, "choices": [{"index": 0, "delta": {"content": (" " if i else "") + word},
                                                       "finish_reason": None}]}
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()
            self.wfile.write(b"data: [DONE]\n\n")
            self.close_connection = True

    return Handler


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)  # unknown flag -> usage error, exit 2, like vLLM
    model = args.model or args.model_tag
    if not model:
        print("error: a model is required (positional or --model)", file=sys.stderr)
        return 2
    served = (args.served_model_name or [model])[0]
    print(f"INFO vLLM STAND-IN (not vLLM) serving model={model} as {served!r}", flush=True)
    shown = {k: ("***" if k == "api_key" and v else v) for k, v in vars(args).items()}  # a secret
    print(f"INFO args: {shown!r}", flush=True)
    delay = float(os.environ.get("STANDIN_LOAD_DELAY", "0"))
    print(f"INFO Loading weights (stand-in delay {delay:g} s)", flush=True)
    time.sleep(delay)
    code = os.environ.get("STANDIN_EXIT_CODE")
    if code:
        print(f"ERROR stand-in load failure, exiting with {code}", flush=True)
        return int(code)
    server = ThreadingHTTPServer((args.host, args.port), make_handler(served, args.api_key, args.max_model_len or 4096))
    print(f"INFO:     Uvicorn running on http://{args.host}:{args.port} (Press CTRL+C to quit)", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
