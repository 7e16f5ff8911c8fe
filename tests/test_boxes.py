"""ihl.boxes: the one box rule shared by datasets, box files and the TorchServe handler."""

from __future__ import annotations

import math

import pytest

from ihl.boxes import BoxError, parse_box


def test_xywh_and_xyxy_give_the_same_box_and_a_default_score():
    assert parse_box([10, 20, 30, 40]) == ([10.0, 20.0, 30.0, 40.0], 1.0)
    assert parse_box([10, 20, 40, 60, 0.5], box_format="xyxy") == ([10.0, 20.0, 30.0, 40.0], 0.5)


@pytest.mark.parametrize(
    ("value", "kwargs", "message"),
    [
        ([1, 2, 3], {}, r"is not \[x, y, w, h\] or \[x, y, w, h, score\]"),
        ([1, 2, 3, 4, 0.9], {"scored": False}, r"is not \[x, y, w, h\]$"),
        ("1,2,3,4", {}, "is not"),
        ([1, 2, math.inf, 4], {}, "non-numeric or non-finite"),
        (["a", 2, 3, 4], {}, "non-numeric or non-finite"),
        ([True, 2, 3, 4], {}, "non-numeric or non-finite"),
        ([1, 2, 0, 4], {}, "zero or negative size"),
        ([50, 50, 10, 10], {"box_format": "xyxy"}, r"\(xyxy\) has zero or negative size"),
        ([-1e308, 0, 1e308, 10], {"box_format": "xyxy"}, "non-finite"),  # width overflows
        ([1e308, 0, 1e308, 10], {}, "non-finite"),  # right edge overflows
    ],
)
def test_bad_boxes_are_refused_and_quoted(value, kwargs, message):
    with pytest.raises(BoxError, match=message):
        parse_box(value, **kwargs)
