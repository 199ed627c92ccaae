"""segx.imaging.tta: flips, scales and sliding windows around a scoring function, and ``restore``.

Every scorer here is a numpy fake (no paddle), chosen so the right answer is known without
segx: a pointwise scorer commutes with flips and window crops, a constant image is the same at
every scale, and an exact 2x nearest-neighbour upscale is undone exactly by a 2x downscale.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from segx.utils.errors import ConfigError
from segx.inference.preprocess import preprocessor
from segx.imaging.tta import NO_TTA, TTA, resize_nearest, resize_scores, restore, scores

RNG = np.random.default_rng(0)


def pointwise(x: np.ndarray) -> np.ndarray:
    """N x 3 x H x W -> N x 4 x H x W, each pixel's scores from that pixel alone (so the scorer
    commutes with flips and crops)."""
    w = np.array([[1.0, -2.0, 0.5], [0.3, 0.2, -1.0], [-0.7, 1.5, 0.1], [0.0, 0.4, 0.9]],
                 np.float32)
    return np.einsum("kc,nchw->nkhw", w, x).astype(np.float32)


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


class Counting:
    """A scorer that records the shape of every batch it is called with."""

    def __init__(self, fn=pointwise):
        self.fn, self.shapes = fn, []

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.shapes.append(x.shape)
        return self.fn(x)


def batch(n=2, h=10, w=14) -> np.ndarray:
    return RNG.normal(size=(n, 3, h, w)).astype(np.float32)


def normalised(s: np.ndarray) -> np.ndarray:
    """Scores divided by their sum over classes (so a sum and a mean of softmaxes compare)."""
    return s / s.sum(1, keepdims=True)


# -- settings ---------------------------------------------------------------------------------

def test_no_tta_is_the_scorer_unchanged():
    x = batch()
    out = np.zeros((2, 4, 10, 14), np.float32)
    assert scores(lambda _: out, x) is out
    assert not NO_TTA.active and not TTA(scales=[1]).active


@pytest.mark.parametrize("kwargs", [{"scales": (0.5,)}, {"flip_horizontal": True},
                                    {"flip_vertical": True}, {"crop_size": (4, 4)}])
def test_any_augmentation_is_active(kwargs):
    assert TTA(**kwargs).active


@pytest.mark.parametrize("kwargs, key", [
    ({"scales": ()}, "scales"), ({"scales": (1.0, 0)}, "scales"), ({"scales": (-1,)}, "scales"),
    ({"stride": (4, 4)}, "crop_size"), ({"crop_size": (4,)}, "crop_size"),
    ({"crop_size": (4, 0)}, "crop_size"), ({"crop_size": (4.5, 4)}, "crop_size"),
    ({"crop_size": (True, 4)}, "crop_size"), ({"crop_size": (4, 4), "stride": (2, -1)}, "stride"),
])
def test_bad_settings_are_a_config_error_naming_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        TTA(**kwargs)


def test_stride_defaults_to_the_window_and_settings_round_trip():
    t = TTA(scales=[0.5, 1], flip_vertical=True, crop_size=[6, 4])
    assert t.stride == (6, 4) and t.scales == (0.5, 1.0)
    assert TTA.from_section(t.as_dict()) == t
    assert TTA.from_section({}) == NO_TTA


# -- flips ------------------------------------------------------------------------------------

@pytest.mark.parametrize("flip", ["flip_horizontal", "flip_vertical"])
def test_flip_of_a_flip_equivariant_scorer_changes_nothing(flip):
    """f(flip x) = flip f(x), so averaging f(x) with flip(f(flip x)) gives f(x) again; an
    output not flipped back (or flipped on the wrong axis) would not, as x is not symmetric."""
    x = batch()
    plain = softmax(pointwise(x))
    out = scores(pointwise, x, TTA(**{flip: True}))
    np.testing.assert_allclose(normalised(out), plain, rtol=1e-5, atol=1e-6)
    assert (out.argmax(1) == plain.argmax(1)).all()


def test_horizontal_flip_averages_the_two_views():
    """A scorer that only looks at the column index sees the image from both sides: the
    averaged result is left-right symmetric."""
    def by_column(x):
        n, _, h, w = x.shape
        col = np.broadcast_to(np.arange(w, dtype=np.float32), (n, 1, h, w))
        return np.concatenate([col, -col], 1)
    out = scores(by_column, batch(w=9), TTA(flip_horizontal=True), probabilities=True)
    np.testing.assert_allclose(out, out[..., ::-1])
    assert not np.allclose(by_column(batch(w=9)), by_column(batch(w=9))[..., ::-1])


def test_each_flip_is_one_more_pass():
    run = Counting()
    scores(run, batch(), TTA(flip_horizontal=True, flip_vertical=True))
    assert len(run.shapes) == 3  # plain, horizontal, vertical


def test_augmented_scores_are_a_mean_of_probabilities():
    out = scores(pointwise, batch(), TTA(flip_horizontal=True))
    np.testing.assert_allclose(out.sum(1), 1.0, rtol=1e-5)


# -- scales -----------------------------------------------------------------------------------

def test_multi_scale_of_a_scale_equivariant_scorer_changes_nothing():
    """A constant image is the same image at every scale, and a pointwise scorer's map of it
    too: averaging over scales must give the plain result at the input's size."""
    x = np.broadcast_to(RNG.normal(size=(2, 3, 1, 1)), (2, 3, 8, 12)).astype(np.float32)
    run = Counting()
    out = scores(run, x, TTA(scales=(0.5, 1.0, 2.0)))
    assert sorted(s[2:] for s in run.shapes) == [(4, 6), (8, 12), (16, 24)]
    assert out.shape == (2, 4, 8, 12)
    np.testing.assert_allclose(normalised(out), softmax(pointwise(x)), rtol=1e-5, atol=1e-6)


