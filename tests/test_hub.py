"""Reading what a user types as a Hub reference, and listing a repo's GGUF files through the real
huggingface_hub against the local test Hub (tests/hubserver.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import HubUnavailable, InvalidInput, NotFound
from engine.hub import list_repo, parse_ref, pick
from tests.helpers import free_port
from tests.hubserver import LocalHub, standard_hub


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHub]:
    with standard_hub(tmp_path_factory.mktemp("hub")) as h:
        yield h


@pytest.mark.parametrize(
    ("text", "repo", "revision", "file"),
    [
        ("bartowski/SmolLM2-135M-Instruct-GGUF", "bartowski/SmolLM2-135M-Instruct-GGUF", None, None),
        ("  me/Tiny-GGUF:Q4_K_M ", "me/Tiny-GGUF", None, "Q4_K_M"),
        ("me/Tiny-GGUF@v1.0:tiny-Q8_0.gguf", "me/Tiny-GGUF", "v1.0", "tiny-Q8_0.gguf"),
        ("https://huggingface.co/me/Tiny-GGUF", "me/Tiny-GGUF", None, None),
        ("huggingface.co/me/Tiny-GGUF/tree/main", "me/Tiny-GGUF", "main", None),
        (
            "https://huggingface.co/me/Tiny-GGUF/blob/main/Q2_K/tiny-Q2_K-00001-of-00002.gguf",
            "me/Tiny-GGUF",
            "main",
            "Q2_K/tiny-Q2_K-00001-of-00002.gguf",
        ),
        (
            "https://hf.co/me/Tiny-GGUF/resolve/abc123/x.gguf?download=true",
            "me/Tiny-GGUF",
            "abc123",
            "x.gguf",
        ),
    ],
)
def test_parse_ref(text: str, repo: str, revision: str | None, file: str | None) -> None:
    ref = parse_ref(text)
    assert (ref.repo, ref.revision, ref.file) == (repo, revision, file)


@pytest.mark.parametrize(
    "text",
    ["", "   ", "noslash", "a/b/c", "../etc", "me/..", "me/a--b", "https://evil.example/me/x", "me/x:../y",
     "me/x\nme/y", "https://huggingface.co/me"],
)  # fmt: skip
def test_parse_ref_refuses_with_a_clear_message(text: str) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_ref(text)
    assert err.value.message and err.value.field in ("repo", "file", "revision")


@given(st.text(max_size=300))
def test_parse_ref_never_fails_otherwise(text: str) -> None:
    try:
        ref = parse_ref(text)
    except InvalidInput:
        return
    assert "/" in ref.repo and ".." not in ref.repo
    assert ref.file is None or (".." not in ref.file.split("/") and not ref.file.startswith("/"))


def test_listing_names_quants_groups_split_sets_and_offers_the_projector(hub: LocalHub) -> None:
    listing = list_repo("me/Tiny-GGUF", endpoint=hub.url)
    assert listing.commit == hub.repos["me/Tiny-GGUF"].commit and not listing.gated
    by_name = {m.name: m for m in listing.files}
    assert set(by_name) == {
        "tiny-Q4_K_M.gguf",
        "tiny-Q8_0.gguf",
        "tiny-Q2_K-00001-of-00002.gguf",
        "mmproj-tiny-F16.gguf",
    }  # README.md is not a model
    q4 = by_name["tiny-Q4_K_M.gguf"]
    assert (q4.quantization, q4.kind, q4.parts) == ("Q4_K_M", "model", 1)
    assert q4.size_bytes == hub.repos["me/Tiny-GGUF"].files["tiny-Q4_K_M.gguf"].real_size()
    assert q4.files[0].sha256 == hub.repos["me/Tiny-GGUF"].files["tiny-Q4_K_M.gguf"].claimed_sha256()
    split = by_name["tiny-Q2_K-00001-of-00002.gguf"]
    assert (split.quantization, split.parts, split.complete) == ("Q2_K", 2, True)
    assert [f.path for f in split.files] == [
        "Q2_K/tiny-Q2_K-00001-of-00002.gguf",
        "Q2_K/tiny-Q2_K-00002-of-00002.gguf",
    ]
    assert split.size_bytes == sum(f.size for f in split.files)
    assert by_name["mmproj-tiny-F16.gguf"].kind == "mmproj"
    assert all(m.mmproj == ["mmproj-tiny-F16.gguf"] for m in listing.files if m.kind == "model")
    models = [m for m in listing.files if m.kind == "model"]
    assert [m.size_bytes for m in models] == sorted(m.size_bytes for m in models)  # smallest first
    assert listing.files[-1].kind == "mmproj"


def test_pick_by_name_path_quant_or_the_preferred_quant(hub: LocalHub) -> None:
    listing = list_repo("me/Tiny-GGUF", endpoint=hub.url)
    assert pick(listing, None).name == "tiny-Q4_K_M.gguf"  # llama-server's default quant
    assert pick(listing, "q8_0").name == "tiny-Q8_0.gguf"
    assert pick(listing, "Q2_K/tiny-Q2_K-00002-of-00002.gguf").name == "tiny-Q2_K-00001-of-00002.gguf"
    with pytest.raises(NotFound) as err:
        pick(listing, "Q3_K_S")
    assert "tiny-Q8_0.gguf" in err.value.message  # the message lists what there is


def test_gated_repo_lists_and_says_so(hub: LocalHub) -> None:
    assert list_repo("me/Gated-GGUF", endpoint=hub.url).gated


def test_missing_repo_and_revision_are_not_found(hub: LocalHub) -> None:
    with pytest.raises(NotFound) as err:
        list_repo("me/Nothing-Here", endpoint=hub.url)
    assert "me/Nothing-Here" in err.value.message
    with pytest.raises(NotFound) as err:
        list_repo("me/Tiny-GGUF", "no-such-branch", endpoint=hub.url)
    assert err.value.field == "revision"


def test_hub_down_is_a_clear_error() -> None:
    with pytest.raises(HubUnavailable) as err:
        list_repo("me/Tiny-GGUF", endpoint=f"http://127.0.0.1:{free_port()}")
    assert "Could not reach" in err.value.message


def test_the_local_hub_passes_huggingface_hubs_own_download(hub: LocalHub, tmp_path: Path) -> None:
    """The test Hub is only useful if huggingface_hub accepts it unmodified: its own cached download works."""
    from huggingface_hub import hf_hub_download

    for name in ("tiny-Q8_0.gguf", "Q2_K/tiny-Q2_K-00002-of-00002.gguf", "README.md"):
        path = hf_hub_download("me/Tiny-GGUF", name, endpoint=hub.url, cache_dir=tmp_path)
        f = hub.repos["me/Tiny-GGUF"].files[name]
        assert Path(path).read_bytes() == f.read(0, f.real_size())
