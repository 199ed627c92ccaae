"""One data-parallel training process, started by ``paddle.distributed.launch``.

    python -m paddle.distributed.launch --nproc_per_node N segx/training/rank.py CONFIG
"""
import zlib  # noqa: F401  (must precede paddle)

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # segx, even when not installed


def main() -> int:
    from segx.errors import SegxError
    from segx.training.launch import run_rank
    try:
        run_rank(Path(sys.argv[1]))
    except SegxError as exc:
        print(f"segx: error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
