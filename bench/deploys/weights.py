"""The weights step alone, for bench/cache_modes.py: the host lock, the helper scripts, the serving
image, then the model role (in the cache mode host data `model_cache` names). No service is started.

    FLEETSERVE_BENCH_STEP=prepare pyinfra -y inventories/sandbox.py bench/deploys/weights.py   # image + helpers
    pyinfra -y inventories/sandbox.py bench/deploys/weights.py --data model_cache=peer          # the weights
"""

import os

from pyinfra import host

from fleetserve import hostlock, hostpaths
from fleetserve.operations import host as host_ops
from fleetserve.roles.common import host_plan
from fleetserve.roles.image import image
from fleetserve.roles.model import model
from fleetserve.roles.serve import helper_files

plan = host_plan(["qwen3.5"])
host_ops.run_lock(name="One fleetserve run on this host", problem=hostlock.acquire(host, plan.data.lock_wait_s))
if os.environ.get("FLEETSERVE_BENCH_STEP") == "prepare":
    host_ops.files_present(name=f"Helper scripts in {hostpaths.LIB_DIR}", directory=hostpaths.LIB_DIR,
                           files=helper_files())
    image(plan)
else:
    model(plan)
