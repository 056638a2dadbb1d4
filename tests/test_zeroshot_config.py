"""Zero-shot configs (the shipped ones and bad ones), the text side, and the metrics on a hand-made confusion matrix."""

from __future__ import annotations

import math

import pytest
import torch
import yaml

from clipseg_lab.errors import ConfigError
from clipseg_lab.zeroshot.config import load_config, parse_assignments, prepare_config, with_overrides
from clipseg_lab.zeroshot.pipeline import tile_metrics
from clipseg_lab.zeroshot.text import (
    build_query_set,
    class_probabilities,
    encode_queries,
    predict_classes,
    resolve_templates,
)
from tests.conftest import REPO

CONFIGS = REPO / "configs" / "zeroshot"


def _write(tmp_path, data: dict, name: str = "config.yml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _potsdam() -> dict:
    return yaml.safe_load((CONFIGS / "potsdam.yaml").read_text())


# -- the shipped configs --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["potsdam", "vaihingen", "loveda", "openearthmap", "reseg_clip"])
def test_shipped_configs_load_with_reseg_clip_settings(name):
    config = load_config(CONFIGS / f"{name}.yaml")
    assert config.model.clip_model_name == "ViT-L/14" and config.model.sam_model_type == "vit_h"
    att = config.attention
    assert (att.num_initial_layers, att.num_neighbor_attention_layers, att.num_sam_attention_layers) == (18, 2, 4)
    assert config.model.num_classes == len(config.classes) and config.model.patch_size == 14
    queries = config.query_set()
    assert set(queries.query_class) | ({config.background_index} - {None}) == set(range(len(config.classes)))


def test_segearth_ov_class_lists_are_kept_exactly():
    """SegEarth-OV's cls_potsdam.txt and cls_vaihingen.txt differ: each is kept as it is."""
    potsdam, vaihingen = load_config(CONFIGS / "potsdam.yaml"), load_config(CONFIGS / "vaihingen.yaml")
    assert potsdam.classes == vaihingen.classes == ["impervious surface", "building", "low vegetation", "tree", "car",
                                                    "clutter"]
    qs = potsdam.query_set()
    lines = {q: potsdam.classes[c] for q, c in zip(qs.queries, qs.query_class)}
    assert lines == {"road": "impervious surface", "parking lot": "impervious surface", "building": "building",
                     "low vegetation": "low vegetation", "tree": "tree", "car": "car", "clutter": "clutter",
                     "background": "clutter"}
    assert vaihingen.query_set().queries == tuple(vaihingen.classes)  # one query per class, the ISPRS names
    for config in (potsdam, vaihingen):  # prob_thd 0.1, bg_idx 5, 448 / 224 / 112, 80 templates
        assert (config.background.class_name, config.background.threshold) == ("clutter", 0.1)
        assert (config.sliding.short_side, config.sliding.window, config.sliding.stride) == (448, 224, 112)
        assert len(resolve_templates(config.templates)) == 80
    loveda = load_config(CONFIGS / "loveda.yaml")
    assert loveda.query_set().queries_of("building") == ["building", "roof", "house"]
    assert (loveda.background.class_name, loveda.background.threshold) == ("background", 0.3)


# -- bad configs ----------------------------------------------------------------------------------------------
def test_query_to_class_naming_an_unknown_query(tmp_path):
    data = _potsdam()
    data["query_to_class"]["parking lots"] = "impervious surface"
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message and "'parking lots'" in message and "not in text_queries" in message
    assert "fix its spelling" in message


@pytest.mark.parametrize("change,match", [
    (lambda d: d["query_to_class"].update({"car": "vehicle"}), "unknown class 'vehicle'"),
    (lambda d: d["query_to_class"].pop("car"), r"no class in query_to_class: \['car'\]"),
    (lambda d: d["query_to_class"].update({"9": "car"}), r"query #9.*8 queries"),
    (lambda d: d["label_to_class"].update({7: "water"}), "unknown class 'water'"),
    (lambda d: d.update(class_mapping={0: "road"}), "split into query_to_class .* and label_to_class"),
    (lambda d: d["sliding"].update(stride=300), "stride 300 is larger than the window 224"),
    (lambda d: d["model"].update(num_classes=7), "num_classes is 7 but 6 classes"),
    (lambda d: d["dense"].update(variant="segclip"), "unknown dense-feature variant"),
    (lambda d: d["attention"].update(sam_param_sets=[{"points_per_sid": 8}]), "unknown SamAutomaticMaskGenerator"),
    (lambda d: d["attention"].update(num_neighbour_attention_layers=2), "did you mean 'num_neighbor_attention_layers'"),
    (lambda d: d["background"].update({"class": "shadow"}), "background.class 'shadow' is not one of the classes"),
])
def test_bad_configs_name_the_file_and_the_problem(tmp_path, change, match):
    data = _potsdam()
    change(data)
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError, match=match) as err:
        load_config(path)
    assert str(path) in str(err.value)


