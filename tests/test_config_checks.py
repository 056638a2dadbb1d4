"""Every config value is checked when the config is read: one ConfigError line naming the dotted key (issue 14,
principle 6). Nothing here trains or builds a model."""

from __future__ import annotations

import pytest
import yaml

from clipseg_lab.cli import main
from clipseg_lab.configuration import ConfigLoader, load_yaml
from clipseg_lab.engine.config import TrainConfig
from clipseg_lab.errors import ConfigError
from clipseg_lab.zeroshot.config import load_config, parse_assignments
from tests.conftest import REPO

ZEROSHOT = REPO / "configs" / "zeroshot"


def _nested(dotted: str, value) -> dict:
    """{"optim.lr": 1} -> {"optim": {"lr": 1}}"""
    *parents, last = dotted.split(".")
    data = out = {}
    for p in parents:
        data = data.setdefault(p, {})
    data[last] = value
    return out


# -- training configs -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("key,value,allowed", [
    ("epochs", 0, "an integer >= 1"),  # 0 only with model.init_from (below)
    ("epochs", -3, "an integer >= 0"),
    ("epochs", "two", "an integer >= 0"),
    ("epochs", 2.5, "an integer >= 0"),
    ("epochs", True, "an integer >= 0"),
    ("batch_size", 0, "an integer >= 1"),
    ("seed", "0", "an integer"),
    ("amp", 1, "true or false"),
    ("threshold", 1.5, "a number in [0, 1]"),
    ("threshold", float("nan"), "a number in [0, 1]"),
    ("patience", 0, "an integer >= 1 or null"),
    ("snapshot_samples", -1, "an integer >= 0"),
    ("max_seconds", 0, "a number > 0 or null"),
    ("out_dir", None, "a folder name"),
    ("out_dir", " ", "a folder name"),
    ("loss_options", [1], "a mapping"),
    ("optim.lr", -0.01, "a number > 0"),
    ("optim.lr", 0, "a number > 0"),
    ("optim.lr", "1e-3", "a number > 0"),  # a quoted number is a string
    ("optim.weight_decay", -1e-4, "a number >= 0"),
    ("optim.poly_power", 0, "a number > 0"),
    ("optim.grad_clip", 0, "a number > 0 or null"),
    ("optim.optimizer", "sgd", "one of adam, adamw"),
    ("optim.schedule", "step", "one of poly, cosine, constant"),
    ("model.input_size", 0, "an integer >= 1 or null"),
    ("model.options", "dropout=0", "a mapping"),
    ("model.init_from", 3, "a string or null"),
    ("data.negatives", 1.0, "a share in [0, 1)"),
    ("data.negatives", -0.1, "a share in [0, 1)"),
    ("data.train_subset", 0, "an integer >= 1 or null"),
    ("data.val_subset", -5, "an integer >= 1 or null"),
    ("data.num_workers", -1, "an integer >= 0"),
    ("data.train_split", 1, "a string"),
])
def test_a_bad_training_value_names_its_key_the_value_and_what_is_allowed(key, value, allowed):
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_dict(_nested(key, value))
    message = str(err.value)
    assert message.startswith(f"{key}: ") and "is not allowed" in message and allowed in message, message
    assert "\n" not in message


