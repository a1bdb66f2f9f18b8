"""fleetserve: latency and throughput of a service's OpenAI API, measured on its own host (stdlib only).

argv: PORT ENV_FILE REQUESTS CONCURRENCY [MAX_TOKENS]. What the 910B4 verification write-up measured by
hand, against http://127.0.0.1:PORT: one completion of "The future of artificial intelligence is" with
MAX_TOKENS (default 50) new tokens at temperature 0, REQUESTS times one after the other (latency: p50, p99, mean, min,
max in ms), then max(REQUESTS, CONCURRENCY) of them through CONCURRENCY at once (requests/s and
completion tokens/s over the wall time of that phase). The model is the first /v1/models lists. The
API key comes from ENV_FILE (the unit's EnvironmentFile, read as verify_api.py reads it) or, inside
the container, from VLLM_API_KEY: never from the command line. Prints one JSON document, also when
the API cannot be asked (`error`); failed requests are counted, not timed.
"""

import json
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from verify_api import api_key

PROMPT = "The future of artificial intelligence is"
TIMEOUT_S = 120


def percentile(values, q):
    """The q-th percentile (0-100) by linear interpolation between the closest ranks, as numpy's
    default and the write-up's P50 (the mean of the two middle values of an even count)."""
    ordered = sorted(values)
    if not ordered:
        return None
    position = (len(ordered) - 1) * q / 100
    below = int(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def latency_summary(latencies_ms):
    if not latencies_ms:
        return None
    return {"p50": round(percentile(latencies_ms, 50), 1), "p99": round(percentile(latencies_ms, 99), 1),
            "mean": round(sum(latencies_ms) / len(latencies_ms), 1), "min": round(min(latencies_ms), 1),
            "max": round(max(latencies_ms), 1)}


class Api:
    def __init__(self, port, key):
        self.base = f"http://127.0.0.1:{port}"
        self.headers = {"Content-Type": "application/json"}
        if key:
            self.headers["Authorization"] = "Bearer " + key

    def call(self, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, headers=self.headers)
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"{'POST' if body else 'GET'} {path}: HTTP {exc.code}: {exc.read()[:200]!r}") from None
        except (OSError, ValueError) as exc:
            raise RuntimeError(f"{'POST' if body else 'GET'} {path}: {exc}") from None


def one_completion(api, model, max_tokens):
    """(seconds, completion tokens) of one request."""
    start = time.perf_counter()
    answer = api.call("/v1/completions", {"model": model, "prompt": PROMPT, "max_tokens": max_tokens,
                                          "temperature": 0})
    seconds = time.perf_counter() - start
    return seconds, int((answer.get("usage") or {}).get("completion_tokens") or 0)


def measure(api, model, requests, concurrency, max_tokens):
    errors = []

    def attempt(_):
        try:
            return one_completion(api, model, max_tokens)
        except RuntimeError as exc:
            errors.append(str(exc))
            return None

    sequential = [r for r in map(attempt, range(requests)) if r]
    total = max(requests, concurrency)
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        together = [r for r in pool.map(attempt, range(total)) if r]
    wall = time.perf_counter() - start
    return {
        "model": model, "prompt": PROMPT, "max_tokens": max_tokens,
        "latency_ms": latency_summary([seconds * 1000 for seconds, _ in sequential]),
        "sequential": {"requests": requests, "ok": len(sequential)},
        "throughput": {"concurrency": concurrency, "requests": total, "ok": len(together),
                       "seconds": round(wall, 3),
                       "requests_per_s": round(len(together) / wall, 2) if wall > 0 else None,
                       "completion_tokens_per_s": round(sum(t for _, t in together) / wall, 1) if wall > 0 else None},
        "errors": len(errors), "error": errors[0] if errors else None,
    }


def main(argv):
    port, env_file, requests, concurrency = int(argv[0]), argv[1], int(argv[2]), int(argv[3])
    max_tokens = int(argv[4]) if len(argv) > 4 else 50
    api = Api(port, api_key(env_file or None))
    try:
        models = [m.get("id") for m in api.call("/v1/models").get("data", [])]
    except RuntimeError as exc:
        print(json.dumps({"error": str(exc)}))
        return
    if not models:
        print(json.dumps({"error": "GET /v1/models lists no model"}))
        return
    print(json.dumps(measure(api, models[0], requests, concurrency, max_tokens)))


if __name__ == "__main__":
    main(sys.argv[1:])
