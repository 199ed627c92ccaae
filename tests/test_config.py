"""The config system: YAML 1.2 scalars, strict typed overrides, inheritance, validation."""
from __future__ import annotations

import pytest

from segx.config import parse_yaml, schema
from segx.zoo.registry import CONFIG_DIR
from segx.zoo.registry import load_model_config as load_config
from segx.utils.errors import ConfigError


# (override, dotted key, expected value): every pitfall of the reference's `-o` parser
OVERRIDES = [
    ("Global.output=dir", "Global.output", "dir"),            # reference: builtin `dir`
    ("Global.output=print", "Global.output", "print"),        # reference: builtin `print`
    ("Global.output=on", "Global.output", "on"),              # reference: None
    ("Global.output=e", "Global.output", "e"),                # reference: None (substring bug)
    ("Global.output=08", "Global.output", "08"),              # a str key keeps the text
    ("Global.output=123", "Global.output", "123"),
    ("Global.output=__import__('os').getcwd()", "Global.output", "__import__('os').getcwd()"),
    ("Global.output='quoted dir'", "Global.output", "quoted dir"),
    ('Global.output="x=y"', "Global.output", "x=y"),
    ("Global.dataset_dir=null", "Global.dataset_dir", None),
    ("Global.dataset_dir=None", "Global.dataset_dir", None),
    ("Global.dataset_dir=~", "Global.dataset_dir", None),
    ("Global.dataset_dir=none", "Global.dataset_dir", "none"),  # only YAML/Python nulls
    ("Predict.input=https://h/x.png?a=1&b=2", "Predict.input", "https://h/x.png?a=1&b=2"),
    ("Predict.input=[a.png, b.png]", "Predict.input", ["a.png", "b.png"]),
    ("Train.learning_rate=1e-3", "Train.learning_rate", 0.001),
    ("Train.learning_rate=1", "Train.learning_rate", 1.0),
    ("Train.learning_rate=.5", "Train.learning_rate", 0.5),
    ("Train.epochs_iters=1e5", "Train.epochs_iters", 100000),
    ("Train.epochs_iters=1_000", "Train.epochs_iters", 1000),
    ("Train.epochs_iters=0x10", "Train.epochs_iters", 16),
    ("Train.num_classes=null", "Train.num_classes", None),
    ("Train.num_classes=3", "Train.num_classes", 3),
    ("Global.debug=true", "Global.debug", True),
    ("Global.debug=True", "Global.debug", True),
    ("Global.debug=FALSE", "Global.debug", False),
    ("Global.device=gpu:0,1", "Global.device", "gpu:0,1"),
    ("Train.transforms.1.crop_size=[256,256]", "Train.transforms.1.crop_size", [256, 256]),
    ("Train.transforms[1].crop_size=[64, 32]", "Train.transforms.1.crop_size", [64, 32]),
    ("Train.transforms.-1.type=Resize", "Train.transforms.4.type", "Resize"),
    ("Evaluate.scales=[0.75, 1.0, 1.25]", "Evaluate.scales", [0.75, 1.0, 1.25]),
    ("Train.optimizer.momentum=0.95", "Train.optimizer.momentum", 0.95),
    ("Train.optimizer.nesterov=true", "Train.optimizer.nesterov", True),   # free-form dict
    ("Arch.cm_out_ch=64", "Arch.cm_out_ch", 64),
    ("Global.mode=train", "Global.mode", "train"),
]


@pytest.mark.parametrize("option,key,expected", OVERRIDES, ids=[o[0] for o in OVERRIDES])
def test_override_typing(option, key, expected):
    cfg = load_config("PP-LiteSeg-T", [option])
    value = cfg.get(key)
    assert value == expected and type(value) is type(expected)