def test_overrides(tmp_path):
    sets = parse_assignments(["sliding.stride=56", "templates=none", "attention.sam_param_sets=[{points_per_side: 4}]"])
    config = prepare_config(CONFIGS / "potsdam.yaml", backbone="tiny-random", sam="tiny-random", layers="8,2,2",
                            input_dir=tmp_path, overrides=sets)
    assert config.model.clip_model_name == "tiny-random" and config.model.patch_size is None
    assert config.model.sam_checkpoint == "tiny-random" and config.sliding.stride == 56 and config.templates == "none"
    assert config.attention.num_initial_layers == 8 and config.attention.sam_param_sets == [{"points_per_side": 4}]
    assert config.input.dir == str(tmp_path) and config.classes == load_config(CONFIGS / "potsdam.yaml").classes
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_assignments(["sliding.stride"])
    with pytest.raises(ConfigError, match=r"unknown key 'strid' \(did you mean 'stride'\?\)"):
        with_overrides(config, **{"sliding.strid": 3})
    with pytest.raises(ConfigError, match="three integers"):
        prepare_config(config, layers="8,2")


# -- the text side --------------------------------------------------------------------------------------------
def test_query_set_from_a_mapping_and_from_positions():
    qs = build_query_set(["road", "water"], {"road": ["street", "highway"], "water": "river"})
    assert qs.queries == ("street", "highway", "river") and qs.query_class == (0, 0, 1)
    seed_style = build_query_set(["road", "water"], ["street", "river"], {0: "road", 1: 1})  # the seed's indices
    assert seed_style.query_class == (0, 1)
    with pytest.raises(ConfigError, match="no text query for the class"):
        build_query_set(["road", "water", "other"], ["street", "river"], {"street": "road", "river": "water"})
    assert build_query_set(["road", "other"], ["street"], {"street": "road"}, background="other").num_classes == 2
    with pytest.raises(ConfigError, match="mapping, so query_to_class must be left out"):
        build_query_set(["road"], {"road": ["street"]}, {"street": "road"})


def test_class_probabilities_take_the_best_query_and_background_threshold():
    logits = torch.tensor([[0.30, 0.10], [0.29, 0.10], [0.10, 0.105]])  # 3 queries x 2 pixels
    probs = class_probabilities(logits, [0, 0, 1], 3, logit_scale=50.0)  # class 2 has no query
    soft = (logits * 50).softmax(0)
    assert torch.allclose(probs[0], torch.maximum(soft[0], soft[1])) and torch.allclose(probs[1], soft[2])
    assert torch.equal(probs[2], torch.zeros(2))
    # class 0's best query beats class 1 on the first pixel; on the second class 0's two queries split its
    # probability, so class 1 (one query) wins with ~0.39: the maximum over queries, not their sum
    assert predict_classes(probs).tolist() == [0, 1]
    # the second pixel is unsure (best probability ~0.39 < 0.4): it goes to the background class 2
    assert predict_classes(probs, background=2, threshold=0.4).tolist() == [0, 2]


