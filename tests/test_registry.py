"""The model zoo: every YAML is a model that builds and runs a forward pass on CPU."""
from __future__ import annotations

import numpy as np
import pytest

from segx.zoo.registry import load_model_config as load_config
from segx.utils.errors import ConfigError, UnknownModelError, WeightsError
from segx.zoo.registry import list_models, model_config_path

REQUIRED = [
    "Deeplabv3-R50", "Deeplabv3-R101", "Deeplabv3_Plus-R50", "Deeplabv3_Plus-R101",
    "OCRNet_HRNet-W18", "OCRNet_HRNet-W48", "PP-LiteSeg-T", "PP-LiteSeg-B",
    *[f"SegFormer-B{i}" for i in range(6)],
    "SeaFormer_tiny", "SeaFormer_small", "SeaFormer_base", "SeaFormer_large",
    "BiSeNetV2", "LRASPP-MobileNetV3_large_x1_0", "LRASPP-MobileNetV3_large_x1_0_os8",
    "Fast-SCNN", "U-Net", "Attention_U-Net", "U-Net++", "U-Net3+", "U2-Net", "U2-Net-p",
    "FCN_HRNet-W18", "FCN_HRNet-W48",
    *[f"{m}-R{d}" for m in ("PSPNet", "ANN", "DANet", "GCNet", "EMANet", "ISANet", "DNLNet")
      for d in (50, 101)],
    "SFNet-R18", "SFNet-R50", "DecoupledSegNet-R50", "DecoupledSegNet-R101", "GSCNN-R50",
    "HarDNet", "FCN_ShuffleNetV2_x1_0",
]


def test_registry_holds_the_zoo():
    assert set(REQUIRED) <= set(list_models())


def test_patterns():
    assert list_models("SegFormer-B*") == [f"SegFormer-B{i}" for i in range(6)]
    assert list_models("liteseg") == ["PP-LiteSeg-B", "PP-LiteSeg-T"]
    assert list_models("nothing-like-this") == []


def test_unknown_model_suggests():
    with pytest.raises(UnknownModelError, match="Did you mean PP-LiteSeg-T"):
        model_config_path("PP-LiteSeg-X")
    assert model_config_path("pp-liteseg-t").stem == "PP-LiteSeg-T"


def _zoo() -> list:
    """Every model; those above 5 M parameters (seconds each on a CPU, most of the suite's
    time) are slow, so ``make test-fast`` builds the small models of the zoo and ``make test``
    all of them."""
    from segx.zoo.registry import model_info
    return [pytest.param(n, marks=pytest.mark.slow) if (model_info(n).params_m or 0) > 5 else n
            for n in list_models()]


@pytest.mark.parametrize("name", _zoo())
def test_model_builds_and_runs(name):
    from segx import backend
    cfg = load_config(name)
    assert cfg.get("Global.model") == name and cfg.get("Arch.type")
    model = backend.build_model(cfg["Arch"], num_classes=19)
    assert backend.count_params(model) / 1e6 == pytest.approx(cfg.get("Meta.params_m"), abs=0.01)
    size = cfg.get("Meta.min_input")
    train_outs = backend.forward_random(model, size, 2 * size, train=True)
    # one loss per training output, or the train loop would silently drop terms
    assert len(train_outs) == len(cfg.get("Train.losses.types")) == len(cfg.get("Train.losses.coef"))
    (logits, *_) = backend.forward_random(model, size, 2 * size, train=False)
    assert logits.shape == (1, 19, size, 2 * size)
    assert np.isfinite(logits).all()


def test_seaformer_matches_paper_sizes():
    """SeaFormer is segx's own implementation; the paper gives 1.7/4.0/8.6/14.0 M parameters."""
    for name, paper in [("SeaFormer_tiny", 1.7), ("SeaFormer_small", 4.0),
                        ("SeaFormer_base", 8.6), ("SeaFormer_large", 14.0)]:
        assert load_config(name).get("Meta.params_m") == pytest.approx(paper, abs=0.06)


