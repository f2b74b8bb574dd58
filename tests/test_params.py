"""Sampling parameters: bounds on every field, unknown names, stop as a string or a list."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import InvalidInput
from engine.params import PARAM_NAMES, SamplingParams, parse_params

# name: (lowest valid, highest valid, just below, just above) -- written out here, not read from the model,
# so a changed bound is a visible test change.
BOUNDS: dict[str, tuple[Any, Any, Any, Any]] = {
    "temperature": (0.0, 5.0, -0.01, 5.01),
    "top_p": (0.0, 1.0, -0.01, 1.01),
    "top_k": (0, 1000, -1, 1001),
    "min_p": (0.0, 1.0, -0.01, 1.01),
    "typical_p": (0.0, 1.0, -0.01, 1.01),
    "repeat_penalty": (0.0, 3.0, -0.01, 3.01),
    "presence_penalty": (-2.0, 2.0, -2.01, 2.01),
    "frequency_penalty": (-2.0, 2.0, -2.01, 2.01),
    "mirostat_mode": (0, 2, -1, 3),
    "mirostat_tau": (0.0, 20.0, -0.01, 20.01),
    "mirostat_eta": (0.0, 1.0, -0.01, 1.01),
    "seed": (-1, 2**32 - 1, -2, 2**32),
    "max_tokens": (1, 131072, 0, 131073),
    "thinking_budget": (0, 131072, -1, 131073),
}
NON_NUMERIC = {"stop", "grammar", "thinking"}


def test_every_numeric_param_has_bounds_here() -> None:
    assert set(PARAM_NAMES) == set(BOUNDS) | NON_NUMERIC


def test_defaults_are_valid() -> None:
    p = parse_params(None)
    assert p == SamplingParams()
    assert parse_params({}) == p
    assert p.stop == [] and p.grammar == ""


@pytest.mark.parametrize("name", sorted(BOUNDS))
def test_bounds_inclusive(name: str) -> None:
    low, high, _, _ = BOUNDS[name]
    assert getattr(parse_params({name: low}), name) == low
    assert getattr(parse_params({name: high}), name) == high


@pytest.mark.parametrize("name", sorted(BOUNDS))
@pytest.mark.parametrize("side", ["below", "above"])
def test_out_of_bounds_rejected_naming_the_field(name: str, side: str) -> None:
    value = BOUNDS[name][2 if side == "below" else 3]
    with pytest.raises(InvalidInput) as info:
        parse_params({name: value})
    assert info.value.field == f"params.{name}"
    assert f"params.{name}" in info.value.message
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("name", "value"),
    [("temperature", "hot"), ("top_k", 1.5), ("max_tokens", "many"), ("seed", None), ("grammar", 5)],
)
def test_wrong_types_rejected(name: str, value: Any) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_params({name: value})
    assert info.value.field == f"params.{name}"


def test_unknown_name_is_named() -> None:
    with pytest.raises(InvalidInput) as info:
        parse_params({"temprature": 0.5})
    assert "temprature" in info.value.message
    assert info.value.field == "params.temprature"
    assert "temperature" in info.value.message  # the known names are listed to help fix the typo


def test_params_must_be_an_object() -> None:
    for bad in ([1, 2], "temperature=1", 3):
        with pytest.raises(InvalidInput) as info:
            parse_params(bad)
        assert info.value.field == "params"


@pytest.mark.parametrize(
    ("given_stop", "expected"),
    [
        ("###", ["###"]),
        (["a", "b"], ["a", "b"]),
        ("", []),
        (None, []),
        (["", "x", ""], ["x"]),
        ([], []),
    ],
)
def test_stop_string_or_list(given_stop: Any, expected: list[str]) -> None:
    assert parse_params({"stop": given_stop}).stop == expected


def test_stop_bad_values() -> None:
    with pytest.raises(InvalidInput, match="params.stop"):
        parse_params({"stop": 5})
    with pytest.raises(InvalidInput, match="params.stop"):
        parse_params({"stop": [1, 2]})
    with pytest.raises(InvalidInput, match="params.stop"):
        parse_params({"stop": [f"s{i}" for i in range(17)]})
    assert len(parse_params({"stop": [f"s{i}" for i in range(16)]}).stop) == 16


def test_merged_applies_and_validates() -> None:
    base = SamplingParams(temperature=0.3, top_k=10)
    merged = base.merged({"temperature": 0.9, "stop": "END"})
    assert (merged.temperature, merged.top_k, merged.stop) == (0.9, 10, ["END"])
    assert base.temperature == 0.3  # the original is untouched
    assert base.merged(None) is base
    with pytest.raises(InvalidInput, match="temperature"):
        base.merged({"temperature": 99})
    with pytest.raises(InvalidInput, match="bogus"):
        base.merged({"bogus": 1})


def test_assignment_is_validated() -> None:
    p = SamplingParams()
    with pytest.raises(ValueError):
        p.temperature = -1


def _in_range(name: str) -> st.SearchStrategy[Any]:
    low, high, _, _ = BOUNDS[name]
    if isinstance(low, int) and isinstance(high, int):
        return st.integers(low, high)
    return st.floats(low, high, allow_nan=False)


def _out_of_range(name: str) -> st.SearchStrategy[Any]:
    low, high, _, _ = BOUNDS[name]
    if isinstance(low, int) and isinstance(high, int):
        return st.one_of(st.integers(max_value=low - 1), st.integers(min_value=high + 1))
    return st.one_of(
        st.floats(max_value=low, exclude_max=True, allow_nan=False),
        st.floats(min_value=high, exclude_min=True, allow_nan=False),
        st.just(float("nan")),
    )


@given(st.fixed_dictionaries({}, optional={name: _in_range(name) for name in BOUNDS}))
def test_any_in_range_values_validate(values: dict[str, Any]) -> None:
    p = parse_params(values)
    for name, value in values.items():
        assert getattr(p, name) == value


@given(st.sampled_from(sorted(BOUNDS)).flatmap(lambda n: st.tuples(st.just(n), _out_of_range(n))))
def test_any_out_of_range_value_is_rejected(case: tuple[str, Any]) -> None:
    name, value = case
    with pytest.raises(InvalidInput) as info:
        parse_params({name: value})
    assert info.value.field == f"params.{name}"


def test_thinking_switch_and_budget() -> None:
    assert parse_params({}).thinking == "auto" and parse_params({}).thinking_budget is None
    assert parse_params({"thinking": "off", "thinking_budget": None}).thinking == "off"
    with pytest.raises(InvalidInput) as info:
        parse_params({"thinking": "maybe"})
    assert info.value.field == "params.thinking"
