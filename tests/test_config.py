"""The typed config tree: YAML loading, ``--set`` overrides, errors that name the key, saving."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from stfn.config import (
    Config,
    ConfigError,
    HeadConfig,
    ModelConfig,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
)
from stfn.errors import StfnError


def write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_defaults():
    cfg = load_config()
    assert cfg == Config()
    assert cfg.model.arch == "stfn" and cfg.model.streams == ["rgb", "flow"] and cfg.model.head.blocks == 2
    assert cfg.model.fusion_weights == [1.0, 1.5]  # TSN: rgb:flow 1:1.5


def test_yaml_overrides_defaults_and_keeps_the_rest(tmp_path):
    p = write(tmp_path, """
name: mine
model:
  backbone: resnet50
  head:
    fusion: gated
    kernel_sizes: [3, 5]
train:
  lr: 0.1
""")
    cfg = load_config(p)
    assert cfg.name == "mine" and cfg.model.backbone == "resnet50"
    assert cfg.model.head.fusion == "gated" and cfg.model.head.kernel_sizes == [3, 5]
    assert cfg.model.head.blocks == HeadConfig().blocks  # untouched keys keep their defaults
    assert cfg.train.lr == 0.1 and cfg.train.epochs == Config().train.epochs
    assert isinstance(cfg.model.head, HeadConfig)


def test_empty_yaml_is_the_defaults(tmp_path):
    assert load_config(write(tmp_path, "# nothing here\n")) == Config()


def test_overrides_parse_values_and_win_over_yaml(tmp_path):
    p = write(tmp_path, "model:\n  num_classes: 51\n  head:\n    blocks: 4\n")
    cfg = load_config(p, [
        "model.head.blocks=3",
        "model.head.kernel_sizes=1,3,5,7",
        "model.head.dilations=[1, 1, 2, 2]",
        "model.streams=flow",
        "model.fusion_weights=1,2",
        "model.pretrained=true",
        "model.head.dropout=0.25",
        "train.lr=1e-3",
        "name=2024",
        "data.root=/data/ucf101 prepared",
        'data.class_names="names.txt"',
    ])
    assert cfg.model.num_classes == 51  # from the file
    assert cfg.model.head.blocks == 3  # the override wins
    assert cfg.model.head.kernel_sizes == [1, 3, 5, 7] and cfg.model.head.dilations == [1, 1, 2, 2]
    assert cfg.model.streams == ["flow"]
    assert cfg.model.fusion_weights == [1.0, 2.0] and all(isinstance(w, float) for w in cfg.model.fusion_weights)
    assert cfg.model.pretrained is True and cfg.model.head.dropout == 0.25
    assert cfg.train.lr == pytest.approx(1e-3)
    assert cfg.name == "2024"  # a string key keeps the text as written
    assert cfg.data.root == "/data/ucf101 prepared"
    assert cfg.data.class_names == "names.txt"  # YAML quotes are honoured


def test_yaml_exponent_without_dot_is_a_number(tmp_path):
    # PyYAML (YAML 1.1) reads "1e-3" as a string; a float key accepts it
    assert load_config(write(tmp_path, "train:\n  lr: 1e-3\n")).train.lr == pytest.approx(1e-3)


def test_int_is_accepted_for_float():
    cfg = config_from_dict({"train": {"lr": 1}})
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)


@pytest.mark.parametrize("text, key", [
    ("model:\n  head:\n    fusoin: sum\n", "model.head.fusoin"),
    ("model:\n  backbnoe: resnet18\n", "model.backbnoe"),
    ("modle:\n  arch: stfn\n", "modle"),
])
def test_unknown_yaml_key_is_named(tmp_path, text, key):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError, match=f"unknown config key '{key}'") as e:
        load_config(p)
    assert str(p) in str(e.value)
    assert isinstance(e.value, StfnError)


@pytest.mark.parametrize("override, key", [
    ("model.head.fusoin=sum", "model.head.fusoin"),
    ("model.nope.deeper=1", "model.nope"),
    ("trian.lr=0.1", "trian"),
    ("model.arch.x=1", "model.arch"),
])
def test_unknown_override_key_is_named(override, key):
    with pytest.raises(ConfigError, match=f"unknown config key '{key}'"):
        load_config(None, [override])


@pytest.mark.parametrize("text, key, what", [
    ("model:\n  head:\n    blocks: two\n", "model.head.blocks", "integer"),
    ("model:\n  head:\n    blocks: 2.5\n", "model.head.blocks", "integer"),
    ("model:\n  num_classes: true\n", "model.num_classes", "integer"),
    ("model:\n  pretrained: 1\n", "model.pretrained", "true or false"),
    ("model:\n  backbone: 18\n", "model.backbone", "string"),
    ("model:\n  streams: rgb\n", "model.streams", "list"),
    ("model:\n  head:\n    kernel_sizes: [1, three]\n", r"model.head.kernel_sizes\[1\]", "integer"),
    ("train:\n  lr: fast\n", "train.lr", "number"),
    ("model: 3\n", "model", "mapping"),
    ("model:\n  head: [1, 2]\n", "model.head", "mapping"),
])
def test_wrong_type_is_named(tmp_path, text, key, what):
    with pytest.raises(ConfigError, match=f"config key '{key}' must be (an? )?{what}"):
        load_config(write(tmp_path, text))


def test_wrong_type_in_override_is_named():
    with pytest.raises(ConfigError, match="config key 'model.head.blocks' must be an integer"):
        load_config(None, ["model.head.blocks=many"])
    with pytest.raises(ConfigError, match="config key 'model.pretrained' must be true or false"):
        load_config(None, ["model.pretrained=maybe"])


@pytest.mark.parametrize("override, match", [("model.head.blocks", "must look like key.path=value"),
                                             ("=3", "empty key")])
def test_malformed_override(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, [override])


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "model: [unclosed\n"))
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))


def test_save_and_load_round_trip(tmp_path):
    cfg = load_config(None, ["model.arch=tsn", "model.head.kernel_sizes=3,5", "data.frames=25", "train.lr=0.005"])
    out = tmp_path / "run" / "config.yaml"
    save_config(cfg, out)
    assert load_config(out) == cfg
    assert yaml.safe_load(out.read_text()) == config_to_dict(cfg)
    assert sorted(p.name for p in out.parent.iterdir()) == ["config.yaml"]  # no temporary file left
    save_config(dataclasses.replace(cfg, name="second"), out)  # replaces the old file atomically
    assert load_config(out).name == "second"


def test_config_from_dict_and_to_dict():
    assert config_from_dict(None) == Config()
    d = config_to_dict(Config(model=ModelConfig(num_classes=51)))
    assert d["model"]["num_classes"] == 51 and d["model"]["head"]["fusion"] == "sum"
    assert config_from_dict(d) == Config(model=ModelConfig(num_classes=51))
    with pytest.raises(ConfigError, match="mapping of sections"):
        config_from_dict([1, 2])


@pytest.mark.parametrize(("override", "message"), [
    ("train.lr=-0.1", "config key 'train.lr' must be > 0, got -0.1"),
    ("train.lr=0", "config key 'train.lr' must be > 0, got 0.0"),
    ("train.momentum=-0.5", "config key 'train.momentum' must be >= 0 and < 1, got -0.5"),
    ("train.weight_decay=-1e-4", "config key 'train.weight_decay' must be >= 0, got -0.0001"),
    ("train.label_smoothing=1.0", "config key 'train.label_smoothing' must be >= 0 and < 1, got 1.0"),
    ("train.backbone_lr_mult=-1", "config key 'train.backbone_lr_mult' must be >= 0, got -1.0"),
    ("data.num_workers=-2", "config key 'data.num_workers' must be >= 0, got -2"),
])
def test_values_pytorch_would_refuse_are_refused_naming_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match="^" + re.escape(message) + "$"):
        load_config(None, [override])
    load_config(None, ["train.momentum=0", "train.label_smoothing=0.1", "train.backbone_lr_mult=0"])  # edges


def test_a_config_file_that_is_not_utf8_is_one_sentence(tmp_path) -> None:
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("# réglages\ntrain:\n  lr: 0.01\n".encode("latin-1"))
    utf16 = tmp_path / "utf16.yaml"
    utf16.write_text("train:\n  lr: 0.01\n", encoding="utf-16")  # what Notepad may save
    for path in (latin1, utf16):
        with pytest.raises(ConfigError, match=rf"config file '{re.escape(str(path))}' is not UTF-8 text .*save it as UTF-8"):
            load_config(path)