def test_bad_arch_argument_suggests():
    from segx import backend
    cfg = load_config("PP-LiteSeg-T", ["Arch.arm_out_chz=[1,2,3]"])
    with pytest.raises(ConfigError, match="PPLiteSeg has no argument 'arm_out_chz'.*arm_out_chs"):
        backend.build_model(cfg["Arch"], 2)
    cfg = load_config("PP-LiteSeg-T", ["Arch.backbone.type=STDC3"])
    with pytest.raises(ConfigError, match="Arch.backbone.type='STDC3'.*STDC1"):
        backend.build_model(cfg["Arch"], 2)


def test_pretrained_never_downloads_silently(tmp_path, monkeypatch):
    from segx.zoo import weights
    monkeypatch.setenv("SEGX_HOME", str(tmp_path))
    url = "http://127.0.0.1:9/x.pdparams"
    target = weights.entry_dir(url) / "x.pdparams"
    with pytest.raises(WeightsError, match=rf"cannot download .* put it at {target}"):
        weights.fetch(url)
    # a file placed in the cache is used without any network
    assert not target.exists() and not list(target.parent.glob("*.part"))  # nothing half-done
    target.write_bytes(b"weights")
    assert weights.fetch(url) == target


def test_full_checkpoint_loads_into_seaformer(tmp_path):
    import paddle
    from segx import backend
    cfg = load_config("SeaFormer_tiny")
    src = backend.build_model(cfg["Arch"], 3)
    paddle.save(src.state_dict(), str(tmp_path / "m.pdparams"))
    dst = backend.build_model(cfg["Arch"], 3)
    loaded, skipped = backend.load_matching(dst, backend.load_weights(tmp_path / "m.pdparams"))
    assert skipped == [] and loaded == len(src.state_dict())
    for k, v in src.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), dst.state_dict()[k].numpy())


def test_partial_load_reports_instead_of_one_warning_per_tensor(tmp_path):
    # a backbone-only file leaves the head out: paddle would warn once per missing tensor
    import warnings
    from segx import backend
    cfg = load_config("PP-LiteSeg-T")
    model = backend.build_model(cfg["Arch"], 2)
    state = {k: v.numpy() for k, v in model.state_dict().items() if "seg_heads" not in k}
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        loaded, skipped = backend.load_matching(model, state)
    assert loaded == len(state) and skipped == []
    assert not [w for w in seen if "Skip loading" in str(w.message)]


def test_a_model_with_named_parameters_builds_twice_in_one_process():
    # training builds the network again for its final export; ShuffleNetV2 names its
    # parameters explicitly, which paddle refuses twice in one name scope
    from segx import backend
    cfg = load_config("FCN_ShuffleNetV2_x1_0")
    first = backend.build_model(cfg["Arch"], num_classes=2)
    second = backend.build_model(cfg["Arch"], num_classes=2)
    assert backend.count_params(first) == backend.count_params(second)


def test_voc_weights_build_their_own_network_by_name_and_as_start(tmp_path):
    """EMANet's VOC weights were trained with align_corners=true (PaddleSeg's VOC config); the
    Cityscapes ones without. create_model's run config and Train.pretrained apply each."""
    from segx.zoo.official import _run_config, published_prediction, trained_entry
    from segx.zoo.registry import with_pretrained_arch
    cfg = load_config("EMANet-R50")
    assert cfg.get("Arch.align_corners", False) is False
    for dataset, expected in (("pascal_voc12", True), ("cityscapes", False)):
        run = tmp_path / f"{dataset}.yaml"
        run.write_text(_run_config(cfg, *trained_entry(cfg, dataset)))
        from segx.config import load_config as load_file
        assert load_file(run).get("Arch.align_corners", False) is expected
        start = with_pretrained_arch(load_config("EMANet-R50",
                                                 [f"Train.pretrained={dataset.upper()}"]))
        assert start.get("Arch.align_corners", False) is expected
    assert load_file(tmp_path / "pascal_voc12.yaml").get("Train.val_transforms")[1] == \
        {"type": "Padding", "target_size": [512, 512]}
    assert published_prediction("SegFormer-B0") == {"crop_size": (1024, 1024),
                                                    "stride": (768, 768)}
    assert published_prediction("EMANet-R50@pascal_voc12") == {}
    assert published_prediction("no/such/path") == {}


