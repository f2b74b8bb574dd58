"""Downloads through the real huggingface_hub from the local test Hub: files land verified, split sets as
one, resume after a kill, a checksum mismatch or a full disk or a cancel leaves nothing, nothing is
overwritten, and a gated repo's token is used but never kept."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.downloads import PARTS_DIR, DownloadManager, DownloadStatus
from engine.errors import Conflict, HubAccessDenied, StorageError
from engine.models import list_models
from tests.helpers import ROOT
from tests.hubserver import GATED_TOKEN, LocalHub, standard_hub

TINY = "me/Tiny-GGUF"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHub]:
    with standard_hub(tmp_path_factory.mktemp("hub")) as h:
        yield h


@pytest.fixture
def models(tmp_path: Path) -> Path:
    return tmp_path / "models"


@pytest.fixture
def manager(hub: LocalHub, models: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> DownloadManager:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no saved login
    hub.rate = None
    hub.requests.clear()
    return DownloadManager(models, endpoint=hub.url, reserve_bytes=0)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def wait_until(check, what: str, timeout: float = 60.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def leftovers(models: Path) -> list[str]:
    parts = models / PARTS_DIR
    return sorted(p.name for p in parts.iterdir()) if parts.is_dir() else []


def test_a_download_lands_verified_in_models(manager: DownloadManager, hub: LocalHub, models: Path) -> None:
    started = manager.start(TINY, "tiny-Q4_K_M.gguf")
    assert started.state == "downloading" and started.bytes_total > 3_000_000
    done = manager.wait(started.id, 60)
    assert done.state == "done", done.error
    assert done.bytes_done == done.bytes_total and done.finished_at is not None
    target = models / "tiny-Q4_K_M.gguf"
    assert sha256(target) == hub.repos[TINY].files["tiny-Q4_K_M.gguf"].claimed_sha256()
    assert leftovers(models) == []
    assert [m.name for m in list_models(models)] == ["tiny-Q4_K_M.gguf"]
    commit = hub.repos[TINY].commit
    heads = [r.path for r in hub.requests if r.method == "HEAD"]
    assert heads == [f"/{TINY}/resolve/{commit}/tiny-Q4_K_M.gguf"]  # pinned to the listed commit
    assert manager.get(started.id) == done and done in manager.all()


def test_a_split_model_downloads_as_one_set_with_its_projector(
    manager: DownloadManager, models: Path
) -> None:
    status = manager.wait(manager.start(TINY, "Q2_K", mmproj=True).id, 60)
    assert status.state == "done", status.error
    names = ["tiny-Q2_K-00001-of-00002.gguf", "tiny-Q2_K-00002-of-00002.gguf", "mmproj-tiny-F16.gguf"]
    assert status.files == names and status.name == names[0]
    assert sorted(p.name for p in models.glob("*.gguf")) == sorted(names)
    assert [m.name for m in list_models(models)] == sorted([names[0], names[2]])  # later parts are hidden


def test_progress_speed_and_eta_while_it_runs(manager: DownloadManager, hub: LocalHub) -> None:
    hub.rate = 1_000_000
    job = manager.start(f"https://huggingface.co/{TINY}/blob/main/tiny-Q4_K_M.gguf")
    seen = wait_until(
        lambda: (s := manager.get(job.id)).bytes_done > 0 and s.speed_bps and s.eta_s is not None and s,
        "progress with a speed",
    )
    assert 0 < seen.bytes_done < seen.bytes_total and seen.state == "downloading"
    assert seen.speed_bps is not None and seen.speed_bps > 0
    assert manager.start(TINY, "tiny-Q4_K_M.gguf").id == job.id  # the same file: the running job
    hub.rate = None
    assert manager.wait(job.id, 60).state == "done"


def test_cancel_leaves_nothing_half_written(manager: DownloadManager, hub: LocalHub, models: Path) -> None:
    hub.rate = 500_000
    job = manager.start(TINY, "tiny-Q4_K_M.gguf")
    wait_until(lambda: manager.get(job.id).bytes_done > 0, "the first bytes")
    assert leftovers(models)  # the partial file exists while it runs
    manager.cancel(job.id)
    status = manager.wait(job.id, 60)
    assert status.state == "cancelled"
    assert leftovers(models) == [] and not list(models.glob("*.gguf"))
    manager.cancel(job.id)  # a finished job is forgotten
    assert job.id not in {s.id for s in manager.all()}


def test_a_checksum_mismatch_is_refused(manager: DownloadManager, models: Path) -> None:
    status = manager.wait(manager.start("me/Bad-GGUF").id, 60)
    assert status.state == "failed" and "checksum" in (status.error or "")
    assert not list(models.glob("*.gguf")) and leftovers(models) == []
    assert not status.resumable


def test_a_file_kept_in_git_is_checked_against_its_blob_id(manager: DownloadManager, models: Path) -> None:
    status = manager.wait(manager.start("me/Git-GGUF").id, 60)
    assert status.state == "done", status.error
    assert (models / "git-Q8_0.gguf").stat().st_size == 2048


def test_disk_space_is_checked_before_anything_downloads(manager: DownloadManager, hub: LocalHub) -> None:
    with pytest.raises(StorageError) as err:
        manager.start("me/Huge-GGUF")
    assert "Not enough disk space" in err.value.message and "Nothing was downloaded" in err.value.message
    assert not [r for r in hub.requests if "/resolve/" in r.path or "/cdn/" in r.path]


def test_never_overwrites_a_different_file(manager: DownloadManager, models: Path) -> None:
    models.mkdir(parents=True)
    mine = models / "tiny-Q8_0.gguf"
    mine.write_bytes(b"my own model, not the Hub's")
    with pytest.raises(Conflict) as err:
        manager.start(TINY, "tiny-Q8_0.gguf")
    assert "never overwrite" in err.value.message
    assert mine.read_bytes() == b"my own model, not the Hub's"


def test_the_same_file_already_there_is_verified_not_fetched(
    manager: DownloadManager, hub: LocalHub, models: Path
) -> None:
    assert manager.wait(manager.start(TINY, "tiny-Q8_0.gguf").id, 60).state == "done"
    before = (models / "tiny-Q8_0.gguf").stat()
    hub.requests.clear()
    status = manager.wait(manager.start(TINY, "tiny-Q8_0.gguf").id, 60)
    assert status.state == "done"
    after = (models / "tiny-Q8_0.gguf").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert not [r for r in hub.requests if "/cdn/" in r.path]


def test_same_size_other_contents_is_refused_after_checking(manager: DownloadManager, models: Path) -> None:
    models.mkdir(parents=True)
    mine = models / "tiny-Q8_0.gguf"
    size = manager.wait(manager.start(TINY, "tiny-Q8_0.gguf").id, 60).bytes_total
    mine.unlink()
    mine.write_bytes(b"x" * size)
    status = manager.wait(manager.start(TINY, "tiny-Q8_0.gguf").id, 60)
    assert status.state == "failed" and "never overwrite" in (status.error or "")
    assert mine.read_bytes() == b"x" * size


def test_gated_repo_needs_a_token_and_the_token_is_never_kept(
    manager: DownloadManager,
    hub: LocalHub,
    models: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(HubAccessDenied) as err:
        manager.start("me/Gated-GGUF")
    assert "gated" in err.value.message and err.value.field == "token"
    wrong = manager.wait(manager.start("me/Gated-GGUF", token="hf_wrong").id, 60)
    assert wrong.state == "failed" and "gated" in (wrong.error or "")
    status = manager.wait(manager.start("me/Gated-GGUF", token=GATED_TOKEN).id, 60)
    assert status.state == "done", status.error
    assert (models / "gated-Q8_0.gguf").is_file()
    heads = [r for r in hub.requests if r.method == "HEAD"]
    assert heads and heads[-1].authorized
    assert not [r for r in hub.requests if "/cdn/" in r.path and r.authorized]  # the token stays with the Hub
    assert GATED_TOKEN not in json.dumps([s.model_dump() for s in manager.all()])
    assert GATED_TOKEN not in caplog.text
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert GATED_TOKEN.encode() not in path.read_bytes(), path


def test_the_token_can_come_from_hf_token(
    manager: DownloadManager, monkeypatch: pytest.MonkeyPatch, models: Path
) -> None:
    monkeypatch.setenv("HF_TOKEN", GATED_TOKEN)
    assert manager.wait(manager.start("me/Gated-GGUF").id, 60).state == "done"


def _script(body: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(body)]


def _run_in_child(hub: LocalHub, models: Path, body: str, **kw):  # type: ignore[no-untyped-def]
    code = f"""
        import json, sys
        from pathlib import Path
        from engine.downloads import DownloadManager
        dm = DownloadManager(Path({str(models)!r}), endpoint={hub.url!r}, reserve_bytes=0)
        {body}
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_DISABLE_TELEMETRY": "1"}
    return subprocess.Popen(_script(code), cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True, **kw)


