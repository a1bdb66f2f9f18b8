"""Simulated accelerators for sandbox nodes.

Each node kind has a hardware preset; at bring-up the node gets a state file
`/etc/fleetserve-sim/hardware.json` (schema in sandbox/docs/fleet.md) plus everything a real host has
around the accelerators: the simulated `npu-smi` / `hccn_tool` / `nvidia-smi` programs (which read the
state file on every call, so a test can flip a chip's health over ssh), the driver, firmware, dcmi and
CANN-toolkit files the serving unit mounts or checks, device nodes (`/dev/davinci*`, `/dev/nvidia*`,
char 1:3 like /dev/null, made at every boot by a oneshot unit because nspawn gives each boot a fresh
/dev) and, on NVIDIA nodes, both ways Docker hosts give GPUs to containers: a CDI spec (`docker run
--device nvidia.com/gpu=0`) and an `nvidia` OCI runtime registered with podman plus a `docker` that
understands `--gpus` (`docker run --runtime nvidia --gpus '"device=0,1"'`, sim/docker and
sim/nvidia-container-runtime).
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from pathlib import Path

SIM_DIR = Path(__file__).resolve().parent / "sim"
STATE_PATH = "/etc/fleetserve-sim/hardware.json"  # inside the node
SCHEMA = "fleetserve-sim/1"
HEALTH_VALUES = ("OK", "Warning", "Alarm", "Critical")
DEVICE_MAJOR_MINOR = "1:3"  # same numbers as /dev/null: reads EOF, writes vanish

# Bus ids as the real machines report them (A2: issue vllm-ascend #1130 layout; A3: #2534).
_A2_BUS = ["C1", "C2", "81", "82", "01", "02", "41", "42"]
_A3_BUS = ["9D", "9F", "99", "9B", "B9", "BB", "B5", "B7", "1D", "1F", "19", "1B", "39", "3B", "35", "37"]
_GB200_BUS = ["00000008:01:00.0", "00000009:01:00.0", "00000018:01:00.0", "00000019:01:00.0"]
# an HGX H100 baseboard (tests/fixtures/nvidia-smi/h100x8.csv)
_H100_BUS = ["00000000:18:00.0", "00000000:2A:00.0", "00000000:3A:00.0", "00000000:5D:00.0",
             "00000000:9A:00.0", "00000000:AB:00.0", "00000000:BA:00.0", "00000000:DB:00.0"]


@dataclass(frozen=True)
class Kind:
    """A node kind: what accelerator hardware the node pretends to have."""

    name: str
    vendor: str  # "ascend" | "nvidia"
    description: str
    smi_format: str = ""  # npu-smi table layout: "a2" | "a3"
    chip_name: str = ""  # name column of `npu-smi info` / nvidia-smi
    map_name: str = ""  # Chip Name column of `npu-smi info -m`
    npu_ids: tuple[int, ...] = ()  # NPU (card) ids as npu-smi numbers them
    chips_per_npu: int = 1
    hbm_mb: int = 0
    driver_version: str = ""
    firmware_version: str = ""
    toolkit_version: str | None = None  # CANN toolkit on the host; None = driver-only host
    product: str = ""
    pci_device_id: str = ""
    gpu_count: int = 0
    cuda_version: str = ""
    bus_ids: tuple[str, ...] = ()  # NVIDIA: pci.bus_id per GPU
    compute_cap: str = ""  # NVIDIA: nvidia-smi's compute_cap
    power_cap_w: int = 0  # NVIDIA: power.limit

    @property
    def device_count(self) -> int:
        return self.gpu_count if self.vendor == "nvidia" else len(self.npu_ids) * self.chips_per_npu

    @property
    def device_ids(self) -> list[int]:
        """Accelerator ids as the serving side counts them: davinci numbers (chip logic ids) on
        Ascend -- 0..15 on A3, 3 alone on the seed-001 910B4 -- and GPU indexes on NVIDIA."""
        if self.vendor == "nvidia":
            return list(range(self.gpu_count))
        return [n * self.chips_per_npu + c for n in self.npu_ids for c in range(self.chips_per_npu)]


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind(
            name="atlas-800-a3",
            vendor="ascend",
            description="Atlas 800 A3: 8 NPUs x 2 dies (16 x Ascend910, 64 GB HBM each)",
            smi_format="a3",
            chip_name="Ascend910",
            map_name="Ascend910",
            npu_ids=tuple(range(8)),
            chips_per_npu=2,
            hbm_mb=65536,
            driver_version="25.5.1",
            firmware_version="7.8.0.6.201",
            toolkit_version="8.5.1",
            product="Atlas 800 A3",
            pci_device_id="0xD803",
        ),
        Kind(
            name="atlas-800-a2",
            vendor="ascend",
            description="Atlas 800T A2: 8 x 910B3 (64 GB HBM each)",
            smi_format="a2",
            chip_name="910B3",
            map_name="Ascend 910B3",
            npu_ids=tuple(range(8)),
            chips_per_npu=1,
            hbm_mb=65536,
            driver_version="24.1.rc2",
            firmware_version="7.5.0.1.129",
            toolkit_version=None,  # driver-only host: CANN lives in the serving image
            product="Atlas 800T A2",
            pci_device_id="0xD802",
        ),
        Kind(
            name="ascend-910b4",
            vendor="ascend",
            description="one 910B4 (32 GB HBM) visible as NPU 3 (seed 001)",
            smi_format="a2",
            chip_name="910B4",
            map_name="Ascend 910B4",
            npu_ids=(3,),
            chips_per_npu=1,
            hbm_mb=32768,
            driver_version="25.5.1",
            firmware_version="7.8.0.6.201",
            toolkit_version="8.5.1",
            product="Atlas 300T A2",
            pci_device_id="0xD802",
        ),
        Kind(
            name="nvidia-gb200x4",
            vendor="nvidia",
            description="4 x NVIDIA GB200 (189471 MiB each, seed 002)",
            chip_name="NVIDIA GB200",
            gpu_count=4,
            hbm_mb=189471,
            driver_version="580.82.07",
            cuda_version="13.0",
            product="NVIDIA GB200 NVL4",
            bus_ids=tuple(_GB200_BUS),
            compute_cap="10.0",
            power_cap_w=1200,
        ),
        Kind(
            name="nvidia-h100x8",
            vendor="nvidia",
            description="8 x NVIDIA H100 80GB HBM3 (81559 MiB each), given to containers with --gpus",
            chip_name="NVIDIA H100 80GB HBM3",
            gpu_count=8,
            hbm_mb=81559,
            driver_version="580.82.07",
            cuda_version="13.0",
            product="NVIDIA HGX H100 8-GPU",
            bus_ids=tuple(_H100_BUS),
            compute_cap="9.0",
            power_cap_w=700,
        ),
    )
}


def kind(name: str) -> Kind:
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"unknown node kind {name!r} (known: {', '.join(KINDS)})") from None


@dataclass(frozen=True)
class Fault:
    """Preset a chip (Ascend: NPU id + chip id; NVIDIA: GPU index as npu) to a non-OK health."""

    npu: int
    chip: int = 0
    health: str = "Alarm"

    def __post_init__(self) -> None:
        if self.health not in HEALTH_VALUES:
            raise ValueError(f"health must be one of {HEALTH_VALUES}, not {self.health!r}")


HCCN_LINK_VALUES = ("UP", "DOWN")
HCCN_HEALTH_VALUES = ("Success", "Socket fail", "Receive timeout", "Unreachable", "Detect ip set", "Init")


@dataclass(frozen=True)
class HccnFault:
    """Preset an Ascend node's NPU NICs as `hccn_tool` reports them: one device (chip logic id) or all
    (`device=None`). `subnet` moves the NPU addresses to another /16 (the peers keep 192.168.x.y), so
    cross-node pings fail: a misconfigured NIC. `tls` sets the TLS switch (peers: 0)."""

    device: int | None = None
    link: str | None = None  # "DOWN"
    net_health: str | None = None  # e.g. "Socket fail"
    subnet: str | None = None  # first two octets, e.g. "192.169"
    tls: int | None = None

    def __post_init__(self) -> None:
        if self.link is not None and self.link not in HCCN_LINK_VALUES:
            raise ValueError(f"link must be one of {HCCN_LINK_VALUES}, not {self.link!r}")
        if self.net_health is not None and self.net_health not in HCCN_HEALTH_VALUES:
            raise ValueError(f"net_health must be one of {HCCN_HEALTH_VALUES}, not {self.net_health!r}")
        if self.subnet is not None:
            parts = self.subnet.split(".")
            if len(parts) != 2 or not all(p.isdigit() and 0 <= int(p) <= 255 for p in parts):
                raise ValueError(f"subnet must be two octets like '192.169', not {self.subnet!r}")
        if self.tls not in (None, 0, 1):
            raise ValueError(f"tls must be 0 or 1, not {self.tls!r}")

    def describe(self) -> str:
        what = [f"link {self.link}" if self.link else "", f"net_health {self.net_health}" if self.net_health else "",
                f"NPU IPs in {self.subnet}.0.0/16" if self.subnet else "", f"TLS switch {self.tls}" if self.tls is not None else ""]
        where = "every NPU NIC" if self.device is None else f"NPU NIC of device {self.device}"
        return f"{where}: {', '.join(w for w in what if w) or 'no change'}"


def set_hccn(state: dict, fault: HccnFault) -> dict:
    """Apply an HccnFault to a state dict (Ascend only); returns the state."""
    if state["vendor"] != "ascend":
        raise ValueError(f"{state['node']}: hccn faults need an Ascend node, not {state['kind']}")
    chips = [c for n in state["npus"] for c in n["chips"] if fault.device is None or c["logic_id"] == fault.device]
    if not chips:
        raise ValueError(f"{state['node']}: no NPU device {fault.device}")
    for c in chips:
        h = c["hccn"]
        if fault.link is not None:
            h["link"] = fault.link
        if fault.net_health is not None:
            h["net_health"] = fault.net_health
        if fault.subnet is not None:
            for key in ("ip", "gateway", "netdetect"):
                h[key] = fault.subnet + "." + ".".join(h[key].split(".")[2:])
        if fault.tls is not None:
            h["tls"] = fault.tls
    return state


def arch() -> str:
    """The nodes' machine architecture (they share the host kernel)."""
    return platform.machine() or "x86_64"


