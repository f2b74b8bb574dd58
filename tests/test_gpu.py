"""GPU status: the real path on this machine, and the GPU path against a fake pynvml for formatting."""

from __future__ import annotations

import os
import threading
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import pytest

from engine import gpu
from engine.gpu import GpuHistory, gpu_status, gpu_summary

MIB = 1024 * 1024


class FakeNvml:
    """Just enough of pynvml's surface: two devices, the second without a temperature sensor."""

    class NVMLError(Exception):
        pass

    class NVMLError_NotSupported(NVMLError):
        pass

    class NVMLError_LibraryNotFound(NVMLError):
        pass

    NVML_TEMPERATURE_GPU = 0

    def __init__(self, count: int = 2, init_error: Exception | None = None) -> None:
        self.count = count
        self.init_error = init_error
        self.init_calls = 0

    def nvmlInit(self) -> None:
        self.init_calls += 1
        if self.init_error:
            raise self.init_error

    def nvmlDeviceGetCount(self) -> int:
        return self.count

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetName(self, h: int) -> Any:
        return b"NVIDIA H100 80GB HBM3" if h == 0 else "NVIDIA L4"

    def nvmlDeviceGetMemoryInfo(self, h: int) -> SimpleNamespace:
        return SimpleNamespace(used=(1000 + h) * MIB, total=81559 * MIB, free=0)

    def nvmlDeviceGetUtilizationRates(self, h: int) -> SimpleNamespace:
        return SimpleNamespace(gpu=37 + h, memory=5)

    def nvmlDeviceGetTemperature(self, h: int, sensor: int) -> int:
        if h == 1:
            raise self.NVMLError_NotSupported()
        return 41

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:
        return 123456

    def nvmlDeviceGetEnforcedPowerLimit(self, h: int) -> int:
        if h == 1:
            raise self.NVMLError_NotSupported()
        return 700000

    def nvmlDeviceGetComputeRunningProcesses(self, h: int) -> list[SimpleNamespace]:
        if h == 0:
            return [
                SimpleNamespace(pid=1, usedGpuMemory=9 * MIB),
                SimpleNamespace(pid=os.getpid(), usedGpuMemory=512 * MIB),
            ]
        return []


@pytest.fixture(autouse=True)
def _not_in_container(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu, "_in_container", lambda: False)


def test_real_status_never_raises_and_is_consistent() -> None:
    for _ in range(2):
        status = gpu_status()
        assert set(status) <= {"available", "devices", "reason", "cuda_build"}
        assert status["cuda_build"] in (True, False, None)
        if status["available"]:  # a GPU machine: the shape, not the numbers
            assert "reason" not in status and status["devices"]
            assert {"index", "name", "vram_total_mb", "process_vram_mb"} <= set(status["devices"][0])
        else:
            assert status["devices"] == []
            assert "CPU" in status["reason"]


def test_real_no_gpu_path_on_a_machine_without_a_driver() -> None:
    if os.path.exists("/proc/driver/nvidia"):
        pytest.skip("this machine has an NVIDIA driver")
    status = gpu_status()
    assert status["available"] is False
    assert status["devices"] == []
    assert "CPU" in status["reason"]
    assert gpu_status() == status
    summary = gpu_summary()
    assert summary == {"available": False, "reason": status["reason"]}


def test_fake_gpus_are_formatted() -> None:
    status = gpu_status(FakeNvml())
    assert status["available"] is True
    assert "reason" not in status
    first, second = status["devices"]
    assert first == {
        "index": 0,
        "name": "NVIDIA H100 80GB HBM3",
        "vram_used_mb": 1000,
        "vram_total_mb": 81559,
        "utilization_pct": 37,
        "temperature_c": 41,
        "power_w": 123.5,
        "power_limit_w": 700.0,
        "process_vram_mb": 512,
    }
    assert second["name"] == "NVIDIA L4"
    assert second["temperature_c"] is None  # NotSupported becomes None
    assert second["power_limit_w"] is None
    assert second["process_vram_mb"] == 0  # listed processes, none of them us
    assert set(first) == set(second)


def test_process_vram_is_unknown_in_a_container(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu, "_in_container", lambda: True)
    devices = gpu_status(FakeNvml())["devices"]
    assert devices[0]["process_vram_mb"] == 512  # our PID matched
    assert devices[1]["process_vram_mb"] is None


def test_summary_adds_up_devices() -> None:
    summary = gpu_summary(FakeNvml())
    assert summary == {
        "available": True,
        "name": "NVIDIA H100 80GB HBM3, NVIDIA L4",
        "vram_used_mb": 2001,
        "vram_total_mb": 2 * 81559,
    }


def test_library_not_found_is_a_plain_reason_and_init_is_cached() -> None:
    fake = FakeNvml(init_error=FakeNvml.NVMLError_LibraryNotFound())
    first = gpu_status(fake)
    assert first["available"] is False and first["devices"] == []
    assert first["reason"] == "No NVIDIA driver found (NVML library not available): running on CPU."
    assert gpu_status(fake)["reason"] == first["reason"]
    assert fake.init_calls == 1


@pytest.mark.parametrize(
    ("fake", "words"),
    [
        (FakeNvml(count=0), "No NVIDIA GPU found"),
        (FakeNvml(init_error=RuntimeError("boom")), "did not answer (boom)"),
    ],
)
def test_other_no_gpu_states(fake: FakeNvml, words: str) -> None:
    status = gpu_status(fake)
    assert status["available"] is False and status["devices"] == []
    assert words in status["reason"] and "CPU" in status["reason"]


class LostGpuNvml(FakeNvml):
    def nvmlDeviceGetCount(self) -> int:
        raise OSError("gone")


def test_a_failing_device_count_never_raises() -> None:
    status = gpu_status(LostGpuNvml())
    assert status["available"] is False and "CPU" in status["reason"]


def test_init_runs_once_across_threads() -> None:
    fake = FakeNvml()
    results: list[dict[str, Any]] = []
    threads = [threading.Thread(target=lambda: results.append(gpu_status(fake))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert fake.init_calls == 1
    assert all(r["available"] for r in results) and len(results) == 8


def test_history_is_a_ring_buffer_of_long_rows() -> None:
    fake = FakeNvml()
    history = GpuHistory(maxlen=3, source=lambda: gpu_status(fake))
    for t in range(5):
        history.sample(now=1_700_000_000 + t)
    assert len(history) == 3
    rows = history.rows()
    assert len(rows) == 3 * 2 * 2  # samples x devices x metrics
    assert set(rows[0]) == {"time", "series", "value"}
    assert isinstance(rows[0]["time"], datetime)
    assert rows[0]["time"] == datetime.fromtimestamp(1_700_000_002)
    assert {r["series"] for r in rows} == {"GPU 0 VRAM MB", "GPU 0 util %", "GPU 1 VRAM MB", "GPU 1 util %"}
    vram = history.rows("vram_used_mb")
    assert [r["value"] for r in vram[:2]] == [1000.0, 1001.0]
    history.clear()
    assert history.rows() == []


def test_history_without_a_gpu_stays_empty() -> None:
    history = GpuHistory()
    history.sample({"available": False, "devices": [], "reason": "no"})
    assert len(history) == 0 and history.rows() == []
