"""``segx weights``: the weights cache from the command line.

    segx weights list                       every cached file: address, size, sha256
    segx weights fetch MODEL [WHICH]        download ahead of time (for machines that go
                                            offline); WHICH is imagenet (default) or a dataset
                                            of the model's trained weights; --export also
                                            prepares the model for create_model(MODEL)
    segx weights import FILE --url URL      put a file downloaded elsewhere into the cache
"""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from segx.utils.errors import WeightsError

if TYPE_CHECKING:
    from segx.zoo.registry import WeightsEntry


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="segx weights", description=__doc__.splitlines()[0],
                                epilog="\n".join(__doc__.splitlines()[2:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="what the cache holds")
    f = sub.add_parser("fetch", help="download a model's official weights")
    f.add_argument("model")
    f.add_argument("which", nargs="?", default="imagenet",
                   help="imagenet (the backbone training starts from) or a dataset name")
    f.add_argument("--export", action="store_true",
                   help="also prepare the exported model create_model(MODEL) uses")
    i = sub.add_parser("import", help="add a file downloaded elsewhere")
    i.add_argument("file")
    i.add_argument("--url", required=True, help="the official address the file came from")
    return p


def _official(model: str, which: str) -> tuple[str, WeightsEntry]:
    from segx.zoo.registry import model_info
    info = model_info(model)
    if which.lower() == "imagenet":
        if not info.backbone_weights:
            raise WeightsError(f"{info.name} has no official ImageNet backbone weights.",
                               solution="train it from scratch (Train.pretrained=none).")
        return info.name, info.backbone_weights
    entry = info.weights.find(which)
    if entry is None:
        raise WeightsError(f"{info.name} has no trained weights for '{which}'.",
                           solution=f"use imagenet or one of "
                                    f"{', '.join(info.trained_weights) or '(none)'}.")
    return info.name, entry


def main(argv: list[str]) -> int:
    from segx.zoo import weights
    args = _parser().parse_args(argv)
    if args.command == "list":
        entries = weights.cached_entries()
        for e in entries:
            print(f"{e.get('size', 0) / 2**20:8.1f} MB  {e.get('sha256', '')[:16]}  "
                  f"{e.get('url')}\n{'':10}{e['path']}")
        print(f"{len(entries)} cached file(s) in {weights.cache_dir()}")
        return 0
    if args.command == "fetch":
        name, entry = _official(args.model, args.which)
        path = weights.fetch(entry.url, entry.sha256)
        print(f"{name} {args.which}: {path}")
        if args.export:
            from segx.zoo.official import model_folder
            which = None if args.which.lower() == "imagenet" else args.which
            print(f"{name} ready for create_model: {model_folder(name, which)}")
        return 0
    path = weights.import_file(args.file, args.url)
    print(f"imported {args.file} as {args.url}: {path}")
    return 0