def test_template_ensembling_averages_normalised_embeddings(tiny_backbone):
    templates = resolve_templates(["a photo of {}.", "an aerial view of {}."])
    got = encode_queries(tiny_backbone, ["road", "a tree"], templates)
    prompts = ["a photo of road.", "an aerial view of road.", "a photo of a tree.", "an aerial view of a tree."]
    each = torch.nn.functional.normalize(tiny_backbone.encode_text(prompts).float(), dim=-1)
    expected = torch.nn.functional.normalize(each.view(2, 2, -1).mean(1), dim=-1)
    assert torch.allclose(got, expected, atol=1e-6)
    with pytest.raises(ConfigError, match="exactly one"):
        resolve_templates(["no slot", "{} and {}"])
    with pytest.raises(ConfigError, match="unknown template set"):
        resolve_templates("imagenet-81")


# -- metrics --------------------------------------------------------------------------------------------------
def test_metrics_on_a_hand_made_confusion_matrix():
    # rows: truth, columns: prediction; class 3 never occurs in truth nor prediction
    cm = torch.tensor([[5, 1, 0, 0],
                       [2, 3, 1, 0],
                       [0, 1, 4, 0],
                       [0, 0, 0, 0]])
    m = tile_metrics(cm, ["a", "b", "c", "d"])
    iou = {"a": 5 / 8, "b": 3 / 8, "c": 4 / 6}  # tp / (tp + fp + fn)
    f1 = {"a": 10 / 13, "b": 6 / 11, "c": 8 / 10}  # 2 tp / (2 tp + fp + fn)
    assert m["oa"] == pytest.approx(12 / 17) and m["pixels"] == 17
    for name in "abc":
        assert m["per_class"][name]["iou"] == pytest.approx(iou[name])
        assert m["per_class"][name]["f1"] == pytest.approx(f1[name])
    assert m["per_class"]["a"]["precision"] == pytest.approx(5 / 7)
    assert m["per_class"]["a"]["recall"] == pytest.approx(5 / 6)
    assert m["per_class"]["d"]["iou"] is None and m["per_class"]["d"]["f1"] is None  # absent: left out of the means
    assert m["miou"] == pytest.approx(sum(iou.values()) / 3) and m["mf1"] == pytest.approx(sum(f1.values()) / 3)
    assert tile_metrics(torch.zeros(2, 2, dtype=torch.long), ["a", "b"]) is None  # no labelled pixel


def test_metrics_agree_with_torchmetrics():
    from torchmetrics.functional.classification import (
        multiclass_accuracy,
        multiclass_f1_score,
        multiclass_jaccard_index,
    )

    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 5, (4000,), generator=g)
    pred = torch.where(torch.rand(4000, generator=g) < 0.6, target, torch.randint(0, 5, (4000,), generator=g))
    target[:300] = 255  # ignored
    from clipseg_lab.metrics import SegmentationMetrics

    sm = SegmentationMetrics(5)
    sm.update(pred[None], target[None])
    m = tile_metrics(sm.confusion, list("abcde"))
    kw = dict(num_classes=5, ignore_index=255)
    assert m["oa"] == pytest.approx(float(multiclass_accuracy(pred, target, average="micro", **kw)))
    assert m["miou"] == pytest.approx(float(multiclass_jaccard_index(pred, target, average="macro", **kw)))
    assert m["mf1"] == pytest.approx(float(multiclass_f1_score(pred, target, average="macro", **kw)))
    per_iou = multiclass_jaccard_index(pred, target, average="none", **kw)
    assert [m["per_class"][c]["iou"] for c in "abcde"] == pytest.approx(per_iou.tolist())
    assert not any(math.isnan(m["per_class"][c]["f1"]) for c in "abcde")
