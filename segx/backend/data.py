"""The paddle side of training data: the seeded sample stream and its loader, over segx's own
transforms (:mod:`segx.imaging.transforms`, PaddleSeg's names without paddleseg). Nothing here
knows segx's config keys."""
from __future__ import annotations

import zlib  # noqa: F401  (must precede paddle; see segx.backend)

import random
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import paddle

from segx.imaging.images import read_image, read_label
from segx.imaging.transforms import Compose, build_transforms, mask_to_binary_edge

__all__ = ["Compose", "build_transforms", "apply_transforms", "SegData", "StreamSampler",
           "train_loader"]


# --------------------------------------------------------------------------- data
def apply_transforms(transforms: Compose, img: np.ndarray, label: np.ndarray | None) -> dict:
    data = {"img": img.astype(np.float32), "trans_info": [], "gt_fields": []}
    if label is not None:
        data["label"] = label
        data["gt_fields"].append("label")
    return transforms(data)


class SegData(paddle.io.Dataset):
    """Training samples: ``key = (stream position, sample index)``.

    Augmentation is seeded from the stream position, so a sample's crops and flips depend only
    on (seed, position): the same with any number of loader workers, and after a resume.
    """

    def __init__(self, pairs: Sequence[tuple[Path, Path]], transforms: Compose, seed: int,
                 edge_classes: int | None = None):
        self.pairs, self.transforms, self.seed = list(pairs), transforms, seed
        self.edge_classes = edge_classes

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, key):
        pos, idx = key
        state = (self.seed * 1_000_003 + int(pos)) % (2 ** 32)
        random.seed(state)
        np.random.seed(state)
        image, label = self.pairs[int(idx)]
        data = apply_transforms(self.transforms, read_image(image), read_label(label))
        out = [data["img"], data["label"].astype(np.int64)]
        if self.edge_classes:
            out.append(mask_to_binary_edge(data["label"], radius=2,
                                           num_classes=self.edge_classes).astype(np.int64))
        return tuple(out)


class StreamSampler(paddle.io.BatchSampler):
    """An endless, seeded stream of batches: epoch ``e`` is a permutation seeded by (seed, e).

    Batch ``i`` of rank ``r`` is a pure function of (seed, i, r), which is what makes resume and
    multi-process training reproducible.
    """

    def __init__(self, n: int, batch_size: int, seed: int, start_iter: int = 0,
                 rank: int = 0, world: int = 1):
        self.n, self.bs, self.seed = n, batch_size, seed
        self.start, self.rank, self.world = start_iter, rank, world
        self._perms: dict[int, np.ndarray] = {}

    def _index(self, pos: int) -> int:
        epoch, k = divmod(pos, self.n)
        if epoch not in self._perms:
            self._perms = {epoch: np.random.default_rng((self.seed, epoch)).permutation(self.n)}
        return int(self._perms[epoch][k])

    def __iter__(self) -> Iterator[list]:
        it = self.start
        while True:
            first = (it * self.world + self.rank) * self.bs
            yield [(p, self._index(p)) for p in range(first, first + self.bs)]
            it += 1

    def __len__(self) -> int:
        return 2 ** 62


def train_loader(data: SegData, sampler: StreamSampler, num_workers: int):
    return paddle.io.DataLoader(data, batch_sampler=sampler, num_workers=num_workers,
                                return_list=True, persistent_workers=num_workers > 0)

