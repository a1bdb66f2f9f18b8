"""Inputs of the peer flows for the sandbox fleet that is up, generated once before any timing.

    .venv/bin/python -m bench.peers.generate [--work DIR]      (or: python bench/peers/generate.py)

Per node, what `pyinfra -y inventories/sandbox.py deploys/qwen35.py` deploys there, as plain data an
operator would keep in host variables: the image (load from the archive or pull from the registry),
the hub, repo and revision of the model and the directory the unit mounts, the port, the directories
the container mounts, whether the host's jemalloc is needed, and the systemd unit's exact text.

The unit text comes from fleetserve's own builder, the function `fleetserve render` prints. Render
shows it for a Docker host with the host's jemalloc; a deploy adapts two things to the host (the
engine's path and daemon unit, here podman-as-docker with no docker.service, and the image's own
jemalloc when it brings one), so this passes those two, read from the node (one ssh call) and from
the sandbox's record of its images (fleet.json). nodestate.py then proves the text identical to what
fleetserve wrote.

Writes WORK/hosts.json (both flows read it), WORK/ansible/inventory.yml and
WORK/units/<host>/<unit>; WORK is 0700 (hosts.json holds the GB200 service's API key, a sandbox value).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jinja2
import yaml

ROOT = Path(__file__).resolve().parents[2]
PEERS = Path(__file__).resolve().parent
DEFAULT_WORK = Path("/tmp/fleetserve-bench-peers")
INVENTORY = "inventories/sandbox.py"
DEPLOY = "deploys/qwen35.py"
# Where the peers copy an image archive before `docker load` (removed after, as fleetserve does).
REMOTE_ARCHIVE_DIR = "/var/tmp"
# Both flows render the secrets file with this template; generation checks it gives fleetserve's text.
ENV_TEMPLATES = [PEERS / "ansible" / "templates" / "service.env.j2",
                 PEERS / "pyinfra_plain" / "templates" / "service.env.j2"]


def fleetserve_env() -> dict[str, str]:
    """The environment every tool runs in: the sandbox inventory without per-run overrides."""
    env = {k: v for k, v in os.environ.items() if k != "FLEETSERVE_SANDBOX_DATA"}
    env["FLEETSERVE_SANDBOX_OVERRIDES"] = "{}"
    return env


def node_engine(address: str) -> dict[str, str | None]:
    """The container engine's path and daemon unit on a node, read the way fleetserve's EngineInfo does."""
    from fleetserve_sandbox import nodes

    out = subprocess.run(nodes.ssh_argv(address, "command -v docker; systemctl cat docker.service >/dev/null 2>&1 "
                                                 "&& echo docker.service; true"),
                         capture_output=True, text=True, timeout=60, check=True).stdout.split()
    return {"path": out[0] if out else None, "unit": out[1] if len(out) > 1 else None}


def _image_jemalloc(fleet: dict, ref: str) -> str | None:
    """The stand-in image's own libjemalloc (fleet.json records it per image), None when it has none."""
    for image in fleet["images"].values():
        if ref in (image["ref"], image.get("registry_ref")):
            return image.get("jemalloc")
    raise SystemExit(f"image {ref} is not one of the sandbox's images (fleet.json)")