# --- state ----------------------------------------------------------------------------------


def _ascend_state(k: Kind, node_index: int) -> dict:
    npus = []
    for card_pos, npu_id in enumerate(k.npu_ids):
        chips = []
        for c in range(k.chips_per_npu):
            logic = npu_id * k.chips_per_npu + c
            if k.smi_format == "a3":
                power = 178.5 + card_pos if c == 0 else None  # A3: power shown once per NPU
                temp = 36
                bus = f"0000:{_A3_BUS[logic % len(_A3_BUS)]}:00.0"
                hbm_used = 3400 + logic
            else:
                power = round(90.5 + card_pos, 1)
                temp = 40 + card_pos % 3
                bus = f"0000:{_A2_BUS[npu_id % len(_A2_BUS)]}:00.0"
                hbm_used = 3379 + card_pos
            chips.append(
                {
                    "chip": c,
                    "logic_id": logic,
                    "phy_id": logic,
                    "name": k.chip_name,
                    "map_name": k.map_name,
                    "device": f"/dev/davinci{logic}",
                    "health": "OK",
                    "power_w": power,
                    "temp_c": temp,
                    "bus_id": bus,
                    "aicore_pct": 0,
                    "memory_used_mb": 0,
                    "memory_total_mb": 0,
                    "hugepages_used": 0,
                    "hugepages_total": 0,
                    "hbm_used_mb": hbm_used,
                    "hbm_total_mb": k.hbm_mb,
                    "hccn": {
                        "ip": f"192.168.{logic}.{10 + node_index}",
                        "netmask": "255.255.255.0",
                        "gateway": f"192.168.{logic}.1",
                        "netdetect": f"192.168.{logic}.1",
                        "link": "UP",
                        "net_health": "Success",
                        "tls": 0,
                    },
                }
            )
        npus.append(
            {
                "id": npu_id,
                "product_name": k.product,
                "serial": f"FSSIM{node_index:03d}{npu_id:02d}",
                "board_id": "0x02",
                "pci_device_id": k.pci_device_id,
                "chips": chips,
            }
        )
    return {
        "npu_smi_format": k.smi_format,
        "npu_smi_version": k.driver_version,
        "firmware_version": k.firmware_version,
        "compatibility": "OK",
        "dcmi_error": None,
        "npus": npus,
        "processes": [],
    }


