"""segx's own transforms (segx/imaging/transforms.py) against PaddleSeg 2.8's, the oracle: under
the same ``random``/``np.random`` seeds every transform gives the same image, labels and
trans_info, and leaves both generators in the same state (the same draws, in the same order)."""
from __future__ import annotations

import copy
import random

import numpy as np
import pytest

from segx.imaging import transforms as T
from segx.utils.errors import ConfigError

backend = pytest.importorskip("segx.backend")  # paddle first imported the way segx does it
pytest.importorskip("paddleseg")  # the oracle: the Paddle 2.6 leg only
from paddleseg.transforms import functional as PF  # noqa: E402
from paddleseg.transforms import transforms as PT  # noqa: E402

SEEDS = range(8)
SIZES = [(37, 53), (64, 41), (17, 17)]  # (h, w): odd, portrait, square (as uint8)

# (name, arguments): every transform, with its defaults and with the branches its arguments open
CASES = [
    ("RandomHorizontalFlip", {}), ("RandomHorizontalFlip", {"prob": 0.9}),
    ("RandomVerticalFlip", {}), ("RandomVerticalFlip", {"prob": 0.7}),
    ("Resize", {}), ("Resize", {"target_size": [45, 31], "interp": "NEAREST"}),
    ("Resize", {"target_size": [40, 60], "keep_ratio": True, "size_divisor": 8}),
    ("Resize", {"target_size": [33, 29], "interp": "RANDOM"}),
    ("ResizeByLong", {"long_size": 49}), ("ResizeByShort", {"short_size": 23}),
    ("ResizeByShort", {"short_size": 30, "max_size": 40}),
    ("LimitLong", {"max_long": 40}), ("LimitLong", {"min_long": 60}),
    ("LimitLong", {"max_long": 90, "min_long": 20}),
    ("ResizeRangeScaling", {}), ("ResizeRangeScaling", {"min_value": 20, "max_value": 70}),
    ("ResizeRangeScaling", {"min_value": 30, "max_value": 30}),
    ("ResizeStepScaling", {}), ("ResizeStepScaling", {"min_scale_factor": 0.5,
                                                      "max_scale_factor": 2.0,
                                                      "scale_step_size": 0.1}),
    ("ResizeStepScaling", {"scale_step_size": 0}),
    ("ResizeStepScaling", {"min_scale_factor": 1.5, "max_scale_factor": 1.5}),
    ("Normalize", {}), ("Normalize", {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}),
    ("Padding", {"target_size": [70, 80]}),
    ("Padding", {"target_size": [64, 64], "im_padding_value": 0, "label_padding_value": 7}),
    ("PaddingByAspectRatio", {}), ("PaddingByAspectRatio", {"aspect_ratio": 1.7}),
    ("PaddingByAspectRatio", {"aspect_ratio": 0.4, "im_padding_value": 3}),
    ("RandomPaddingCrop", {"crop_size": [31, 23]}), ("RandomPaddingCrop", {"crop_size": [60, 70]}),
    ("RandomPaddingCrop", {"crop_size": [20, 20], "category_max_ratio": 0.6}),
    ("RandomPaddingCrop", {"crop_size": [12, 30], "category_max_ratio": 0.5, "loop_times": 3}),
    ("RandomCenterCrop", {}), ("RandomCenterCrop", {"retain_ratio": [0.3, 0.8]}),
    ("RandomCenterCrop", {"retain_ratio": [1.0, 1.0]}),
    ("ScalePadding", {}), ("ScalePadding", {"target_size": [41, 27], "im_padding_value": 10}),
    ("RandomNoise", {}), ("RandomNoise", {"prob": 1.0, "max_sigma": 40.0}),
    ("RandomBlur", {}), ("RandomBlur", {"prob": 0.5, "blur_type": "median"}),
    ("RandomBlur", {"prob": 1.0, "blur_type": "blur"}),
    ("RandomBlur", {"prob": 0.4, "blur_type": "random"}), ("RandomBlur", {"prob": 0}),
    ("RandomRotation", {}), ("RandomRotation", {"max_rotation": 90, "im_padding_value": 0,
                                                "label_padding_value": 9}),
    ("RandomScaleAspect", {}), ("RandomScaleAspect", {"min_scale": 0.2, "aspect_ratio": 0.5}),
    ("RandomDistort", {}),
    ("RandomDistort", {"brightness_prob": 1, "contrast_prob": 1, "saturation_prob": 1,
                       "hue_prob": 1, "sharpness_prob": 1, "hue_range": 40}),
    ("RandomAffine", {}), ("RandomAffine", {"size": [40, 30], "translation_offset": 5,
                                            "max_rotation": 40, "im_padding_value": 0}),
]


