"""Conditioning list operations on hand-made CONDITIONING values (spec §9.2)."""
from __future__ import annotations

import torch

from nodes.conditioning import (ConditioningAverage, ConditioningCombine, ConditioningConcat, ConditioningSetArea,
                                ConditioningSetAreaPercentage, ConditioningSetAreaStrength, ConditioningSetMask,
                                ConditioningSetTimestepRange, ConditioningZeroOut)


def _cond(value: float, tokens: int = 77, pooled: float | None = None, **options) -> list:
    extra = {} if pooled is None else {"pooled_output": torch.full((1, 4), pooled)}
    return [[torch.full((1, tokens, 8), value), {**extra, **options}]]


def test_combine_keeps_both_lists():
    a, b = _cond(1.0), _cond(2.0) + _cond(3.0)
    (out,) = ConditioningCombine().execute(a, b)
    assert [entry[0][0, 0, 0].item() for entry in out] == [1.0, 2.0, 3.0]


def test_average_weights_tokens_and_pooled():
    to, source = _cond(1.0, pooled=1.0, strength=0.5), _cond(3.0, pooled=5.0)
    (out,) = ConditioningAverage().execute(to, source, 0.25)
    tensor, options = out[0]
    assert torch.allclose(tensor, torch.full((1, 77, 8), 0.25 * 1 + 0.75 * 3))
    assert torch.allclose(options["pooled_output"], torch.full((1, 4), 0.25 * 1 + 0.75 * 5))
    assert options["strength"] == 0.5 and to[0][1]["pooled_output"][0, 0] == 1.0  # input untouched
    # `from` shorter: zero-padded; longer: cut to `to`'s length
    (short,) = ConditioningAverage().execute(_cond(1.0, tokens=154), _cond(3.0), 0.5)
    assert short[0][0].shape == (1, 154, 8)
    assert short[0][0][0, 0, 0] == 2.0 and short[0][0][0, 100, 0] == 0.5
    (long,) = ConditioningAverage().execute(_cond(1.0), _cond(3.0, tokens=154), 0.5)
    assert long[0][0].shape == (1, 77, 8)
    # only `from` has a pooled output: it is taken as is
    (taken,) = ConditioningAverage().execute(_cond(1.0), _cond(3.0, pooled=5.0), 0.5)
    assert torch.equal(taken[0][1]["pooled_output"], torch.full((1, 4), 5.0))


def test_concat_appends_the_first_from_entry():
    (out,) = ConditioningConcat().execute(_cond(1.0, pooled=1.0) + _cond(2.0), _cond(3.0) + _cond(9.0))
    assert [entry[0].shape[1] for entry in out] == [154, 154]
    assert out[0][0][0, 100, 0] == 3.0 and out[1][0][0, 0, 0] == 2.0
    assert out[0][1]["pooled_output"][0, 0] == 1.0


def test_areas_masks_strength_and_timestep_range():
    base = _cond(1.0, pooled=1.0)
    (area,) = ConditioningSetArea().execute(base, 256, 128, 64, 32, 0.8)
    assert area[0][1]["area"] == (16, 32, 4, 8)
    assert area[0][1]["strength"] == 0.8 and area[0][1]["set_area_to_bounds"] is False
    assert "area" not in base[0][1] and area[0][0] is base[0][0]
    (pct,) = ConditioningSetAreaPercentage().execute(base, 0.5, 0.25, 0.1, 0.2, 1.0)
    assert pct[0][1]["area"] == ("percentage", 0.25, 0.5, 0.2, 0.1)
    (strength,) = ConditioningSetAreaStrength().execute(area, 2.0)
    assert strength[0][1]["strength"] == 2.0 and strength[0][1]["area"] == (16, 32, 4, 8)
    mask = torch.ones(32, 32)
    (masked,) = ConditioningSetMask().execute(base, mask, 0.7, "mask bounds")
    assert masked[0][1]["mask"].shape == (1, 32, 32)
    assert masked[0][1]["mask_strength"] == 0.7 and masked[0][1]["set_area_to_bounds"] is True
    (default,) = ConditioningSetMask().execute(base, mask[None], 1.0, "default")
    assert default[0][1]["set_area_to_bounds"] is False
    (timed,) = ConditioningSetTimestepRange().execute(base, 0.2, 0.7)
    assert (timed[0][1]["start_percent"], timed[0][1]["end_percent"]) == (0.2, 0.7)


def test_zero_out():
    base = _cond(1.0, pooled=1.0, width=1024) + _cond(2.0)
    (out,) = ConditioningZeroOut().execute(base)
    assert not out[0][0].any() and not out[0][1]["pooled_output"].any() and out[0][1]["width"] == 1024
    assert not out[1][0].any() and "pooled_output" not in out[1][1]
    assert base[0][1]["pooled_output"].eq(1).all()