@pytest.mark.parametrize("data,match", [
    ({"model": {"name": "clipseg-rd65"}}, r"^model\.name: unknown model 'clipseg-rd65'; did you mean 'clipseg-rd64'"),
    ({"model": {"backbone": "ViT-B/17"}}, r"^model\.backbone: unknown backbone 'ViT-B/17'; did you mean 'ViT-B/16'"),
    ({"model": 3}, r"^model: 3 is not allowed; a mapping of name, backbone"),
    ({"loss": "bcee"}, r"^loss: 'bcee' is not allowed; one of bce, dice, focal, bce\+dice"),
    ({"loss": "ce"}, r"^loss: 'ce' does not fit clipseg-rd64 \(binary targets\)"),
    ({"loss": "focal", "loss_options": {"gama": 2}}, r"^loss_options: gama is not an option of focal; known: alpha"),
    ({"monitor": "val_loss"}, r"^monitor: 'val_loss' is not allowed for clipseg-rd64 \(binary\); one of iou_fg"),
    ({"monitor": "iou_fg", "loss": "ce", "model": {"name": "clip-unet"}}, r"^monitor: 'iou_fg' .* one of miou"),
    ({"device": "cdua"}, r"^device: 'cdua' is not allowed; a torch device"),
    ({"data": {"dataset": "phrasecu", "root": "x"}}, r"^data\.dataset: 'phrasecu' .*did you mean 'phrasecut'"),
    ({"data": {"dataset": "phrasecut"}}, r"^data\.root: required for dataset phrasecut; the folder or annotation file"),
    ({"data": {"dataset": "folder", "root": None}}, r"^data\.root: required for dataset folder"),
])
def test_names_and_required_fields(data, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig.from_dict(data)


def test_good_values_pass():
    config = TrainConfig.from_dict({"epochs": 1, "optim": {"lr": 1, "grad_clip": None, "schedule": "constant"},
                                    "threshold": 0, "data": {"negatives": 0.2}, "monitor": "ap", "device": "cuda:1",
                                    "model": {"init_from": None, "input_size": 224}, "loss_options": {}})
    assert config.optim.lr == 1 and config.validate() is config
    assert TrainConfig.from_dict({"data": {"dataset": "phrasecut", "root": "not/made/yet"}}).data.root  # not checked
    assert TrainConfig.from_dict({"model": None}).model.name == "clipseg-rd64"  # `model:` with nothing below it
    config.epochs = 0  # validate() again after changing a field
    with pytest.raises(ConfigError, match="^epochs: 0"):
        config.validate()


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_repository_configs_parse_and_round_trip(path, tmp_path):
    config = TrainConfig.from_yaml(path)
    config.to_yaml(tmp_path / "again.yaml")
    assert TrainConfig.from_yaml(tmp_path / "again.yaml") == config


# -- YAML -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,number", [("1e-3", 0.001), ("5E-4", 0.0005), ("1e3", 1000.0), ("-2e-5", -2e-5),
                                         ("+1.0e3", 1000.0), (".5e1", 5.0), ("1.5e-3", 0.0015)])
def test_yaml_1_2_floats_are_numbers(text, number):
    value = yaml.load(f"x: {text}", Loader=ConfigLoader)["x"]
    assert isinstance(value, float) and value == pytest.approx(number)


@pytest.mark.parametrize("text,value", [("3", 3), ("0.5", 0.5), ("e3", "e3"), ("1e", "1e"), ("'1e-3'", "1e-3"),
                                        ("1_000", 1000), ("null", None)])
def test_other_scalars_are_read_as_before(text, value):
    got = yaml.load(f"x: {text}", Loader=ConfigLoader)["x"]
    assert got == value and type(got) is type(value)


def test_the_global_safe_loader_is_untouched():
    assert yaml.safe_load("x: 1e-3")["x"] == "1e-3"


def test_lr_1e_3_in_a_file_is_a_float(tmp_path):
    (tmp_path / "c.yaml").write_text("optim: {lr: 1e-3, weight_decay: 5E-4}\nmax_seconds: 1e3\n")
    config = TrainConfig.from_yaml(tmp_path / "c.yaml")
    assert config.optim.lr == 0.001 and config.optim.weight_decay == 0.0005 and config.max_seconds == 1000.0
    assert parse_assignments(["background.threshold=1e-1"]) == {"background.threshold": 0.1}


@pytest.mark.parametrize("text", ["", "# only a comment\n", "null\n", "---\n", "{}\n"])
def test_an_empty_file_is_an_error(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"^{path}: the config is empty; start from one in configs/ \(e\.g\. "
                                          r"configs/smoke_synthetic_clipseg\.yaml\)"):
        TrainConfig.from_yaml(path)
    assert (REPO / "configs" / "smoke_synthetic_clipseg.yaml").is_file()  # the example named exists
    with pytest.raises(ConfigError, match=rf"^{path}: the config is empty.*configs/zeroshot/potsdam\.yaml"):
        load_config(path)


