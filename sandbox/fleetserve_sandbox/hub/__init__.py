"""The sandbox's local model hub: enough of the Hugging Face Hub and ModelScope APIs for the real download clients.

`hf download`, `modelscope download` and fleetserve's own verifier fetch models from it.

Repos live on disk under DATA_DIR (`repos.publish_dir`); every repo has one commit (a stable 40-hex id derived from
its content) reachable through its branch names (`main` and `master` by default) and through the commit id itself.
The server counts requests and bytes per client IP, in all and per (repo, file), and can inject faults (mid-file
connection drops, corrupted bytes, slow bodies, error statuses) so tests can watch how the clients cope.

    exchange.py   one HTTP exchange: parse, route by path, answer, count, log
    hf_api.py     /api/models/..., /<repo>/resolve/..., /_lfs/...      (Hugging Face)
    ms_api.py     /api/v1/models/...                                     (ModelScope)
    files.py      file bodies for both: Range, counters, faults applied to the bytes
    faults.py     the fault registry and what each mode does to a body
    control.py    /_sandbox/{health,stats,reset,repos,faults}
    traffic.py    the counters;  repos.py  repos on disk;  server.py  HubServer;  __main__.py  the program

Run it:   python -m fleetserve_sandbox.hub --bind 127.0.0.1 --port 8090 --data DIR [--seed-tiny-model]
In-process (tests):  hub = HubServer(data_dir, "127.0.0.1", 0).start(); ...; hub.stop()

See sandbox/docs/hub.md for the endpoints, the client environment variables and the /_sandbox control API.
Standard library only.
"""

from fleetserve_sandbox.hub.faults import FAULT_MODES, corrupted_bytes
from fleetserve_sandbox.hub.repos import TINY_REPO_ID, Repo, RepoFile, RepoStore, publish_dir, seed_tiny_model
from fleetserve_sandbox.hub.server import HubServer
from fleetserve_sandbox.hub.traffic import client_counters, file_counters

__all__ = [
    "FAULT_MODES",
    "TINY_REPO_ID",
    "HubServer",
    "Repo",
    "RepoFile",
    "RepoStore",
    "client_counters",
    "corrupted_bytes",
    "file_counters",
    "publish_dir",
    "seed_tiny_model",
]
