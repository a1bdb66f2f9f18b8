"""fleetserve's qwen3.5 deploy on the sandbox, written by hand with pyinfra's stock operations and
facts only (what an operator would write without fleetserve). Variables: inventory.py.

    cd bench/peers/pyinfra_plain && pyinfra -y inventory.py deploy.py
"""

import shlex

from pyinfra import host
from pyinfra.facts.docker import DockerImage
from pyinfra.facts.files import File
from pyinfra.operations import apt, docker, files, server, systemd
from pyinfra.operations.util import any_changed

data = host.data

# Only where the unit preloads the host's libjemalloc: the Ascend image brings its own.
if data.host_jemalloc:
    apt.packages(name="jemalloc from the distro", packages=[data.jemalloc_package], update=True, cache_time=3600,
                 no_recommends=True)

# The image cannot appear during the run, so a fact read before it decides (docker.image only pulls).
if data.vllm_image_source == "load":
    if not host.get_fact(DockerImage, object_id=data.vllm_image):
        archive = data.vllm_image_archive_remote
        files.put(name="Copy the image archive", src=data.vllm_image_archive, dest=archive, mode="600")
        server.shell(name="docker load, then remove the archive",
                     commands=[f"docker load -i {shlex.quote(archive)} && rm -f {shlex.quote(archive)}"])
else:
    docker.image(name="Serving image from the registry", image=data.vllm_image, present=True)

for directory in host.loop([*data.vllm_mount_dirs, data.model_dir]):
    files.directory(name="Directories the container mounts, and the model's", path=directory, mode="755")

# The hub's own client, inside the serving image; the marker (the unit's AssertPathExists) is written
# only after a complete download, and its presence skips the download on the next run.
if not host.get_fact(File, path=data.model_marker):
    client = "hf" if data.model_hub == "hf" else "modelscope"
    if data.model_hub == "hf":
        env = ["-e", f"HF_ENDPOINT={data.model_endpoint}", "-e", "HF_HUB_DISABLE_TELEMETRY=1"]
        args = [data.model_repo, "--local-dir", data.model_dir]
    else:
        env = ["-e", f"MODELSCOPE_ENDPOINT={data.model_endpoint}", "-e", "MODELSCOPE_DOWNLOAD_INTRA_CLOUD=false"]
        args = ["--model", data.model_repo, "--local_dir", data.model_dir]
    args += ["--revision", data.model_revision]
    for pattern in data.model_include:
        args += ["--include", pattern]
    image = (["--entrypoint", client, data.vllm_image] if data.vllm_image_entrypoint == "vllm-serve"
             else [data.vllm_image, client])
    run = ["docker", "run", "--rm", "--net=host", "-v", f"{data.model_dir}:{data.model_dir}", *env, *image,
           "download", *args]
    server.shell(name="Model from the hub",
                 commands=[f"{shlex.join(run)} && touch {shlex.quote(data.model_marker)}"])

unit = files.put(name="systemd unit", src=data.vllm_unit_src, dest=data.vllm_unit_path, mode="644")
changed = [unit]
if data.vllm_env_file:
    files.directory(name="Secrets directory", path=data.vllm_env_dir, mode="700")
    changed.append(files.template(name="Secrets file", src="templates/service.env.j2", dest=data.vllm_env_file,
                                  mode="600", vllm_unit=data.vllm_unit, vllm_secrets=data.vllm_secrets))

systemd.daemon_reload(name="systemd reload", _if=any_changed(*changed))
systemd.service(name="Restart vLLM on changes", service=data.vllm_unit, restarted=True, _if=any_changed(*changed))
systemd.service(name="vLLM started and enabled", service=data.vllm_unit, running=True, enabled=True)

server.shell(name="Wait for /health",
             commands=[f"curl -fsS -o /dev/null http://127.0.0.1:{data.vllm_port}/health"],
             _retries=120, _retry_delay=1)
