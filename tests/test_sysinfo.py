"""Process memory readout."""

from __future__ import annotations

import os
from pathlib import Path

from engine import sysinfo
from engine.sysinfo import ProcessHistory, process_cpu_s, process_memory


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


def test_cpu_seconds_of_a_real_process_grow() -> None:
    if not Path("/proc/self/stat").exists():
        return
    before = process_cpu_s(os.getpid())
    sum(i * i for i in range(300_000))
    after = process_cpu_s(os.getpid())
    assert before is not None and after is not None and after > before
    assert process_cpu_s(2**22 + 12345) is None  # no such process


def _proc(tmp_path: Path, pid: int, ticks: int, rss_kb: int) -> None:
    d = tmp_path / str(pid)
    d.mkdir(exist_ok=True)
    rest = " ".join(["0"] * 11) + f" {ticks} 0 " + " ".join(["0"] * 30)
    (d / "stat").write_text(f"{pid} (a (tricky) name) S {rest}\n")
    (d / "status").write_text(f"VmHWM:\t{rss_kb} kB\nVmRSS:\t{rss_kb} kB\n")


def test_history_gives_cpu_percent_and_both_processes_rss(tmp_path: Path) -> None:
    hist = ProcessHistory(proc=tmp_path)
    tick = sysinfo._CLOCK_TICKS
    _proc(tmp_path, 10, 0, 204800)
    _proc(tmp_path, 20, 0, 102400)
    hist.sample(10, 20, now=100.0)
    _proc(tmp_path, 20, tick // 2, 102400)  # half a CPU second in one second
    hist.sample(10, 20, now=101.0)
    labels = {"cpu": "model", "server": "server", "model": "model process"}
    cpu = hist.rows("cpu", labels)
    assert [r["value"] for r in cpu] == [50.0] and cpu[0]["series"] == "model"
    rss = hist.rows("rss", labels)
    assert {(r["series"], r["value"]) for r in rss} == {("server", 200.0), ("model process", 100.0)}
    assert hist.latest() == (50.0, 200.0, 100.0)
    one = ProcessHistory(proc=tmp_path)  # the model in the server's process: one memory series
    one.sample(10, 10, now=1.0)
    assert [r["series"] for r in one.rows("rss", labels)] == ["server"]