def test_a_download_killed_midway_resumes_where_it_stopped(
    manager: DownloadManager, hub: LocalHub, models: Path
) -> None:
    hub.rate = 1_000_000
    child = _run_in_child(hub, models, f'dm.wait(dm.start("{TINY}", "tiny-Q4_K_M.gguf").id)')
    try:
        part = wait_until(lambda: next((models / PARTS_DIR).glob("*.part"), None), "the partial file")
        wait_until(lambda: part.stat().st_size >= 512 * 1024, "half a megabyte on disk")
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(30)
    hub.rate = None
    kept = part.stat().st_size
    assert 0 < kept < hub.repos[TINY].files["tiny-Q4_K_M.gguf"].real_size()
    assert not (models / "tiny-Q4_K_M.gguf").exists()  # nothing half-written in models/
    hub.requests.clear()
    status = manager.wait(manager.start(TINY, "tiny-Q4_K_M.gguf").id, 60)
    assert status.state == "done", status.error
    assert status.resumed_from == kept
    assert hub.ranges("tiny-Q4_K_M.gguf") == [f"bytes={kept}-"]  # only the rest was asked for
    assert sha256(models / "tiny-Q4_K_M.gguf") == hub.repos[TINY].files["tiny-Q4_K_M.gguf"].claimed_sha256()
    assert leftovers(models) == []


def test_a_full_disk_mid_transfer_is_a_clear_error_and_leaves_nothing(hub: LocalHub, models: Path) -> None:
    """The child may write at most 1 MiB per file (RLIMIT_FSIZE): the disk is 'full' midway."""
    body = f"""
        import resource, signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
        s = dm.wait(dm.start("{TINY}", "tiny-Q4_K_M.gguf").id)
        print(s.model_dump_json())
    """
    child = _run_in_child(hub, models, body)
    out, _ = child.communicate(timeout=120)
    status = DownloadStatus.model_validate_json(out.strip().splitlines()[-1])
    assert status.state == "failed"
    assert "Could not write" in (status.error or "") and "disk full" in (status.error or "")
    assert not status.resumable
    assert leftovers(models) == [] and not list(models.glob("*.gguf"))