def _nvidia_state(k: Kind, node_index: int) -> dict:
    if k.name == "nvidia-gb200x4":
        seed = [(42, 395, 175750), (42, 369, 175366), (41, 354, 175366), (42, 375, 179133)]  # seed 002
    else:  # an idle board: nothing loaded (memory.used 0, as the h100x8 fixture)
        seed = [(33, 70, 0), (32, 69, 0), (34, 71, 0), (33, 68, 0)]
    gpus = []
    for i in range(k.gpu_count):
        temp, power, used = seed[i % len(seed)]
        gpus.append(
            {
                "index": i,
                "name": k.chip_name,
                "uuid": f"GPU-f5{node_index:06x}-0000-4000-8000-{i:012x}",
                "bus_id": k.bus_ids[i % len(k.bus_ids)],
                "device": f"/dev/nvidia{i}",
                "persistence": "On",
                "display_active": "Off",
                "ecc_uncorrected": 0,
                "fan": "N/A",
                "temp_c": temp,
                "perf": "P0",
                "power_w": power,
                "power_cap_w": k.power_cap_w,
                "compute_cap": k.compute_cap,
                "memory_used_mib": used,
                "memory_total_mib": k.hbm_mb,
                "util_pct": 0,
                "compute_mode": "Default",
                "health": "OK",
            }
        )
    return {
        "nvidia_smi_version": k.driver_version,
        "cuda_version": k.cuda_version,
        "gpus": gpus,
        "processes": [],
    }