BAD = [
    ("Global.mod=train", "unknown key 'Global.mod'", "Global.mode"),
    ("Train.epoch_iters=10", "unknown key 'Train.epoch_iters'", "Train.epochs_iters"),
    ("Gobal.output=x", "unknown key 'Gobal'", "Global"),
    ("Train.batch_size=abc", "expected int, got 'abc'", "Train.batch_size"),
    ("Train.batch_size=2.5", "expected int, got 2.5", "Train.batch_size"),
    ("Train.learning_rate=fast", "expected float, got 'fast'", "Train.learning_rate"),
    ("Global.debug=on", "expected bool, got 'on'", "Global.debug"),
    ("Train.batch_size=null", "expected int, got None", "Train.batch_size"),
    ("Global.mode=serve", "one of check_dataset, train, evaluate, export, predict", "serve"),
    ("Train.transforms.9.crop_size=[1,1]", "not an index", "0 to 4"),
    ("Global.output", "expected Dotted.key=value", "Global.output"),
    ("Global.output.x=1", "is a value, not a section", "Global.output"),
]


@pytest.mark.parametrize("option,message,mention", BAD, ids=[b[0] for b in BAD])
def test_override_errors(option, message, mention):
    with pytest.raises(ConfigError) as err:
        load_config("PP-LiteSeg-T", [option])
    text = str(err.value)
    assert message in text and mention in text and "\n" not in text


def test_later_override_wins():
    cfg = load_config("PP-LiteSeg-T", ["Train.batch_size=4", "Train.batch_size=8"])
    assert cfg.get("Train.batch_size") == 8


def test_yaml_scalars_follow_yaml_1_2():
    data = parse_yaml("a: on\nb: 1e-3\nc: yes\nd: None\ne: 1.0e-6\nf: '1'\ng: 0.5\n")
    assert data == {"a": "on", "b": 0.001, "c": "yes", "d": None, "e": 1e-6, "f": "1", "g": 0.5}


def test_every_schema_key_is_documented_and_typed():
    specs = schema()
    assert {"Global", "CheckDataset", "Train", "Evaluate", "Export", "Predict"} <= set(specs)
    for spec in specs.values():
        assert spec.type and spec.doc, spec.path
    assert specs["Global.device"].default == "auto"


def test_model_yamls_hold_only_what_differs():
    for path in CONFIG_DIR.glob("*.yaml"):
        text = path.read_text()
        assert text.count("\n") <= 25, f"{path.name} repeats its base"
        assert "_base_: _base_/" in text


def test_defaults_are_usable_anywhere():
    cfg = load_config("PP-LiteSeg-T")
    assert cfg.get("Global.device") == "auto"
    assert cfg.get("Global.dataset_dir") is None
    assert cfg.get("Global.model") == "PP-LiteSeg-T"


def test_user_yaml_inherits_and_is_validated(tmp_path):
    good = tmp_path / "mine.yaml"
    good.write_text(f"_base_: {CONFIG_DIR / 'PP-LiteSeg-T.yaml'}\nTrain:\n  batch_size: 16\n")
    cfg = load_config(str(good))
    assert cfg.get("Train.batch_size") == 16 and cfg.get("Arch.type") == "PPLiteSeg"
    bad = tmp_path / "typo.yaml"
    bad.write_text(f"_base_: {CONFIG_DIR / 'PP-LiteSeg-T.yaml'}\nTrain:\n  bach_size: 16\n")
    with pytest.raises(ConfigError, match="unknown key 'Train.bach_size'.*Train.batch_size"):
        load_config(str(bad))
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(f"_base_: {CONFIG_DIR / 'PP-LiteSeg-T.yaml'}\nTrain:\n  batch_size: two\n")
    with pytest.raises(ConfigError, match="Train.batch_size='two' is not int"):
        load_config(str(wrong))
    broken = tmp_path / "broken.yaml"
    broken.write_text("Train:\n  batch_size: [1,\n")
    with pytest.raises(ConfigError, match="broken.yaml:.*invalid YAML"):
        load_config(str(broken))


def test_missing_config_file():
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("no/such/file.yaml")


def test_printed_config_loads_back(tmp_path):
    cfg = load_config("SegFormer-B1", ["Train.learning_rate=1e-4"])
    copy = tmp_path / "copy.yaml"
    copy.write_text(cfg.to_yaml())
    again = load_config(str(copy))
    assert again.data == cfg.data


def test_generated_docs_are_current():
    from segx.apps.docgen import DOCS, GENERATED
    for name, make in GENERATED.items():
        assert (DOCS / name).read_text() == make(), f"run `python -m segx.apps.docgen` ({name})"
