"""Tests of ``stfn.ablate`` (grid parsing, expansion, aggregation, the runner on a tiny grid) and of
the table helpers in ``stfn.report`` that it uses."""

from __future__ import annotations

import math

import pytest

from stfn.ablate import combo_name, combo_overrides, combo_slug, expand_grid, parse_grid, split_values
from stfn.config import ConfigError, config_to_dict, load_config
from stfn.report import fmt_summary, markdown_table, summarize

# ----------------------------------------------------------------------------- grid parsing


def test_split_values_respects_brackets():
    assert split_values("none,sum, multiply") == ["none", "sum", "multiply"]
    assert split_values("[1,3],[1,3,5],[3]") == ["[1,3]", "[1,3,5]", "[3]"]
    with pytest.raises(ConfigError, match="unbalanced"):
        split_values("[1,3")


def test_parse_grid_types_and_lists():
    axes = parse_grid(
        [
            "model.head.fusion=none,sum",
            "model.head.blocks=1,2,3",
            "model.head.kernel_sizes=[1,3],[1,3,5]",
            "model.head.residual=true,false",
            "model.head.dropout=0.0,0.5",
        ]
    )
    assert axes == [
        ("model.head.fusion", ["none", "sum"]),
        ("model.head.blocks", [1, 2, 3]),
        ("model.head.kernel_sizes", [[1, 3], [1, 3, 5]]),
        ("model.head.residual", [True, False]),
        ("model.head.dropout", [0.0, 0.5]),
    ]


@pytest.mark.parametrize(
    "spec, match",
    [
        ("model.head.fusoin=sum", "model.head.fusoin"),
        ("model.head.blocks=two", "model.head.blocks"),
        ("model.head.blocks", "key.path=value"),
        ("model.head.blocks=", "at least one value"),
        ("model.head.blocks=1,,2", "empty value"),
    ],
)
def test_parse_grid_errors_name_the_key(spec, match):
    with pytest.raises(ConfigError, match=match):
        parse_grid([spec])


def test_parse_grid_rejects_duplicate_key():
    with pytest.raises(ConfigError, match="twice"):
        parse_grid(["model.head.blocks=1", "model.head.blocks=2"])


def test_expand_grid_product_and_one_at_a_time():
    axes = [("model.head.fusion", ["none", "sum", "gated"]), ("model.head.blocks", [1, 2])]
    combos = expand_grid(axes)
    assert len(combos) == 6
    assert combos[0] == {"model.head.fusion": "none", "model.head.blocks": 1}
    assert combos[1] == {"model.head.fusion": "none", "model.head.blocks": 2}
    assert len({combo_slug(c) for c in combos}) == 6

    base = config_to_dict(load_config(None, ["model.head.fusion=sum", "model.head.blocks=2"]))
    oat = expand_grid(axes, base=base)
    # base first, then only the values that differ from it
    assert oat == [{}, {"model.head.fusion": "none"}, {"model.head.fusion": "gated"}, {"model.head.blocks": 1}]
    assert combo_name({}) == "base"


def test_combo_overrides_round_trip_through_config():
    combo = {"model.head.kernel_sizes": [3, 5], "model.head.residual": False, "model.head.pooling": "max"}
    cfg = load_config(None, combo_overrides(combo))
    assert cfg.model.head.kernel_sizes == [3, 5]
    assert cfg.model.head.residual is False
    assert cfg.model.head.pooling == "max"
    assert combo_name(combo) == "kernel_sizes=[3,5] residual=off pooling=max"
    slug = combo_slug(combo)
    assert "/" not in slug and " " not in slug
    assert slug != combo_slug({**combo, "model.head.pooling": "avg"})


# ----------------------------------------------------------------------------- aggregation and tables


def test_summarize_mean_std_range():
    s = summarize([50.0, 70.0, 90.0])
    assert s["n"] == 3
    assert s["mean"] == pytest.approx(70.0)
    assert s["std"] == pytest.approx(20.0)  # sample std (n - 1)
    assert (s["min"], s["max"]) == (50.0, 90.0)
    assert fmt_summary(s) == "70.0 ± 20.0 (50.0–90.0)"
    one = summarize([25.0])
    assert one["std"] == 0.0 and fmt_summary(one) == "25.0"
    empty = summarize([float("nan"), None])
    assert empty["n"] == 0 and fmt_summary(empty) == "–"
    assert not math.isnan(summarize([0.1, float("nan")])["mean"])


def test_markdown_table_shape_and_escaping():
    text = markdown_table(["model", "acc"], [["a|b", "1.0"], ["c", "2.0"]], align="lr")
    lines = text.strip().splitlines()
    assert lines[0] == "| model | acc |"
    assert lines[1] == "| --- | ---: |"
    assert lines[2] == "| a\\|b | 1.0 |"
    assert len(lines) == 4
    with pytest.raises(ValueError):
        markdown_table(["a", "b"], [["only one"]])