def build_state(
    kind_name: str,
    node_name: str,
    node_index: int,
    *,
    toolkit: str | None | bool = True,
    driver_version: str | None = None,
    faults: tuple[Fault, ...] | list[Fault] = (),
    idle: bool = False,
    hccn_faults: tuple[HccnFault, ...] | list[HccnFault] = (),
) -> dict:
    """The hardware.json content for one node.

    toolkit: True = the kind's default CANN toolkit, None/False = none, a string = that version.
    idle: clear seed-snapshot load (the 910B4 seed shows a vLLM process holding 17790 MB; the GB200
    seed shows ~175 GB in use) so the node looks freshly booted."""
    k = kind(kind_name)
    state: dict = {
        "schema": SCHEMA,
        "node": node_name,
        "kind": k.name,
        "vendor": k.vendor,
        "product": k.product,
        "arch": arch(),
        "driver_version": driver_version or k.driver_version,
    }
    if k.vendor == "ascend":
        state.update(_ascend_state(k, node_index))
        if toolkit is True:
            state["toolkit_version"] = k.toolkit_version
        else:
            state["toolkit_version"] = toolkit or None
        if k.name == "ascend-910b4" and not idle:
            # seed 001 exactly: npu-smi 25.5.1, power 91.9 W, 40 C, bus 0000:02:00.0, a vLLM engine
            chip = state["npus"][0]["chips"][0]
            chip.update(power_w=91.9, temp_c=40, bus_id="0000:02:00.0", hbm_used_mb=17790)
            state["processes"] = [{"npu": 3, "chip": 0, "pid": 2756, "name": "VLLMEngineCor", "memory_mb": 14973}]
        elif k.name == "ascend-910b4":
            chip = state["npus"][0]["chips"][0]
            chip.update(power_w=91.9, temp_c=40, bus_id="0000:02:00.0", hbm_used_mb=2816)
    else:
        state.update(_nvidia_state(k, node_index))
        state["toolkit_version"] = None
        if idle:
            for g in state["gpus"]:
                g.update(memory_used_mib=0, power_w=120)
    for f in faults:
        set_health(state, f.npu, f.chip, f.health)
    for h in hccn_faults:
        set_hccn(state, h)
    return state


def set_health(state: dict, npu: int, chip: int, health: str) -> dict:
    """Set one chip's (or GPU's) health in a state dict; returns the state."""
    if health not in HEALTH_VALUES:
        raise ValueError(f"health must be one of {HEALTH_VALUES}, not {health!r}")
    if state["vendor"] == "nvidia":
        for g in state["gpus"]:
            if g["index"] == npu:
                g["health"] = health
                g["ecc_uncorrected"] = 0 if health == "OK" else 1
                return state
        raise ValueError(f"no GPU {npu} on this node")
    for n in state["npus"]:
        if n["id"] == npu:
            for c in n["chips"]:
                if c["chip"] == chip:
                    c["health"] = health
                    return state
    raise ValueError(f"no NPU {npu} chip {chip} on this node")


def device_paths(state: dict) -> list[str]:
    """Every device node the node must have for its accelerators."""
    if state["vendor"] == "nvidia":
        return [g["device"] for g in state["gpus"]] + ["/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"]
    chips = [c["device"] for n in state["npus"] for c in n["chips"]]
    return chips + ["/dev/davinci_manager", "/dev/devmm_svm", "/dev/hisi_hdc"]


# --- files ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeFile:
    path: str  # absolute path inside the node
    content: str | bytes | None = None  # None with link = symlink
    mode: int = 0o644
    link: str | None = None


