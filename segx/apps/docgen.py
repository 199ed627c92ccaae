"""Generate docs/config.md (from the schemas), docs/models.md (from the registry) and the model
count in README.md and docs/roadmap.md.

    python -m segx.apps.docgen      # rewrites them; tests fail when they are stale
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

from segx.config import Schema, load_schema, model_schema
from segx.utils.fileio import write_text
from segx.zoo.registry import list_models, model_info

DOCS = Path(__file__).resolve().parents[2] / "docs"
ROOT = DOCS.parent
COUNT = re.compile(r"\b\d+ (named models|models)\b")

CONFIG_INTRO = """\
Every key is declared once with its default. Model YAMLs inherit from family bases (`_base_:`)
and hold only what differs. Override any key with `-o Dotted.key=value` (see [cli.md](cli.md)).

## Versions and upgrades

Every config segx writes (a run's `config.yaml`, `--print-config`) starts with `_version_`, the
schema version it was written with (now {version}). Loading an older config applies the upgrade
steps in `segx.config.UPGRADES` (renames, removals) and gives keys added since their defaults,
so a run folder written by any earlier segx keeps loading, evaluating, exporting and predicting
(`tests/fixtures/run_v1` is such a folder; a test loads it). A config without `_version_` was
written before versions existed (version 1). Every change to the schema's keys bumps the version
and adds a step; a test compares the keys with the recorded list.

| from | to | what changed |
|---|---|---|
| 1 | 2 | `Train.pretrain_weight_path` became `Train.pretrained` (null became `none`); `Meta.pretrained_url` became `Meta.weights`; `Predict.run_mode` became `Predict.engine` + `Predict.onednn` (`mkldnn` -> `paddle` + `true`, `paddle` -> `paddle` + `false`); new keys (`Predict.precision`, `CheckDataset.class_names` ...) take their defaults |
| 2 | 3 | new key `CheckDataset.convert.allow_outside_image_paths` (default `false`: LabelMe files outside the dataset folder are refused) |

A misspelt key is an error with the closest keys, in a YAML, in `-o` and in
`Config.get("Dotted.key")` alike.

## Limits on what segx reads

Every YAML segx reads from you (`-c` files, their `_base_` files, pipeline YAMLs, `-o` values,
a model folder's `inference.yml`, a PaddleX run's `config.yaml`) goes through one bounded reader
(`segx.config.read_yaml`); anything beyond a limit is refused before it is expanded, with one
line naming the file (and line) or the `-o` key and the setting that raises the limit:

| limit | default | setting |
|---|---|---|
| file size; only regular files (no FIFOs, devices, folders) | 1 MiB | `SEGX_MAX_CONFIG_BYTES` |
| values in one document, each alias counted as the values it repeats | 100,000 | `SEGX_MAX_YAML_NODES` |
| nesting of lists and mappings | 100 | fixed |
| files read through one config's `_base_` chains (repeats counted) | 64 | fixed |
| an alias inside its own anchor (a recursive structure) | refused | - |
| length of an `-o` key | 200 characters | fixed |

Anchors and aliases (`&loss` ... `*loss`, `<<: *base`) work as usual within these limits.

## Why not omegaconf

segx's config layer is about 400 lines of its own on PyYAML. omegaconf was a declared dependency
that nothing imported; it is dropped. Building on it would not remove the parts that matter here:
YAML 1.2 scalars (omegaconf keeps PyYAML's 1.1 rules, where `on` is a boolean and `1e-3` a
string), `-o` values typed by the schema's `# (type) meaning` comments, choices, suggestions for
misspelt keys at any depth, the free-form insides of `Arch` and transforms, `_base_` chains and
version upgrades. Its interpolation (`${...}`) is the one feature segx lacks, and no config has
needed it.
"""


def _value(v) -> str:
    if isinstance(v, (dict, list)):
        return "(see the schema)" if len(str(v)) > 40 else f"`{v}`"
    return "`null`" if v is None else f"`{str(v).lower() if isinstance(v, bool) else v}`"


def _schema_tables(schema: Schema, base: int = 2) -> list[str]:
    lines: list[str] = []
    for spec in schema:
        if spec.is_section:
            depth = spec.path.count(".")
            lines += ["", f"{'#' * (depth + base)} `{spec.path}`", "", spec.doc, "",
                      "| key | type | default | meaning |", "|---|---|---|---|"]
        else:
            lines.append(f"| `{spec.path}` | {spec.describe()} | {_value(spec.default)} | "
                         f"{spec.doc} |")
    return lines


def config_reference() -> str:
    from segx.pipelines import SCHEMA_PATH
    schema = model_schema()
    lines = ["# Config reference", "",
             "Generated from `segx/configs/_base_/schema.yaml` and "
             "`segx/pipelines/semantic_segmentation.yaml` by `python -m segx.apps.docgen`; do not "
             "edit by hand.", "", CONFIG_INTRO.replace("{version}", str(schema.version)).rstrip(), "",
             "# Model configs", *_schema_tables(schema), "", "",
             "# Pipeline configs", "",
             "A pipeline YAML (`segx --get_pipeline_config semantic_segmentation`) overrides "
             "these; it is validated the same way.", *_schema_tables(load_schema(SCHEMA_PATH))]
    return "\n".join(lines) + "\n"


def _trained(info) -> str:
    settings = info.checkpoint_settings
    return ", ".join(f"{k} ({'?' if v.miou is None else v.miou}"
                     + (f"; {', '.join(settings[k])}" if k in settings else "") + ")"
                     for k, v in info.trained_weights.items()) or "-"


def model_table() -> str:
    lines = ["# Models", "", "Generated from the registry (`segx/configs/*.yaml`) by "
             "`python -m segx.apps.docgen`; `segx models` prints the same table.", "",
             "Parameters are counted by segx with 19 classes. mIoU, dataset and latency are "
             "**published figures** from PaddleX/PaddleSeg, not measured by segx; `-` means our "
             "references publish none.", "",
             "**ImageNet start** is what training starts from by default "
             "(`Train.pretrained=imagenet`): PaddleX's `<Model>_backbone_imagenet_pretrained` "
             "weights where PaddleX has them, else PaddleSeg's backbone archive; `-` means the "
             "model trains from random weights (PaddleSeg does the same). **Trained weights** "
             "are PaddleSeg's published models (dataset, published single-scale mIoU): "
             "`create_model(name)` predicts with the first, `name@dataset` picks another, and "
             "`Train.pretrained=<dataset>` fine-tunes from it.", "",
             "After the mIoU come the settings a checkpoint needs beyond the model's defaults, "
             "as its PaddleSeg config measured the published number: architecture arguments "
             "(`align_corners=true` for the VOC configs of EMANet and ISANet), the inference "
             "transforms (VOC: padded to 512x512, larger images first scaled to a long side of "
             "512; PP-LiteSeg: Cityscapes at half scale, 1024x512) and SegFormer's sliding "
             "window. `create_model(name)` and `Train.pretrained=<dataset>` apply them, and a run "
             "records them in its `config.yaml`, so an exported or fine-tuned model keeps them. "
             "ISANet's Cityscapes configs also pad to 2049x1025; segx leaves that out (one pixel "
             "on Cityscapes images, and it would refuse larger photos).", "",
             "**Parity is tested** for every trained entry and every ImageNet start "
             "(`tests/test_parity.py`): the model section of the official PaddleSeg config "
             "(held as data, with its file name, in `tests/official_sections.py`) and segx's "
             "`Arch` with the entry's arguments give the same arguments (defaults filled in), "
             "the same tensor names and shapes, and the same logits for the same random "
             "weights. SeaFormer (which paddleseg 2.8.0 lacks) is checked by tensor names and "
             "shapes against PaddleSeg's: segx saves SeaFormer weights under PaddleSeg's names "
             "and loads those, PaddleX's ImageNet backbones and its own earlier names alike.", "",
             "| model | family | architecture | backbone | params (M) | published mIoU | "
             "dataset | CPU ms | ImageNet start | trained weights |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    static_only = []
    for name in list_models():
        i = model_info(name)
        p = i.published
        start = (i.backbone_weights.source if i.backbone_weights else None) or "-"
        lines.append(f"| {name} | {i.family} | {i.architecture} | {i.backbone} | "
                     f"{i.params_m:.2f} | {p.get('miou', '-')} | {p.get('dataset', '-')} | "
                     f"{p.get('cpu_ms', '-')} | {start} | {_trained(i)} |")
        if i.no_static_export:
            static_only.append(f"- {name}: {i.no_static_export}.")
    if static_only:
        lines += ["", "These cannot be exported to a static graph (training skips its final "
                  "export; they predict on the dynamic graph from `model.pdparams`):",
                  *static_only]
    return "\n".join(lines) + "\n"


def _with_count(path: Path) -> Callable[[], str]:
    def make() -> str:
        return COUNT.sub(lambda m: f"{len(list_models())} {m.group(1)}",
                         path.read_text(encoding="utf-8"))
    return make


GENERATED: dict[str, Callable[[], str]] = {
    "config.md": config_reference, "models.md": model_table,
    "../README.md": _with_count(ROOT / "README.md"),
    "roadmap.md": _with_count(DOCS / "roadmap.md")}


def main() -> None:
    for name, make in GENERATED.items():
        write_text(DOCS / name, make())
        print(f"wrote {(DOCS / name).resolve()}")


if __name__ == "__main__":
    main()
