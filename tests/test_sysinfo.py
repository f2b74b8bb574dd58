"""Process memory readout."""

from __future__ import annotations

from pathlib import Path

from engine.sysinfo import process_memory


def test_real_readout_is_positive() -> None:
    mem = process_memory()
    assert mem["peak_mb"] is not None and mem["peak_mb"] > 0
    if Path("/proc/self/status").exists():
        assert mem["rss_mb"] is not None and 0 < mem["rss_mb"] <= mem["peak_mb"]


def test_parses_proc_status(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text("Name:\tpython\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\n", "ascii")
    assert process_memory(status) == {"rss_mb": 100.0, "peak_mb": 200.0}


def test_missing_file_falls_back_to_rusage(tmp_path: Path) -> None:
    mem = process_memory(tmp_path / "absent")
    assert mem["rss_mb"] is None and mem["peak_mb"] and mem["peak_mb"] > 0