def test_segx_models_names_the_settings_each_checkpoint_needs():
    from conftest import run_cli
    r = run_cli("models", "EMANet")
    assert r.returncode == 0, r.stderr
    assert "EMANet-R50@pascal_voc12: align_corners=true; long side at most 512; padded to " \
           "512x512" in r.stdout
    assert "EMANet-R50@cityscapes" not in r.stdout  # the defaults: nothing to say


def test_a_sliding_window_model_exported_with_argmax_is_prepared_again(tmp_path):
    """SegFormer predicts as published with a sliding window, which needs class scores: a
    folder an earlier segx exported with argmax does not count as ready."""
    from segx.zoo.official import _ready, trained_entry
    _, entry = trained_entry(load_config("SegFormer-B0"), "cityscapes")
    (tmp_path / "inference.yml").write_text("Deploy:\n  output_op: argmax\n")
    assert not _ready(tmp_path, entry)
    (tmp_path / "inference.yml").write_text("Deploy:\n  output_op: softmax\n")
    assert _ready(tmp_path, entry)
    _, plain = trained_entry(load_config("PP-LiteSeg-T"), "camvid")
    (tmp_path / "inference.yml").write_text("Deploy:\n  output_op: argmax\n")
    assert _ready(tmp_path, plain)


def test_official_weights_are_one_typed_entry_per_model():
    """Meta.weights is parsed once per model into frozen entries that training's start, the
    official models and `segx weights` all read: the same URL for the same name everywhere."""
    import dataclasses
    from segx.zoo.official import trained_entry
    from segx.zoo.registry import model_info, model_weights
    from segx.training.build import pretrained_source
    from segx.apps.weights_cli import _official
    weights = model_weights("pp-liteseg-t")
    assert weights is model_weights("PP-LiteSeg-T")  # cached per model, any case of its name
    assert weights.default == "cityscapes" and list(weights.trained) == ["cityscapes", "camvid"]
    camvid = weights.find("CamVid")
    with pytest.raises(dataclasses.FrozenInstanceError):
        camvid.url = "http://elsewhere"
    cfg = load_config("PP-LiteSeg-T", ["Train.pretrained=CAMVID"])
    assert pretrained_source(cfg)[1] == trained_entry(cfg, "camvid")[1].url == camvid.url
    assert _official("PP-LiteSeg-T", "camvid")[1] == camvid
    assert _official("PP-LiteSeg-T", "imagenet")[1] == weights.imagenet == \
        model_info("PP-LiteSeg-T").backbone_weights
    assert pretrained_source(load_config("PP-LiteSeg-T"))[1] == weights.imagenet.url
    assert camvid.transforms == () and weights.trained["cityscapes"].transforms[0] == \
        {"type": "Resize", "target_size": [1024, 512]}


@pytest.mark.parametrize("entry,key", [("'oops'", "Meta.weights.trained.mine"),
                                       ("{classes: camvid}", "Meta.weights.trained.mine.url"),
                                       ("{url: u, arch: 3}", "Meta.weights.trained.mine.arch"),
                                       ("{url: u, transforms: [x]}",
                                        "Meta.weights.trained.mine.transforms")])
def test_a_malformed_weights_entry_in_a_users_yaml_names_its_key(tmp_path, entry, key):
    """A YAML of one's own may list its own weights; a wrong shape is one line naming the key
    (before: a TypeError or KeyError from deep inside training's start)."""
    from segx.zoo.registry import CONFIG_DIR
    from segx.training.build import pretrained_source
    path = tmp_path / "mine.yaml"
    path.write_text(f"_base_: {CONFIG_DIR / 'PP-LiteSeg-T.yaml'}\nMeta:\n  weights:\n"
                    f"    trained:\n      mine: {entry}\nTrain:\n  pretrained: mine\n")
    with pytest.raises(ConfigError, match=f"mine.yaml: {key.replace('.', '[.]')} must"):
        pretrained_source(load_config(path))
