"""Networks as PaddleSeg's published configs build them (tests/official_sections.py), made by
paddleseg's own components: the reference segx's zoo is checked against, and the source of the
checkpoints the test weights server serves as official trained weights."""
from __future__ import annotations

import io

from official_sections import SECTIONS, TRAINED


def build_official(spec: dict, num_classes: int, seed: int | None = None):
    """The network paddleseg builds from an official model section (``pretrained`` left out:
    nothing is downloaded)."""
    import paddle
    from paddleseg.cvlibs import manager

    def make(node, kind):
        kwargs = {}
        for key, value in node.items():
            if key in ("type", "pretrained"):
                continue
            if isinstance(value, dict) and "type" in value:
                value = make(value, manager.BACKBONES if key == "backbone" else kind)
            kwargs[key] = value
        return kind[node["type"]](**kwargs)

    if seed is not None:
        paddle.seed(seed)
    with paddle.utils.unique_name.guard():
        return make({**spec, "num_classes": num_classes}, manager.MODELS)


def official_checkpoint(model: str, dataset: str, seed: int = 0) -> bytes:
    """``paddle.save`` bytes of the network the config behind ``model``'s ``dataset`` weights
    builds, with random weights: a published checkpoint's layout, not segx's."""
    import paddle
    sec = SECTIONS[TRAINED[(model, dataset)]]
    buf = io.BytesIO()
    paddle.save(build_official(sec["model"], sec["num_classes"], seed).state_dict(), buf)
    return buf.getvalue()