def _deliberate(name: str, args: dict) -> bool:
    """PaddleSeg results segx does not copy on purpose (segx/imaging/transforms.py says why):
    the draws are still compared here, the outputs in tests of their own below."""
    return name == "ScalePadding" or args.get("category_max_ratio", 1.0) < 1.0


def _sample(seed: int, size: tuple[int, int], gray: bool = False) -> dict:
    """An image as segx feeds it (uint8 values in float32) and a label with a few classes and
    ignored pixels, in blocks so that crops and edges have structure."""
    rng = np.random.default_rng(seed + 1000)
    h, w = size
    shape = (h, w) if gray else (h, w, 3)
    img = rng.integers(0, 256, shape).astype(np.float32)
    blocks = rng.integers(0, 5, (h // 6 + 1, w // 6 + 1)).astype(np.uint8)
    label = np.kron(blocks, np.ones((6, 6), np.uint8))[:h, :w].copy()
    label[rng.random((h, w)) < 0.05] = 255
    return {"img": img, "label": label, "gt_fields": ["label"], "trans_info": []}


def _run(op, data: dict, seed: int) -> tuple[dict, tuple]:
    random.seed(seed)
    np.random.seed(seed)
    out = op(copy.deepcopy(data))
    return out, (random.random(), float(np.random.random()))


def _same(ours: dict, theirs: dict) -> None:
    np.testing.assert_array_equal(ours["img"], theirs["img"])
    assert ours["img"].dtype == theirs["img"].dtype
    for key in theirs["gt_fields"]:
        np.testing.assert_array_equal(ours[key], theirs[key])
        assert ours[key].dtype == theirs[key].dtype
    assert ours["trans_info"] == theirs["trans_info"]


@pytest.mark.parametrize("name,args", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_same_output_and_draws_as_paddleseg(name, args):
    for seed in SEEDS:
        for size in SIZES:
            data = _sample(seed, size)
            if size == SIZES[-1]:  # inference feeds uint8 where nothing comes before
                data["img"] = data["img"].astype(np.uint8)
            if name == "Padding" and (size[1] > args["target_size"][0]
                                      or size[0] > args["target_size"][1]):
                continue
            random.seed(seed)  # building may draw (ResizeByShort with a list)
            ours = T.build_transform({"type": name, **args}, "t")
            random.seed(seed)
            theirs = getattr(PT, name)(**args)
            mine, after_mine = _run(ours, data, seed)
            paddle_out, after_paddle = _run(theirs, data, seed)
            assert after_mine == after_paddle, (name, seed, size)
            if _deliberate(name, args):
                np.testing.assert_array_equal(mine["img" if name == "ScalePadding" else "label"],
                                              paddle_out["img" if name == "ScalePadding"
                                                         else "label"])
                continue
            _same(mine, paddle_out)


def test_category_max_ratio_crops_the_image_where_paddleseg_puts_the_label():
    """PaddleSeg's defect: with category_max_ratio < 1 a found window's LABEL crop replaces
    the image. segx crops the image at the same window as the labels (same draws)."""
    args = {"crop_size": [20, 20], "category_max_ratio": 0.9}
    hits = 0
    for seed in SEEDS:
        data = _sample(seed, (37, 53))
        mine, _ = _run(T.RandomPaddingCrop(**args), data, seed)
        theirs, _ = _run(PT.RandomPaddingCrop(**args), data, seed)
        np.testing.assert_array_equal(mine["label"], theirs["label"])
        if theirs["img"].ndim == 2:  # paddleseg replaced the image by the label crop
            hits += 1
            np.testing.assert_array_equal(theirs["img"], mine["label"])
        assert mine["img"].shape == (20, 20, 3)
        rows, cols = np.nonzero(np.all(data["img"] == mine["img"][0, 0], axis=-1))
        top, left = rows[0], cols[0]
        np.testing.assert_array_equal(data["img"][top:top + 20, left:left + 20], mine["img"])
        np.testing.assert_array_equal(data["label"][top:top + 20, left:left + 20], mine["label"])
    assert hits > 0


def test_scale_padding_keeps_label_ids():
    """ScalePadding: the image as PaddleSeg's; labels nearest-neighbour, so only ids that were
    there (PaddleSeg's bicubic label resize makes new ones)."""
    data = _sample(3, (37, 53))
    mine, _ = _run(T.ScalePadding(target_size=(41, 27)), data, 0)
    theirs, _ = _run(PT.ScalePadding(target_size=(41, 27)), data, 0)
    np.testing.assert_array_equal(mine["img"], theirs["img"])
    assert set(np.unique(mine["label"])) <= set(np.unique(data["label"]))
    assert not set(np.unique(theirs["label"])) <= set(np.unique(data["label"]))


@pytest.mark.parametrize("gray", [False, True])
def test_compose_pipeline_matches_paddleseg(gray):
    """A training pipeline end to end, RGB and one-channel images: CHW image, labels and
    trans_info as PaddleSeg's Compose(to_rgb=False) gives them."""
    specs = [{"type": "ResizeStepScaling", "min_scale_factor": 0.5, "max_scale_factor": 2.0,
              "scale_step_size": 0.25},
             {"type": "RandomPaddingCrop", "crop_size": [32, 24]},
             {"type": "RandomHorizontalFlip"}, {"type": "RandomRotation"},
             {"type": "RandomDistort", "hue_prob": 0.5}, {"type": "RandomBlur", "prob": 0.3},
             {"type": "Resize", "target_size": [30, 22]}, {"type": "Normalize"}]
    channels = 1 if gray else 3
    ours = T.build_transforms(specs, "Train.transforms")
    ours.img_channels = channels
    theirs = PT.Compose([getattr(PT, s["type"])(**{k: v for k, v in s.items() if k != "type"})
                         for s in specs], to_rgb=False, img_channels=channels)
    for seed in SEEDS:
        data = _sample(seed, (45, 59), gray=gray)
        mine, after_mine = _run(ours, data, seed)
        paddle_out, after_paddle = _run(theirs, data, seed)
        assert after_mine == after_paddle
        assert mine["img"].shape == (channels, 22, 30)
        _same(mine, paddle_out)


def test_compose_checks_channels_and_swaps_bgr_when_asked():
    data = _sample(0, (9, 11))
    with pytest.raises(Exception, match="1 channels|expect 1"):
        T.Compose([], img_channels=1)(copy.deepcopy(data))
    swapped = T.Compose([], to_rgb=True)(copy.deepcopy(data))
    theirs = PT.Compose([], to_rgb=True)(copy.deepcopy(data))
    np.testing.assert_array_equal(swapped["img"], theirs["img"])
    np.testing.assert_array_equal(swapped["img"], data["img"][..., ::-1].transpose(2, 0, 1))


def test_one_bit_labels_go_through_as_ids():
    """A 1-bit PNG label reads as bool, which OpenCV refuses (PaddleSeg's transforms crash on
    it); Compose passes it on as uint8 ids 0/1."""
    data = _sample(0, (37, 53))
    data["label"] = data["label"] == 1
    ops = T.build_transforms([{"type": "ResizeStepScaling"}, {"type": "RandomRotation"},
                              {"type": "RandomPaddingCrop", "crop_size": [40, 40]}], "t")
    out = ops(copy.deepcopy(data))
    assert out["label"].dtype == np.uint8 and set(np.unique(out["label"])) <= {0, 1, 255}
    with pytest.raises(Exception, match="resize|Bad argument"):
        PT.Compose([PT.ResizeStepScaling()], to_rgb=False)(copy.deepcopy(data))


@pytest.mark.parametrize("radius", [1, 2])
def test_mask_to_binary_edge_matches_paddleseg(radius):
    """Edges from OpenCV's exact distance transform as PaddleSeg's from scipy's, classes
    absent from a mask included (num_classes above the ids present)."""
    for seed in SEEDS:
        label = _sample(seed, (37, 53))["label"]
        for classes in (5, 9):
            ours = T.mask_to_binary_edge(label, radius=radius, num_classes=classes)
            theirs = PF.mask_to_binary_edge(label, radius=radius, num_classes=classes)
            assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
            np.testing.assert_array_equal(ours, theirs)


def test_unknown_transform_is_one_line_with_did_you_mean():
    with pytest.raises(ConfigError, match=r"Train\.transforms\.1\.type='RandomHorizontalFlp'.*"
                                          r"Did you mean RandomHorizontalFlip") as err:
        T.build_transforms([{"type": "Normalize"}, {"type": "RandomHorizontalFlp"}],
                           "Train.transforms")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("spec,words", [
    ({"type": "Resize", "target_sise": [5, 5]}, "no argument 'target_sise'. Did you mean "
                                                "target_size"),
    ({"type": "Resize", "interp": "BICUBIC"}, "interp must be one of"),
    ({"type": "RandomPaddingCrop", "crop_size": 512}, "crop_size must be a list of two"),
    ({"type": "RandomBlur", "blur_type": "motion"}, "blur_type must be one of"),
    ({"type": "Normalize", "std": [0.5, 0, 0.5]}, "has a zero"),
    ({"type": "RandomPaddingCrop", "crop_size": [100000, 100000]}, "at most"),
    ({"type": "Padding"}, "target_size"),
])
def test_bad_arguments_are_one_line_config_errors(spec, words):
    with pytest.raises(ConfigError, match="t.0") as err:
        T.build_transforms([spec], "t")
    assert words in str(err.value) and "\n" not in str(err.value)


def test_a_resize_past_the_pixel_cap_is_refused_before_allocating():
    """A config asking for a huge output is refused by size, not by running out of memory."""
    op = T.build_transform({"type": "ResizeStepScaling", "min_scale_factor": 3000.0,
                            "max_scale_factor": 3000.0}, "t")
    with pytest.raises(ConfigError, match="ResizeStepScaling would make a 159000x111000"):
        op(_sample(0, (37, 53)))


# ----------------------------------------------------------------------------- inference side
DEPLOY = [{"type": "PaddingByAspectRatio", "aspect_ratio": 1.5},
          {"type": "ResizeStepScaling", "min_scale_factor": 0.5, "max_scale_factor": 0.5},
          {"type": "Normalize"}]


def test_inference_transforms_beyond_the_fast_ones_need_no_paddle(tmp_path):
    """preprocess falls back to segx's transforms for names it has no fast version of: with
    paddle made unimportable the result is PaddleSeg's, trans_info included."""
    import subprocess
    import sys
    import textwrap

    from helpers import ROOT
    rgb = _sample(4, (37, 53))["img"].astype(np.uint8)
    np.save(tmp_path / "rgb.npy", rgb)
    code = textwrap.dedent(f"""
        import sys
        for name in ("paddle", "paddleseg", "paddle2onnx"):
            sys.modules[name] = None
        import numpy as np
        from segx.inference.preprocess import preprocessor
        img, info = preprocessor({DEPLOY!r})(np.load({str(tmp_path / 'rgb.npy')!r}))
        np.save({str(tmp_path / 'out.npy')!r}, img)
        print("info", info)
    """)
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    theirs = PT.Compose([getattr(PT, s["type"])(**{k: v for k, v in s.items() if k != "type"})
                         for s in DEPLOY], to_rgb=False)(
        {"img": rgb.astype(np.float32), "trans_info": [], "gt_fields": []})
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), theirs["img"], atol=1e-6)
    assert f"info {theirs['trans_info']}" in r.stdout


def test_inference_unknown_transform_suggests_a_name():
    from segx.inference.preprocess import preprocessor
    with pytest.raises(ConfigError, match=r"Deploy\.transforms\.0: 'PaddingByAspectRatoi' is "
                                          r"not a transform segx knows\. Did you mean "
                                          r"PaddingByAspectRatio"):
        preprocessor([{"type": "PaddingByAspectRatoi"}])


@pytest.mark.parametrize("spec", [{"type": "Resize", "target_size": [100000, 100000]},
                                  {"type": "ResizeByLong", "long_size": 400000},
                                  {"type": "Padding", "target_size": [100000, 100000]}])
def test_inference_transforms_refuse_a_huge_output_before_allocating(spec):
    """The fast inference versions share the pixel cap: an inference.yml asking for a huge
    image is a one-line ConfigError, not gigabytes of memory."""
    from segx.inference.preprocess import preprocessor
    prepare = preprocessor([spec, {"type": "Normalize"}])
    with pytest.raises(ConfigError, match="at most 178,956,970 pixels"):
        prepare(np.zeros((30, 40, 3), np.uint8))