def _env_template_text(secrets: dict[str, str], unit: str) -> list[str]:
    """Both flows' secrets templates rendered for these values (jinja2, as Ansible and pyinfra do)."""
    texts = []
    for path in ENV_TEMPLATES:
        env = jinja2.Environment(keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
        texts.append(env.from_string(path.read_text()).render(vllm_secrets=secrets, vllm_unit=unit))
    return texts


def host_vars(fleet: dict, engines: dict[str, dict], work: Path) -> dict[str, dict[str, Any]]:
    """Per host: the variables both peer flows use (one qwen3.5 service per bench node)."""
    from fleetserve import hostpaths
    from fleetserve.builder import DEFAULT_ENGINE, created_mount_dirs, model_copy, service_files
    from fleetserve.loader import deploy_workloads, load_hosts
    from fleetserve.plan import plan_inventory

    with contextlib.chdir(ROOT):
        hosts = load_hosts(INVENTORY)
        plans = plan_inventory(hosts, deploy_workloads(DEPLOY), preview=True)
    addresses = {n["name"]: n["address"] for n in fleet["nodes"]}
    out: dict[str, dict[str, Any]] = {}
    for plan in plans:
        if len(plan.services) != 1:
            raise SystemExit(f"{plan.host}: {len(plan.services)} services; the peer flows deploy one per node")
        instance = plan.services[0]
        spec, model = instance.spec, instance.spec.model
        found = engines[plan.host]
        engine = dataclasses.replace(DEFAULT_ENGINE, path=found["path"] or DEFAULT_ENGINE.path,
                                     service_unit=found["unit"])
        in_image = _image_jemalloc(fleet, spec.image.ref) if plan.jemalloc_path else None
        files = service_files(instance, instance.member(plan.host), plan, engine, jemalloc_in_image=in_image)
        unit_name = Path(files.unit_path).name
        unit_src = work / "units" / plan.host / unit_name
        unit_src.parent.mkdir(parents=True, exist_ok=True)
        unit_src.write_text(files.unit_text)
        secrets = {"VLLM_API_KEY": plan.secrets[spec.api_key_key]} if spec.api_key_key else {}
        if files.env_text is not None:
            for text, template in zip(_env_template_text(secrets, unit_name), ENV_TEMPLATES):
                if text != files.env_text:
                    raise SystemExit(f"{template} does not render fleetserve's secrets file for {plan.host}:\n"
                                     f"{text!r}\n!=\n{files.env_text!r}")
        copy = model_copy(instance)
        archive = instance.image_archive if spec.image.source == "load" else None
        out[plan.host] = {
            "ansible_host": addresses[plan.host],
            # the host's libjemalloc2 only where the unit preloads the host's copy (the image has none)
            "host_jemalloc": plan.jemalloc_path if plan.jemalloc_path and not in_image else None,
            "jemalloc_package": plan.jemalloc_package,
            "jemalloc_library": plan.jemalloc_path,  # the distro's path, checked on every node by nodestate.py
            "vllm_service": spec.name,
            "vllm_unit": unit_name,
            "vllm_unit_path": files.unit_path,
            "vllm_unit_src": str(unit_src),
            "vllm_env_file": files.env_path,
            "vllm_env_dir": str(Path(files.env_path).parent) if files.env_path else None,
            "vllm_secrets": secrets,
            "vllm_container": hostpaths.container_name(spec.name),
            "vllm_port": spec.port,
            "vllm_image": spec.image.ref,
            "vllm_image_source": spec.image.source,
            "vllm_image_archive": archive,
            "vllm_image_archive_remote": f"{REMOTE_ARCHIVE_DIR}/{Path(archive).name}" if archive else None,
            # `vllm-serve`: the image's ENTRYPOINT is `vllm serve` (another program needs --entrypoint)
            "vllm_image_entrypoint": instance.entrypoint,
            "vllm_mount_dirs": created_mount_dirs(instance, plan),
            "model_hub": model.hub,
            "model_repo": model.repo_id,
            "model_revision": model.effective_revision,
            "model_include": list(model.include),
            "model_endpoint": model.endpoint,
            "model_dir": copy,
            # the unit's AssertPathExists; the peers write it once their download finished
            "model_marker": hostpaths.model_marker(copy),
        }
    return out


def generate(work: Path = DEFAULT_WORK, fleet_file: Path | None = None) -> dict[str, Any]:
    """Write the peer flows' inputs for the fleet that is up; returns hosts.json's content."""
    from fleetserve_sandbox import constants as C

    fleet = json.loads((fleet_file or C.FLEET_FILE).read_text())
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o700)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        engines = dict(zip([n["name"] for n in fleet["nodes"]],
                           pool.map(node_engine, [n["address"] for n in fleet["nodes"]])))
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(fleetserve_env())
    try:
        hosts = host_vars(fleet, engines, work)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    doc = {"layout": fleet["layout"], "ssh_key": fleet["ssh_key"], "known_hosts": fleet["known_hosts"],
           "ssh_user": fleet.get("ssh_user", "root"), "hosts": hosts}
    (work / "hosts.json").write_text(json.dumps(doc, indent=1) + "\n")
    write_ansible_inventory(doc, work / "ansible" / "inventory.yml")
    return doc


def write_ansible_inventory(doc: dict[str, Any], path: Path) -> None:
    """A YAML inventory: every node with its variables; the fleet's key and pinned known_hosts."""
    ssh_args = (f"-o UserKnownHostsFile={doc['known_hosts']} -o GlobalKnownHostsFile=/dev/null "
                f"-o StrictHostKeyChecking=yes -o IdentitiesOnly=yes")
    inventory = {"all": {
        "vars": {"ansible_user": doc["ssh_user"], "ansible_ssh_private_key_file": doc["ssh_key"],
                 "ansible_ssh_common_args": ssh_args},
        "hosts": doc["hosts"],
    }}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# Generated by bench/peers/generate.py from the sandbox's fleet.json: do not edit.\n"
                    + yaml.safe_dump(inventory, sort_keys=False, width=200))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    args = parser.parse_args()
    doc = generate(args.work)
    print(f"{len(doc['hosts'])} hosts -> {args.work}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
