"""Process readouts for the model manager: memory (resident now and at its peak), and a live history of
CPU use and RSS for the server and the model process. Linux /proc; elsewhere the values are None. Never
raises."""

from __future__ import annotations

import os
import resource
import sys
import threading
import time
from collections import deque
from datetime import datetime
from pathlib import Path
from typing import Any


def process_memory(status_file: Path = Path("/proc/self/status")) -> dict[str, float | None]:
    """{"rss_mb": resident set size now, "peak_mb": the peak} in MiB; None where the system cannot tell."""
    rss = peak = None
    try:
        for line in status_file.read_text("ascii", "replace").splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM") and value.strip().endswith("kB"):
                mb = round(int(value.split()[0]) / 1024, 1)
                rss, peak = (mb, peak) if key == "VmRSS" else (rss, mb)
    except (OSError, ValueError):
        pass
    if peak is None:
        try:
            maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
            peak = round(maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)
        except (OSError, ValueError):
            pass
    return {"rss_mb": rss, "peak_mb": peak}


def process_cpu_s(pid: int, proc: Path = Path("/proc")) -> float | None:
    """CPU seconds (user + system) a process has used so far; None when the system cannot tell."""
    try:
        stat = (proc / str(pid) / "stat").read_text("ascii", "replace")
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": the comm may hold spaces
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime, stime
    except (OSError, ValueError, IndexError):
        return None


def process_rss_mb(pid: int, proc: Path = Path("/proc")) -> float | None:
    return process_memory(proc / str(pid) / "status")["rss_mb"] if pid > 0 else None


def _clock_ticks() -> int:
    try:
        return int(os.sysconf("SC_CLK_TCK")) or 100
    except (ValueError, OSError, AttributeError):
        return 100


_CLOCK_TICKS = _clock_ticks()


class ProcessHistory:
    """The last `maxlen` samples of the model process's CPU use and the server's and model's RSS, for a live
    plot on machines without a GPU. The model runs in the server's own process until it has a worker of its
    own: then both pids are the same and one memory series is drawn. Thread-safe."""

    def __init__(self, maxlen: int = 120, proc: Path = Path("/proc")) -> None:
        self._samples: deque[tuple[float, float | None, float | None, float | None]] = deque(maxlen=maxlen)
        self._last: tuple[int, float, float] | None = None  # model pid, wall time, its CPU seconds
        self._proc = proc
        self._lock = threading.Lock()

    def sample(self, server_pid: int, model_pid: int, now: float | None = None) -> None:
        now = time.time() if now is None else now
        cpu_s = process_cpu_s(model_pid, self._proc)
        server_rss = process_rss_mb(server_pid, self._proc)
        model_rss = process_rss_mb(model_pid, self._proc) if model_pid != server_pid else None
        with self._lock:
            pct = None
            last = self._last
            if cpu_s is not None and last is not None and last[0] == model_pid and now > last[1]:
                pct = round(max(0.0, cpu_s - last[2]) / (now - last[1]) * 100, 1)
            self._last = (model_pid, now, cpu_s) if cpu_s is not None else None
            self._samples.append((now, pct, server_rss, model_rss))

    def rows(self, metric: str, labels: dict[str, str]) -> list[dict[str, Any]]:
        """Long-format rows {"time", "series", "value"}: metric "cpu" (series labels["cpu"]) or "rss"
        (labels["server"] and labels["model"])."""
        with self._lock:
            samples = list(self._samples)
        out: list[dict[str, Any]] = []
        for ts, pct, server_rss, model_rss in samples:
            when = datetime.fromtimestamp(ts)
            values = {"cpu": pct} if metric == "cpu" else {"server": server_rss, "model": model_rss}
            for key, value in values.items():
                if value is not None:
                    out.append({"time": when, "series": labels[key], "value": float(value)})
        return out

    def latest(self) -> tuple[float | None, float | None, float | None]:
        """(CPU %, server RSS MB, model RSS MB) of the newest sample; None where unknown."""
        with self._lock:
            return self._samples[-1][1:] if self._samples else (None, None, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._samples)


def available_memory(
    meminfo: Path = Path("/proc/meminfo"), cgroup: Path = Path("/sys/fs/cgroup")
) -> int | None:
    """Bytes of RAM a new allocation can get: MemAvailable, or less when a cgroup (a container) limits
    this process to less. None where the system cannot tell."""
    available = None
    try:
        for line in meminfo.read_text("ascii", "replace").splitlines():
            key, _, value = line.partition(":")
            if key == "MemAvailable" and value.strip().endswith("kB"):
                available = int(value.split()[0]) * 1024
    except (OSError, ValueError):
        pass
    try:
        limit = (cgroup / "memory.max").read_text("ascii").strip()
        if limit != "max":
            left = int(limit) - int((cgroup / "memory.current").read_text("ascii").strip())
            available = left if available is None else min(available, left)
    except (OSError, ValueError):
        pass
    return None if available is None else max(available, 0)
