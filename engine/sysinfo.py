"""This process's memory use, for the model manager: resident now and at its peak. Never raises."""

from __future__ import annotations

import resource
import sys
from pathlib import Path


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