def test_scales_round_to_the_nearest_pixel_and_never_to_zero():
    run = Counting()
    scores(run, batch(h=3, w=5), TTA(scales=(0.1, 0.5)))
    assert [s[2:] for s in run.shapes] == [(1, 1), (2, 3)]


# -- sliding window ---------------------------------------------------------------------------

@pytest.mark.parametrize("crop", [(14, 10), (20, 10), (14, 30), (100, 100)])
def test_a_window_at_least_the_image_is_one_pass(crop):
    run = Counting()
    x = batch(h=10, w=14)
    out = scores(run, x, TTA(crop_size=crop), probabilities=True)
    assert run.shapes == [x.shape]
    np.testing.assert_allclose(out, pointwise(x), rtol=1e-6)


@pytest.mark.parametrize("size, crop, stride", [
    ((10, 14), (4, 4), (4, 4)), ((10, 14), (5, 3), (2, 2)), ((11, 13), (6, 4), (5, 3)),
    ((7, 30), (8, 8), (3, 3)), ((9, 9), (9, 2), (1, 2))])
def test_windows_cover_every_pixel_and_stitch_to_the_whole_image(size, crop, stride):
    """For a pointwise scorer, scoring window by window and averaging the overlaps is scoring
    the whole image; the number of windows per axis is ceil((side - window) / stride) + 1."""
    (h, w), (cw, ch) = size, crop
    x = batch(h=h, w=w)
    run = Counting()
    out = scores(run, x, TTA(crop_size=crop, stride=stride), probabilities=True)
    ew, eh = min(cw, w), min(ch, h)
    expected = (math.ceil((w - ew) / stride[0]) + 1) * (math.ceil((h - eh) / stride[1]) + 1)
    assert len(run.shapes) == expected
    assert all(s == (2, 3, eh, ew) for s in run.shapes)
    np.testing.assert_allclose(out, pointwise(x), rtol=1e-5, atol=1e-6)


def test_a_stride_beyond_the_window_is_refused():
    # windows 4 wide every 6 pixels would leave pixels 4-5, 10-11 ... with no score (0/0)
    with pytest.raises(ConfigError, match="stride=\\[6, 6\\] is larger than crop_size"):
        TTA(crop_size=(4, 4), stride=(6, 6))
    TTA(crop_size=(4, 4), stride=(4, 3))  # equal or smaller is fine


def test_window_logits_are_stitched_before_the_softmax():
    x = batch()
    out = scores(pointwise, x, TTA(crop_size=(6, 6), stride=(4, 4)))
    np.testing.assert_allclose(out, softmax(pointwise(x)), rtol=1e-5, atol=1e-6)


# -- resizing and restore ---------------------------------------------------------------------

def test_resize_nearest_keeps_ids_and_leading_axes():
    ids = np.arange(6, dtype=np.int32).reshape(1, 2, 3)
    out = resize_nearest(ids, 4, 6)
    assert out.dtype == np.int32 and out.shape == (1, 4, 6)
    np.testing.assert_array_equal(out[0], np.repeat(np.repeat(ids[0], 2, 0), 2, 1))


def test_resize_scores_keeps_a_constant_map():
    s = np.full((2, 5, 4, 6), 0.25, np.float32)
    out = resize_scores(s, 9, 3)
    assert out.shape == (2, 5, 9, 3)
    np.testing.assert_allclose(out, 0.25)


def _forward():
    """Resize by an exact 2x (nearest) then pad: the pre-processing restore must undo."""
    return preprocessor([{"type": "Resize", "target_size": [60, 40], "interp": "NEAREST"},
                         {"type": "Padding", "target_size": [64, 48]}])


def test_restore_inverts_resize_and_padding():
    """The forward transforms turn 20 x 30 into 48 x 64 (40 x 60 of image, then padding);
    restore must remove the padding first, then resize back: the known array again."""
    img = RNG.integers(0, 256, size=(20, 30, 3)).astype(np.uint8)
    chw, info = _forward()(img)
    assert chw.shape == (3, 48, 64) and [k for k, _ in info] == ["resize", "padding"]
    expected = img.transpose(2, 0, 1).astype(np.float32)
    np.testing.assert_allclose(restore(chw, info), expected, atol=1e-4)
    np.testing.assert_array_equal(restore(chw, info, nearest=True), expected)


def test_restore_of_a_class_map_is_nearest():
    ids = RNG.integers(0, 5, size=(20, 30)).astype(np.int32)
    chw, info = _forward()(np.repeat(ids[..., None], 3, 2).astype(np.uint8))
    out = restore(chw[0].astype(np.int32), info)
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, ids)


def test_restore_reads_paddleseg_style_entries_too():
    """PaddleSeg's collated trans_info holds ``[["resize"], [h, w]]`` lists, not tuples."""
    score = np.ones((2, 8, 8), np.float32)
    out = restore(score, [[["resize"], [4, 6]], [["padding"], [6, 7]]])
    assert out.shape == (2, 4, 6)