def _sim_program(name: str) -> str:
    return (SIM_DIR / name).read_text()


def _driver_version_info(state: dict) -> str:
    v = state["driver_version"]
    return (
        f"Version={v}\n"
        "ascendhal_version=7.35.23\n"
        "aicpu_version=1.0\n"
        "tdt_version=1.0\n"
        "log_version=1.0\n"
        "prof_version=2.0\n"
        "dvppkernels_version=1.1\n"
        "tsfw_version=1.0\n"
        "Innerversion=V100R001C25SPC001B220\n"
        "compatible_version=[V100R001C15],[V100R001C17],[V100R001C18],[V100R001C19],[V100R001C20],"
        "[V100R001C21],[V100R001C23],[V100R001C25]\n"
        "compatible_version_fw=[7.0.0,7.9.99]\n"
        f"package_version={v}\n"
    )


def _firmware_version_info(state: dict) -> str:
    return (
        f"Version={state['firmware_version']}\n"
        "firmware_version=1.0\n"
        f"package_version={state['driver_version']}\n"
        "compatible_version_drv=[23.0.rc3,23.0.rc3.],[24.1,24.1.],[25.0,25.0.],[25.5,25.5.]\n"
    )


def _toolkit_files(state: dict) -> list[NodeFile]:
    v = state.get("toolkit_version")
    if not v:
        return []
    a = state.get("arch", arch())
    base = f"/usr/local/Ascend/ascend-toolkit/{v}"
    return [
        NodeFile(
            f"{base}/{a}-linux/ascend_toolkit_install.info",
            f"package_name=Ascend-cann-toolkit\nversion={v}\ninnerversion=V100R001C25SPC001B220\n"
            f"arch={a}\nos=linux\npath={base}/{a}-linux\n",
        ),
        NodeFile(f"{base}/{a}-linux/version.cfg", f"# simulated by fleetserve sandbox\nversion={v}\n"),
        NodeFile(
            "/usr/local/Ascend/ascend-toolkit/set_env.sh",
            "# simulated CANN toolkit environment (fleetserve sandbox)\n"
            "export ASCEND_TOOLKIT_HOME=/usr/local/Ascend/ascend-toolkit/latest\n"
            "export ASCEND_HOME_PATH=$ASCEND_TOOLKIT_HOME\n",
            0o755,
        ),
        NodeFile("/usr/local/Ascend/ascend-toolkit/latest", link=v),
    ]


def _hccn_conf(state: dict) -> str:
    lines = []
    for n in state["npus"]:
        for c in n["chips"]:
            h, i = c["hccn"], c["logic_id"]
            lines += [
                f"address_{i}={h['ip']}",
                f"netmask_{i}={h['netmask']}",
                f"netdetect_{i}={h['netdetect']}",
                f"gateway_{i}={h['gateway']}",
            ]
    return "\n".join(lines) + "\n"


def _devices_unit(paths: list[str]) -> list[NodeFile]:
    conf = "# fleetserve sandbox: simulated accelerator device nodes (char 1:3, like /dev/null)\n" + "".join(
        f"c {p} 0666 root root - {DEVICE_MAJOR_MINOR}\n" for p in paths
    )
    unit = """\
[Unit]
Description=fleetserve sandbox: simulated accelerator device nodes
DefaultDependencies=no
After=systemd-tmpfiles-setup-dev.service
Before=sysinit.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/systemd-tmpfiles --create /etc/fleetserve-sim/devices.conf

[Install]
WantedBy=sysinit.target
"""
    return [
        NodeFile("/etc/fleetserve-sim/devices.conf", conf),
        NodeFile("/etc/systemd/system/sandbox-sim-devices.service", unit),
        NodeFile(
            "/etc/systemd/system/sysinit.target.wants/sandbox-sim-devices.service",
            link="/etc/systemd/system/sandbox-sim-devices.service",
        ),
    ]


