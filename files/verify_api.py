"""fleetserve: OpenAI-API checks run inside the serving container (stdlib only).

argv: PORT MODEL [ENV_FILE [SERVE_PATH [ADDRESS]]]. With SERVE_PATH, /v1/models must list MODEL with that
model path as its root (the release's weights, not another server's). ADDRESS (default 127.0.0.1) is
where the API answers: a group's head, when a headless member checks the group it joined. The API key comes from ENV_FILE (the unit's systemd EnvironmentFile,
read here so it is never on a command line) or, inside the container, from VLLM_API_KEY. Exits
non-zero with what was asked and what came back when an answer is missing or wrong.
"""

import json
import os
import sys
import urllib.error
import urllib.request

def env_file_value(raw):
    """A value as systemd's EnvironmentFile parser reads it: in double quotes, a backslash before
    one of " \\ ` $ stands for that character; elsewhere backslashes are kept."""
    if len(raw) < 2 or raw[0] != '"' or raw[-1] != '"':
        return raw
    inner, out, i = raw[1:-1], [], 0
    while i < len(inner):
        if inner[i] == "\\" and i + 1 < len(inner) and inner[i + 1] in '"\\`$':
            out.append(inner[i + 1])
            i += 2
        else:
            out.append(inner[i])
            i += 1
    return "".join(out)


def api_key(env_file):
    if env_file and os.path.isfile(env_file):
        with open(env_file, encoding="utf-8") as handle:
            for line in handle:
                name, sep, value = line.strip().partition("=")
                if sep and name == "VLLM_API_KEY":
                    return env_file_value(value)
    return os.environ.get("VLLM_API_KEY")


def main(argv):
    port, model = int(argv[0]), argv[1]
    address = argv[4] if len(argv) > 4 and argv[4] else "127.0.0.1"
    base = f"http://{'[' + address + ']' if ':' in address else address}:{port}"
    headers = {"Content-Type": "application/json"}
    key = api_key(argv[2] if len(argv) > 2 and argv[2] else None)
    if key:
        headers["Authorization"] = "Bearer " + key

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

    cards = call("/v1/models").get("data", [])
    served = [m.get("id") for m in cards]
    if model not in served:
        sys.exit(f"GET /v1/models lists {served}, not {model!r}")
    expected_root = argv[3] if len(argv) > 3 else ""
    root = next(m.get("root") for m in cards if m.get("id") == model)
    if expected_root and root != expected_root:
        sys.exit(f"GET /v1/models: {model!r} serves {root!r}, not this release's {expected_root!r}")
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


if __name__ == "__main__":
    main(sys.argv[1:])
