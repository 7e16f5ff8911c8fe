"""The fast GPU variant changes precision, layout and compilation only; the paper preset stays
faithful."""

from ihl import config


def test_fast_variant_differs_from_the_paper_preset_only_in_precision_layout_and_compile():
    paper = config.flatten(config.to_dict(config.load("coco_res50")))
    fast = config.flatten(config.to_dict(config.load("coco_res50_fast")))
    assert paper["train.amp"] == "off" and paper["train.channels_last"] is False
    assert paper["train.compile"] is False
    changed = {key: fast[key] for key in paper if paper[key] != fast[key]}
    assert changed == {
        "name": "coco_res50_fast",
        "train.amp": "bf16",
        "train.channels_last": True,
        "train.compile": True,
    }
