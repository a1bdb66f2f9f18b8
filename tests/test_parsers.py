"""Parsers against real output layouts: A2, A3, the seed's 910B4, nvidia-smi CSV, version files."""

from pathlib import Path

import pytest

from fleetserve.facts.base import parse_key_values
from fleetserve.hardware.smi.npu_smi_info import parse_npu_smi_info
from fleetserve.hardware.smi.nvidia_smi_csv import parse_nvidia_smi_csv
from fleetserve.versions import version_at_least, version_key

NPU = Path(__file__).parent / "fixtures" / "npu-smi"


def test_a2_eight_npus_one_chip_each():
    info = parse_npu_smi_info((NPU / "a2-8x910b3.txt").read_text())
    assert info.family == "A2"
    assert info.version == "24.1.rc2"
    assert [c.logic_id for c in info.chips] == list(range(8))
    assert {c.name for c in info.chips} == {"910B3"}
    assert all(c.health == "OK" and c.hbm_total_mb == 65536 for c in info.chips)
    assert info.chips[0].bus_id == "0000:C1:00.0" and info.chips[0].hbm_used_mb == 3379


def test_a3_sixteen_dies_logic_id_from_phy_id():
    info = parse_npu_smi_info((NPU / "a3-16die.txt").read_text())
    assert info.family == "A3"
    assert [c.logic_id for c in info.chips] == list(range(16))
    # card*2 + chip
    assert all(c.logic_id == c.npu * 2 + c.chip for c in info.chips)
    assert {c.name for c in info.chips} == {"Ascend910"}


def test_seed_001_single_910b4_is_npu_3_with_process():
    info = parse_npu_smi_info((NPU / "910b4-seed001.txt").read_text())
    assert info.version == "25.5.1"
    assert [(c.logic_id, c.name, c.health, c.hbm_used_mb, c.hbm_total_mb) for c in info.chips] == [
        (3, "910B4", "OK", 17790, 32768)]
    assert info.processes == ((3, 0, 2756, "VLLMEngineCor", 14973),)


def test_unhealthy_chip_is_reported_as_printed():
    info = parse_npu_smi_info((NPU / "a2-8x910b3-npu2-alarm.txt").read_text())
    assert {c.logic_id: c.health for c in info.chips}[2] == "Alarm"
    assert sum(c.health == "OK" for c in info.chips) == 7


def test_npu_smi_without_rows_is_an_error():
    with pytest.raises(ValueError, match="no NPU rows"):
        parse_npu_smi_info("dcmi module initialize failed. ret is -8005\n")


def test_nvidia_smi_csv():
    gpus, driver = parse_nvidia_smi_csv(
        "0, NVIDIA GB200, 189471, 175750, 00000008:01:00.0, 580.82.07\n"
        "1, NVIDIA GB200, 189471, 175366, 00000009:01:00.0, 580.82.07\n")
    assert [g.index for g in gpus] == [0, 1] and driver == "580.82.07"
    assert gpus[0].memory_total_mib == 189471 and gpus[0].bus_id == "00000008:01:00.0"


def test_version_files():
    assert parse_key_values("Version=24.1.rc1\ncompatible_version=[V100R001C15],[V100R001C17]\n")["Version"] == "24.1.rc1"
    assert parse_key_values('ID="openEuler"\nID_LIKE=""\n')["ID"] == "openEuler"


@pytest.mark.parametrize("found,needed,ok", [
    ("25.5.1", "25.5.1", True), ("24.1.rc2", "25.5.1", False), ("8.5.1", "7.0.RC1", True),
    ("7.0.RC1", "7.0.0", False), ("7.0.0", "7.0.RC1", True), ("0.17.0rc1", "0.17.0", False),
    ("0.18.0rc1", "0.17.0rc1", True), ("580.82.07", "580", True), ("570.1", "580", False), ("7.0", "7.0.0", True),
])
def test_version_order(found, needed, ok):
    assert version_at_least(found, needed) is ok


def test_one_version_order_for_pip_and_ascend_versions():
    pip = ["0.18.0.dev1", "0.18.0a1", "0.18.0b1", "0.18.0rc1", "0.18.0", "0.18.0.post1", "0.18.1", "0.33.0"]
    ascend = ["7.0.RC1", "7.0.0", "8.5.0", "8.5.1", "24.1.rc1", "24.1.0", "25.5.1"]
    for ordered in (pip, ascend):
        assert sorted(reversed(ordered), key=version_key) == ordered
    assert version_key("v0.18.0") == version_key("0.18.0") == version_key("0.18") == version_key("0.18.0+cpu")