def cdi_spec(state: dict) -> str:
    """CDI spec for /etc/cdi/nvidia.yaml: nvidia.com/gpu=0..N-1 and =all."""
    gpus = [g["device"] for g in state["gpus"]]
    common = ["/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"]
    lines = [
        "# fleetserve sandbox: CDI spec for the simulated GPUs (generated)",
        'cdiVersion: "0.5.0"',
        "kind: nvidia.com/gpu",
        "devices:",
    ]
    for i, dev in enumerate(gpus):
        lines += [f'  - name: "{i}"', "    containerEdits:", "      deviceNodes:", f"        - path: {dev}"]
    lines += ['  - name: "all"', "    containerEdits:", "      deviceNodes:"]
    lines += [f"        - path: {dev}" for dev in gpus]
    lines += ["containerEdits:", "  env:", "    - NVIDIA_VISIBLE_DEVICES=void", "  deviceNodes:"]
    lines += [f"    - path: {dev}" for dev in common]
    lines += ["  mounts:"]
    for src in ("/usr/bin/nvidia-smi", STATE_PATH):
        lines += [
            f"    - hostPath: {src}",
            f"      containerPath: {src}",
            "      options: [ro, nosuid, nodev, bind]",
        ]
    return "\n".join(lines) + "\n"


NVIDIA_RUNTIME_PATH = "/usr/bin/nvidia-container-runtime"


def nvidia_containers_conf() -> str:
    """The node's containers.conf with the `nvidia` runtime registered (what `--runtime nvidia` needs)."""
    from fleetserve_sandbox.rootfs import CONTAINERS_CONF

    return (CONTAINERS_CONF.rstrip("\n") + "\n\n"
            "# fleetserve sandbox (NVIDIA node): the NVIDIA Container Toolkit's runtime, as\n"
            "# `docker run --runtime nvidia` (and --gpus, through /usr/bin/docker) expect\n"
            "[engine.runtimes]\n"
            f'nvidia = ["{NVIDIA_RUNTIME_PATH}"]\n')


def node_files(state: dict) -> list[NodeFile]:
    """Every file the node needs for its simulated hardware (written into its overlay upper layer)."""
    files = [NodeFile(STATE_PATH, json.dumps(state, indent=2) + "\n")]
    files += _devices_unit(device_paths(state))
    if state["vendor"] == "nvidia":
        files += [
            NodeFile("/usr/bin/nvidia-smi", _sim_program("nvidia-smi"), 0o755),
            NodeFile("/etc/cdi/nvidia.yaml", cdi_spec(state)),
            # Docker's other way: --runtime nvidia / --gpus (podman-docker's /usr/bin/docker replaced)
            NodeFile(NVIDIA_RUNTIME_PATH, _sim_program("nvidia-container-runtime"), 0o755),
            NodeFile("/usr/bin/docker", _sim_program("docker"), 0o755),
            NodeFile("/etc/containers/containers.conf", nvidia_containers_conf()),
        ]
        return files
    driver = "/usr/local/Ascend/driver"
    files += [
        NodeFile("/usr/local/bin/npu-smi", _sim_program("npu-smi"), 0o755),
        NodeFile(f"{driver}/tools/hccn_tool", _sim_program("hccn_tool"), 0o755),
        NodeFile(f"{driver}/version.info", _driver_version_info(state)),
        NodeFile(f"{driver}/lib64/driver/libascend_hal.so", b"", 0o755),
        NodeFile(f"{driver}/lib64/driver/libdrvdsmi_host.so", b"", 0o755),
        NodeFile(f"{driver}/lib64/common/libc_sec.so", b"", 0o755),
        NodeFile(f"{driver}/lib64/libascend_hal.so", link="driver/libascend_hal.so"),
        NodeFile("/usr/local/Ascend/firmware/version.info", _firmware_version_info(state)),
        NodeFile("/usr/local/dcmi/libdcmi.so", b"", 0o755),
        NodeFile("/usr/local/dcmi/dcmi_interface_api.h", "/* simulated by fleetserve sandbox */\n"),
        NodeFile(
            "/etc/ascend_install.info",
            "UserName=HwHiAiUser\nUserGroup=HwHiAiUser\nFirmware_Install_Type=full\n"
            "Firmware_Install_Path_Param=/usr/local/Ascend\nDriver_Install_Type=full\n"
            "Driver_Install_Path_Param=/usr/local/Ascend\nDriver_Install_For_All=no\n",
        ),
        NodeFile("/etc/hccn.conf", _hccn_conf(state)),
    ]
    files += _toolkit_files(state)
    return files


def write_node_files(root: Path, files: list[NodeFile]) -> None:
    """Write files below root (a node's overlay upper dir)."""
    for f in files:
        dest = root / f.path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.is_symlink() or dest.exists():
            dest.unlink()
        if f.link is not None:
            dest.symlink_to(f.link)
            continue
        if isinstance(f.content, bytes):
            dest.write_bytes(f.content)
        else:
            dest.write_text(f.content or "")
        dest.chmod(f.mode)
