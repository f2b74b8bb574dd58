"""The machine and its processes: CPU, RAM, versions, RSS and CPU time from /proc, free ports."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import resource
import socket
import time
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def gpu() -> dict[str, Any]:
    from engine.gpu import gpu_summary

    return gpu_summary()


def describe() -> dict[str, Any]:
    return {
        "cpu": _cpu_model(),
        "cores": cores(),
        "ram_gib": _ram_gib(),
        "os": platform.platform(terse=True),
        "python": platform.python_version(),
        "llama_cpp_python": version("llama_cpp_python"),
        "gradio": version("gradio"),
        "gpu": gpu(),
    }


def proc_status_mb(pid: int, key: str) -> float | None:
    """VmRSS / VmHWM (peak RSS) of a process, in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def tree_pids(pid: int) -> list[int]:
    """`pid` and its descendants (a server may fork workers)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                kids = (task / "children").read_text().split()
                todo.extend(int(k) for k in kids)
        except OSError:
            pass
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its children so far (10 ms ticks; it includes threads
    that have ended, which a sum over the live threads' schedstat would not)."""
    total = 0
    for p in tree_pids(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLK_TCK


def thread_cpu_seconds(pid: int, tid: int) -> float:
    """CPU time of one thread (tid == pid: the main thread, i.e. a server's event loop).

    From schedstat (nanoseconds) where the kernel has it: stat counts in 10 ms ticks, too coarse for
    the UI's few milliseconds per update. A thread that has ended counts as 0.
    """
    base = f"/proc/{pid}/task/{tid}"
    try:
        return int(Path(f"{base}/schedstat").read_text().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        pass
    try:
        fields = Path(f"{base}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def self_peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- noise from other processes ----------------------------------------------------------------------


def _jiffies() -> tuple[int, int]:
    """(busy, total) CPU jiffies of the whole machine, all cores."""
    vals = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    total = sum(vals)
    return total - vals[3] - vals[4], total  # idle + iowait


class Noise:
    """How much of the machine processes outside this bench (and its servers) used meanwhile."""

    roots: tuple[int, ...] = ()  # processes under test besides this one and its children

    def __init__(self) -> None:
        self.start()

    def _ours(self) -> float:
        return sum(cpu_seconds(p) for p in {os.getpid(), *self.roots}) * CLK_TCK

    def start(self) -> None:
        self.busy, self.total = _jiffies()
        self.ours = self._ours()

    def others(self) -> float:
        """Fraction of all cores (0..1) used by other processes since start()."""
        busy, total = _jiffies()
        if total <= self.total:
            return 0.0
        return max(0.0, (busy - self.busy) - (self._ours() - self.ours)) / (total - self.total)


def wait_quiet(max_wait: float, threshold: float = 0.1, window: float = 0.5) -> float:
    """Wait (at most `max_wait` s) for a `window` in which others use under `threshold` of the machine."""
    if max_wait <= 0:
        return 0.0
    deadline = time.perf_counter() + max_wait
    noise = Noise()
    while True:
        noise.start()
        time.sleep(window)
        level = noise.others()
        if level < threshold or time.perf_counter() >= deadline:
            return level
