"""One writer of container engine commands: the unit's `docker run` and every program fleetserve runs
inside a serving image (what it carries, the hub client, the verifier, vLLM's own checks, jemalloc).

How an image is entered is its ``entrypoint``: vllm-ascend images end with ``CMD bash``, so the
program follows the image (``IMAGE vllm serve ...``, ``IMAGE hf download ...``); vllm/vllm-openai has
``ENTRYPOINT ["vllm", "serve"]``, so the unit gives only MODEL and flags, and any other program goes
through ``--entrypoint``. The engine is the host's ``docker`` (Docker, or podman answering as it):
the unit names its path (systemd runs no shell), commands run through the shell name it as the
shell finds it (``hostpaths.ENGINE``).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from fleetserve import hostpaths
from fleetserve.schema.hardware import BindMount, Entrypoint


@dataclass(frozen=True)
class Container:
    """How one container runs: its image and everything `docker run` is told besides the command."""

    image: str
    entrypoint: Entrypoint
    name: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    network: str | None = None  # "host": the host's network; "bridge": the engine's, with `ports` published
    ports: tuple[int, ...] = ()
    shm_size: str | None = None
    devices: tuple[str, ...] = ()  # the hardware way's arguments (fleetserve.hardware.devices)
    mounts: tuple[BindMount, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    env_names: tuple[str, ...] = ()  # passed by name: the value is the engine's own (the unit's EnvironmentFile)
    env_file: str | None = None  # a 0600 file of NAME=value lines (a hub token)
    id_file: str | None = None  # where the engine writes the container's id when it creates it
    remove: bool = True


def _options(container: Container) -> list[str]:
    argv = ["--rm"] if container.remove else []
    if container.name:
        argv += ["--name", container.name]
    if container.id_file:
        argv += ["--cidfile", container.id_file]
    for key, value in container.labels:
        argv += ["--label", f"{key}={value}"]
    if container.network == "host":
        argv.append("--net=host")
    for port in container.ports:
        argv += ["-p", f"{port}:{port}"]
    if container.shm_size:
        argv.append(f"--shm-size={container.shm_size}")
    argv += container.devices
    for mount in container.mounts:
        argv += ["-v", mount.docker_arg()]
    for key, value in container.env:
        argv += ["-e", f"{key}={value}"]
    for key in container.env_names:
        argv += ["-e", key]
    if container.env_file:
        argv += ["--env-file", container.env_file]
    return argv


def serve_argv(container: Container, serve_args: tuple[str, ...] | list[str], engine: str = hostpaths.ENGINE) -> list[str]:
    """`engine run ... IMAGE [vllm serve] MODEL flags`: vLLM serving, the image's own way."""
    head = [engine, "run", *_options(container), container.image]
    return head + (["vllm", "serve"] if container.entrypoint == "shell" else []) + list(serve_args)


def program_argv(container: Container, program: str, args: tuple[str, ...] | list[str] = (),
                 engine: str = hostpaths.ENGINE) -> list[str]:
    """`engine run ... IMAGE program args`: another program of the image, past its ENTRYPOINT if it has one."""
    if container.entrypoint == "vllm-serve":
        return [engine, "run", *_options(container), "--entrypoint", program, container.image, *args]
    return [engine, "run", *_options(container), container.image, program, *args]


def shell_words(argv: list[str]) -> str:
    """An argv as one shell command line (each word quoted as it needs)."""
    return " ".join(shlex.quote(word) for word in argv)


def looked_into(image: str, entrypoint: Entrypoint, *, mounts: tuple[BindMount, ...] = (),
                env: tuple[tuple[str, str], ...] = ()) -> Container:
    """A throwaway container to look inside an image: removed after, with the hub clients told to stay
    offline so a look never downloads. (The engine's default network: an engine nested in a container,
    as on some managed hosts and in the sandbox's nodes, cannot always create a namespace of its own, and
    the offline switch already keeps it local.)"""
    return Container(image=image, entrypoint=entrypoint, mounts=mounts, env=(("HF_HUB_OFFLINE", "1"), *env))
