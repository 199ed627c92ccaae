"""A data-parallel rank for tests: segx's own rank, plus a hook that saves this rank's final
weights (so a test can compare every rank's state with the checkpoint rank 0 wrote).

    python -m paddle.distributed.launch --nproc_per_node 2 tests/dp_rank.py CONFIG
"""
import zlib  # noqa: F401  (must precede paddle)

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from segx.training.trainer import HookBase  # noqa: E402


class SaveFinalState(HookBase):
    def after_train(self, trainer) -> None:
        from segx import backend
        if trainer.status == "done":
            backend.save(backend.model_state(trainer.model),
                         trainer.run.out / f"test_rank{trainer.run.rank}_final.pdparams")


if __name__ == "__main__":
    from segx.training.launch import run_rank
    run_rank(Path(sys.argv[1]), [SaveFinalState()])
