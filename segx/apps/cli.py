"""The segx command line: ``python main.py``, ``python -m segx`` and ``segx`` are this one CLI.

    segx -c MODEL_OR_YAML -o Global.mode=train -o Global.dataset_dir=DATA [-o K=V ...]
    segx -c MODEL -o K=V --print-config
    segx models [PATTERN]                 (also: segx --list-models [PATTERN])
    segx weights list | fetch MODEL [DATASET|imagenet] | import FILE --url URL
    segx demo [--workdir DIR] [--dataset-only shapes|street]
    segx train-rank LAUNCH_CONFIG         (one data-parallel process; paddle's launcher runs it)
    segx --pipeline semantic_segmentation --model MODEL --input X [--serve]

Exit codes: 0 success, 2 a user mistake (one line on stderr, no traceback unless
``-o Global.debug=True``), 1 an internal error (a bug: the traceback is printed), 130 Ctrl-C.
"""
from __future__ import annotations

import zlib  # noqa: F401  (before anything can import paddle; see segx.backend)

import argparse
import sys
import traceback
from pathlib import Path
from typing import Sequence

from segx.utils.errors import SegxError

COMMANDS = """commands:
  segx -c MODEL -o Global.mode=MODE ...   run a mode (check_dataset, train, evaluate, export,
                                          predict) of a model name or YAML path
  segx models [PATTERN]                   the model zoo, with the official weights of each
  segx weights list                       what the weights cache holds
  segx weights fetch MODEL [WHICH]        download official weights ahead of time (WHICH:
                                          imagenet, or a dataset such as cityscapes)
  segx weights import FILE --url URL      put a file downloaded elsewhere into the cache
  segx demo [--workdir DIR]               every mode on a generated dataset (no download)
  segx demo --dataset-only street         only write a generated 8-class road-scene dataset
  segx --pipeline NAME --input X          run a pipeline; add --serve for the HTTP service
  segx train-rank LAUNCH_CONFIG           one data-parallel training process (what
                                          paddle.distributed.launch starts; docs/train.md)

examples:
  segx -c PP-LiteSeg-T -o Global.mode=check_dataset -o Global.dataset_dir=DATA
  segx models 'SegFormer*'
  segx --serve --pipeline semantic_segmentation --model output"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="segx", description="Semantic segmentation model zoo: check_dataset, train, "
        "evaluate, export and predict, driven by one YAML per model.", epilog=COMMANDS,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-c", "--config", help="model name (see `segx models`) or YAML path")
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. -o Train.batch_size=4 (repeatable; "
                        "later wins)")
    p.add_argument("--print-config", action="store_true",
                   help="print the fully merged config and exit")
    p.add_argument("--list-models", nargs="?", const="", metavar="PATTERN",
                   help="list registered models, optionally matching a wildcard pattern")
    g = p.add_argument_group("pipelines and serving")
    g.add_argument("--pipeline", metavar="NAME_OR_YAML",
                   help="run a pipeline (semantic_segmentation or a YAML path)")
    g.add_argument("--input", help="image, folder or URL (default: the YAML's Global.input)")
    g.add_argument("--model", help="override Pipeline.model (name, exported or run folder)")
    g.add_argument("--device", help="override Pipeline.device (cpu, gpu, gpu:N)")
    g.add_argument("--engine", help="override Pipeline.engine (auto, paddle, openvino, "
                                    "onnxruntime)")
    g.add_argument("--precision", help="override Pipeline.precision (fp32, bf16, int8, auto)")
    g.add_argument("--batch_size", type=int, help="override Pipeline.batch_size")
    g.add_argument("--save_path", help="where --pipeline saves results, or where "
                                       "--get_pipeline_config writes the YAML")
    g.add_argument("--get_pipeline_config", metavar="NAME",
                   help="copy a built-in pipeline YAML to --save_path (never prompts)")
    g.add_argument("--overwrite", action="store_true",
                   help="let --get_pipeline_config replace an existing file")
    g.add_argument("--serve", action="store_true", help="serve --pipeline over HTTP")
    g.add_argument("--host", default="127.0.0.1", help="--serve address (default 127.0.0.1)")
    g.add_argument("--port", type=int, default=8080, help="--serve port (default 8080)")
    g.add_argument("--api-key", help="--serve: require this key (X-API-Key or Authorization: "
                                     "Bearer); default $SEGX_API_KEY")
    g.add_argument("--allow-url-hosts", metavar="HOSTS",
                   help="--serve: accept image URLs from these comma-separated hosts "
                        "(a.com, *.a.com, or * for any public host); default: URLs off")
    return p


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def print_models(pattern: str | None) -> int:
    """Print the model table; returns the exit code."""
    from segx.zoo.registry import list_models, model_info
    names = list_models(pattern or None)
    if not names:
        print(f"no model matches '{pattern}'. Run `segx models` for the full list.",
              file=sys.stderr)
        return 2
    head = ("model", "architecture", "backbone", "params(M)", "mIoU*", "dataset*",
            "CPU ms*", "ImageNet start", "trained weights")
    rows, static_only, settings = [], [], []
    for name in names:
        info = model_info(name)
        pub = info.published
        rows.append((name, info.architecture, info.backbone, _fmt(info.params_m),
                     _fmt(pub.get("miou")), pub.get("dataset", "-"),
                     _fmt(pub.get("cpu_ms"), ".1f"), "yes" if info.backbone_weights else "-",
                     ", ".join(info.trained_weights) or "-"))
        if info.no_static_export:
            static_only.append(f"  {name}: {info.no_static_export}")
        settings += [f"  {name}@{d}: {'; '.join(s)}" for d, s in info.checkpoint_settings.items()]
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    for row in [head, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip())
    print(f"\n{len(names)} models. * published figures (PaddleX/PaddleSeg docs), not measured "
          "by segx; params are counted by segx with 19 classes. ImageNet start: what training "
          "starts from by default (Train.pretrained=imagenet); trained weights: datasets "
          "create_model(name) and Train.pretrained can use.")
    if settings:
        print("\nTrained weights measured with settings of their own (create_model(name) and "
              "Train.pretrained apply them; every entry is checked against its official config):")
        print("\n".join(settings), end="\n\n")
    if static_only:
        print("Not exportable to a static graph (predicted on the dynamic graph):",
              *static_only, sep="\n")
    return 0


def _run(args: argparse.Namespace) -> int:
    from segx.zoo.registry import load_model_config
    if not args.config:
        raise SegxError("no config given.",
                        solution="pass -c MODEL_NAME or -c path/to/config.yaml "
                                 "(see `segx models`).")
    cfg = load_model_config(args.config, args.override)
    args.debug = cfg.get("Global.debug")
    if args.print_config:
        print(cfg.to_yaml(), end="")
        return 0
    from segx.modules import table as engine
    engine.run(cfg)
    return 0


def _get_pipeline_config(args: argparse.Namespace) -> int:
    from segx.utils.fileio import write_text
    from segx.pipelines import pipeline_config_path
    source = pipeline_config_path(args.get_pipeline_config)
    folder = Path(args.save_path or ".")
    target = folder / source.name if folder.suffix not in (".yaml", ".yml") else folder
    if target.exists() and not args.overwrite:
        raise SegxError(f"{target} already exists.",
                        solution="pass --overwrite to replace it, or another --save_path.")
    write_text(target, source.read_text(encoding="utf-8"))
    print(f"wrote {target}")
    return 0


def _pipeline(args: argparse.Namespace) -> int:
    from segx.pipelines import load_pipeline_config
    overrides = {"model": args.model, "device": args.device, "batch_size": args.batch_size,
                 "engine": args.engine, "precision": args.precision}
    config = load_pipeline_config(args.pipeline, **overrides)
    if args.serve:
        from segx.apps.serving.app import serve
        if args.allow_url_hosts:
            config["Serving"]["allow_url_hosts"] = [
                h.strip() for h in args.allow_url_hosts.split(",") if h.strip()]
        serve(config, args.host, args.port, args.api_key)
        return 0
    from segx.inference.inputs import expand
    from segx.pipelines import SemanticSegmentationPipeline
    from segx.inference.result import ResultSaver, SegResult
    inputs = args.input if args.input is not None else config.get("Global.input")
    saver = None
    if args.save_path and inputs is not None:
        inputs = expand(inputs)  # once: what is predicted is what the saver checked
        saver = ResultSaver(args.save_path, [n for n, src in inputs if not isinstance(src, str)])
        saver.check([SegResult.stem_for(n, k) for k, (n, _) in enumerate(inputs)])
    with SemanticSegmentationPipeline(config) as pipe:
        for res in pipe.predict(inputs):
            res.print()
            if saver:
                saver.save(res)
    if saver:
        print(f"saved {saver.count} result(s) to {args.save_path}")
    return 0


def _debug_requested(overrides: Sequence[str]) -> bool:
    return any(o.replace(" ", "").lower() in ("global.debug=true", "global.debug=1")
               for o in overrides)


def _subcommand(argv: list[str]) -> int | None:
    """``models``, ``weights`` and ``demo``; None for everything else."""
    if argv[:1] == ["demo"]:
        from segx.apps.demo import main as demo_main
        return demo_main(argv[1:])
    if argv[:1] == ["weights"]:
        from segx.apps.weights_cli import main as weights_main
        return weights_main(argv[1:])
    if argv[:1] == ["train-rank"]:
        return _train_rank(argv[1:])
    return None


def _train_rank(argv: list[str]) -> int:
    """One data-parallel process under ``paddle.distributed.launch``: train the launch config
    segx wrote (``distributed_train_logs/<date-time-pid>/launch_config.yaml``)."""
    if len(argv) != 1 or argv[0].startswith("-"):
        raise SegxError("train-rank takes one argument, the launch config's path.",
                        solution="python -m paddle.distributed.launch --nproc_per_node N "
                                 "segx train-rank launch_config.yaml (docs/train.md).")
    from segx.training.launch import run_rank
    run_rank(Path(argv[0]))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["models"]:
        argv = ["--list-models", *argv[1:2]]
    args = None
    try:
        code = _subcommand(argv)
        if code is not None:
            return code
        args = _parser().parse_args(argv)
        if args.list_models is not None:
            return print_models(args.list_models)
        if args.get_pipeline_config:
            return _get_pipeline_config(args)
        if args.pipeline:
            return _pipeline(args)
        if args.serve:
            raise SegxError("--serve needs --pipeline.",
                            solution="run segx --serve --pipeline semantic_segmentation.")
        return _run(args)
    except SegxError as exc:
        if getattr(args, "debug", False) or _debug_requested(argv):
            traceback.print_exc()
        print(f"segx: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("segx: interrupted.", file=sys.stderr)
        return 130
    except Exception:  # noqa: BLE001 - a bug in segx: show everything needed to report it
        traceback.print_exc()
        print("segx: internal error (a bug in segx); please report the traceback above.",
              file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