@pytest.mark.parametrize("text", ["- epochs: 2\n", "epochs\n", "3\n"])
def test_a_top_level_that_is_not_a_mapping_is_an_error(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    for read in (TrainConfig.from_yaml, load_config):
        with pytest.raises(ConfigError, match=rf"^{path}: the config must be a mapping"):
            read(path)


def test_unreadable_files_name_the_path(tmp_path):
    (tmp_path / "bad.yaml").write_text("epochs: [1\n")
    with pytest.raises(ConfigError, match=rf"^{tmp_path / 'bad.yaml'}: cannot read the config"):
        load_yaml(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match=rf"^{tmp_path / 'missing.yaml'}: cannot read the config"):
        TrainConfig.from_yaml(tmp_path / "missing.yaml")


def test_a_yaml_error_names_the_file_and_key(tmp_path):
    (tmp_path / "c.yaml").write_text("epochs: 0\n")
    with pytest.raises(ConfigError, match=rf"^{tmp_path / 'c.yaml'}: epochs: 0 is not allowed without "
                                          r"model.init_from; an integer >= 1 "):
        TrainConfig.from_yaml(tmp_path / "c.yaml")


# -- zero-shot configs ------------------------------------------------------------------------------------------
def _potsdam() -> dict:
    return yaml.safe_load((ZEROSHOT / "potsdam.yaml").read_text())


@pytest.mark.parametrize("key,value,allowed", [
    ("output.visualizations_subdir", "../elsewhere", "a relative path inside output.base_dir"),
    ("output.visualizations_subdir", "vis/../../elsewhere", "a relative path inside output.base_dir"),
    ("output.visualizations_subdir", "/tmp/vis", "a relative path inside output.base_dir"),
    ("output.visualizations_subdir", "~/vis", "a relative path inside output.base_dir"),
    ("output.visualizations_subdir", "", "a relative path inside output.base_dir"),
    ("output.visualizations_subdir", ".", "a relative path inside output.base_dir"),
    ("output.base_dir", "", "a folder name"),
    ("output.overlay_alpha", 2, "a number in [0, 1]"),
    ("input.target_image_name", "../x.png", "a relative path inside each tile folder"),
    ("input.label_name", "/etc/L.png", "a relative path inside each tile folder"),
    ("input.layout", "flat", "one of auto, reseg, mmseg"),
    ("input.coding", "isprs", "one of isprs-colour, isprs-index"),
    ("input.bands", "RGBI", "one of RGB, IRRG, or a list of band indices"),
    ("input.bands", [0, -1, 2], "one of RGB, IRRG, or a list of band indices"),
    ("logit_scale", 0, "a number > 0"),
    ("logit_scale", "50", "a number > 0"),
    ("seed", 1.5, "an integer"),
    ("classes", "road", "a list of strings"),
    ("templates", 3, "a string or a list of strings"),
    ("background.threshold", 1.5, "a probability in [0, 1]"),
    ("background.class", 5, "a string or null"),
    ("palette", [[0, 0, 0]] * 5 + [[0, 0, 256]], "a list of [r, g, b] colours (0..255)"),
    ("dense.gaussian_std", 0, "a number > 0"),
    ("dense.cls_token_lambda", "0.3", "a number"),
    ("sliding.short_side", 0, "an integer >= 1 or null"),
    ("sliding.window", 0, "an integer >= 1"),
    ("sliding.batch_size", 0, "an integer >= 1"),
    ("attention.num_neighbor_attention_layers", -1, "an integer >= 0"),
    ("attention.neighbourhood_radius", -1, "an integer >= 0"),
    ("attention.min_region_area", -1, "an integer >= 0"),
    ("attention.outside_regions", "all", "one of neighbourhood, self, global"),
    ("attention.cls_token", "none", "one of global, isolated"),
    ("attention.sam_mode", "each", "one of merged, per_layer"),
    ("model.img_size", 0, "an integer >= 1 or null"),
    ("model.sam_model_type", "vit_s", "one of vit_h, vit_l, vit_b or null"),
    ("model.dtype", "fp16", "one of float32, float16, bfloat16 or null"),
    ("model.clip_model_name", None, "a string"),
])
def test_a_bad_zero_shot_value_names_the_file_and_key(tmp_path, key, value, allowed):
    data = _potsdam()
    *parents, last = key.split(".")
    section = data
    for p in parents:
        section = section[p]
    section[last] = value
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert message.startswith(f"{path}: {key}: ") and "is not allowed" in message and allowed in message, message


@pytest.mark.parametrize("name", sorted(p.name for p in ZEROSHOT.glob("*.yaml")))
def test_shipped_zero_shot_configs_load(name):
    load_config(ZEROSHOT / name)


def test_a_nested_visualizations_subdir_is_fine(tmp_path):
    data = _potsdam()
    data["output"]["visualizations_subdir"] = "vis/run1"
    data["logit_scale"] = 1e2  # written by safe_dump as 100.0
    (tmp_path / "c.yml").write_text(yaml.safe_dump(data))
    assert load_config(tmp_path / "c.yml").output.visualizations_subdir == "vis/run1"


# -- the CLI: one error line ------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,key", [("epochs: -3\n", "epochs"), ("optim: {lr: -0.01}\n", "optim.lr"),
                                      ("", "the config is empty"), ("data: {dataset: phrasecut}\n", "data.root")])
def test_cli_train_prints_one_error_line(tmp_path, capsys, text, key):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    assert main(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {path}: ") and key in err[0], err


@pytest.mark.parametrize("key,value", [("output.visualizations_subdir", "../out"), ("sliding.window", 0)])
def test_cli_rs_infer_prints_one_error_line(tmp_path, capsys, key, value):
    data = _potsdam()
    section, last = key.split(".")
    data[section][last] = value
    path = tmp_path / "c.yml"
    path.write_text(yaml.safe_dump(data))
    assert main(["rs-infer", "--config", str(path), "--input", str(tmp_path), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {path}: {key}: ") and not (tmp_path / "o").exists(), err
