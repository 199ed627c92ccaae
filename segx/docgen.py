"""Generate docs/config.md (from the schema) and docs/models.md (from the registry).

    python -m segx.docgen      # rewrites both files; tests fail when they are stale
"""
from __future__ import annotations

from pathlib import Path

from segx.config import schema
from segx.fileio import write_text
from segx.registry import list_models, model_info

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _value(v) -> str:
    if isinstance(v, (dict, list)):
        return "(see schema.yaml)" if len(str(v)) > 40 else f"`{v}`"
    return "`null`" if v is None else f"`{str(v).lower() if isinstance(v, bool) else v}`"


def config_reference() -> str:
    lines = ["# Config reference", "",
             "Generated from `segx/configs/_base_/schema.yaml` by `python -m segx.docgen`; "
             "do not edit by hand.", "",
             "Every key is declared once with its default. Model YAMLs inherit from family "
             "bases (`_base_:`) and hold only what differs. Override any key with "
             "`-o Dotted.key=value` (see [cli.md](cli.md)).", ""]
    for spec in schema().values():
        if spec.type == "section":
            depth = spec.path.count(".")
            lines += ["", f"{'#' * (depth + 2)} `{spec.path}`", "", spec.doc, "",
                      "| key | type | default | meaning |", "|---|---|---|---|"]
        else:
            lines.append(f"| `{spec.path}` | {spec.describe()} | {_value(spec.default)} | "
                         f"{spec.doc} |")
    return "\n".join(lines) + "\n"


def model_table() -> str:
    lines = ["# Models", "", "Generated from the registry (`segx/configs/*.yaml`) by "
             "`python -m segx.docgen`; `segx models` prints the same table.", "",
             "Parameters are counted by segx with 19 classes. mIoU, dataset and latency are "
             "**published figures** from PaddleX/PaddleSeg, not measured by segx; `-` means our "
             "references publish none.", "",
             "| model | family | architecture | backbone | params (M) | published mIoU | "
             "dataset | GPU ms | CPU ms |", "|---|---|---|---|---|---|---|---|---|"]
    static_only = []
    for name in list_models():
        i = model_info(name)
        p = i.published
        lines.append(f"| {name} | {i.family} | {i.architecture} | {i.backbone} | "
                     f"{i.params_m:.2f} | {p.get('miou', '-')} | {p.get('dataset', '-')} | "
                     f"{p.get('gpu_ms', '-')} | {p.get('cpu_ms', '-')} |")
        if i.no_static_export:
            static_only.append(f"- {name}: {i.no_static_export}.")
    if static_only:
        lines += ["", "These cannot be exported to a static graph (training skips its final "
                  "export; predict with the run's `model.pdparams`):", *static_only]
    return "\n".join(lines) + "\n"


GENERATED = {"config.md": config_reference, "models.md": model_table}


def main() -> None:
    for name, make in GENERATED.items():
        write_text(DOCS / name, make())
        print(f"wrote {DOCS / name}")


if __name__ == "__main__":
    main()
