"""fleetserve: OpenAI-API checks run inside the serving container (stdlib only).

argv: PORT MODEL. Reads VLLM_API_KEY from the container's environment when set. Exits non-zero with
what was asked and what came back when an answer is missing or wrong.
"""

import json
import os
import sys
import urllib.error
import urllib.request

port, model = int(sys.argv[1]), sys.argv[2]
base = f"http://127.0.0.1:{port}"
headers = {"Content-Type": "application/json"}
if os.environ.get("VLLM_API_KEY"):
    headers["Authorization"] = "Bearer " + os.environ["VLLM_API_KEY"]


def call(path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        sys.exit(f"{'POST' if body else 'GET'} {path}: HTTP {exc.code}: {exc.read()[:500]!r}")
    except (OSError, ValueError) as exc:
        sys.exit(f"{'POST' if body else 'GET'} {path}: {exc}")


served = [m.get("id") for m in call("/v1/models").get("data", [])]
if model not in served:
    sys.exit(f"GET /v1/models lists {served}, not {model!r}")
completion = call("/v1/completions", {"model": model, "prompt": "The future of artificial intelligence is",
                                      "max_tokens": 16, "temperature": 0})
text = (completion.get("choices") or [{}])[0].get("text")
if not text:
    sys.exit(f"POST /v1/completions returned no text: {json.dumps(completion)[:500]}")
chat = call("/v1/chat/completions", {"model": model, "max_tokens": 32, "temperature": 0,
                                     "messages": [{"role": "user", "content": "What is the capital of France?"}]})
answer = ((chat.get("choices") or [{}])[0].get("message") or {}).get("content")
if not answer:
    sys.exit(f"POST /v1/chat/completions returned no answer: {json.dumps(chat)[:500]}")
print(json.dumps({"models": served, "completion": text, "chat": answer, "usage": chat.get("usage")}))
