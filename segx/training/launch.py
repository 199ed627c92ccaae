"""Where training runs: in this process, or in N data-parallel processes started through
``paddle.distributed.launch`` (CPU ranks with gloo, or GPUs), rank 0 writing every output."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

from segx.config import Config, load_config
from segx.utils.errors import ConfigError, SegxError
from segx.utils.fileio import write_text
from segx.runs.folder import RunFolder
from segx.training.build import build_trainer, pretrained_file, resume_folder
from segx.training.trainer import HookBase, Interrupted

RANK_COMMAND = ("-m", "segx", "train-rank")
"""What each data-parallel process runs (after ``python -u``, before the launch config's path):
segx's own command line, ``segx train-rank CONFIG``; the library neither reads argv nor exits."""


def devices(cfg: Config) -> tuple[str, int, str]:
    """(paddle device, process count, launch device list) for ``cfg``."""
    from segx.backend import resolve_device
    text = cfg.get("Global.device").strip().lower()
    device = resolve_device(text)
    if device.startswith("gpu"):
        ids = text.partition(":")[2] or device.partition(":")[2] or "0"
        return device, len(ids.split(",")), ids
    nprocs = cfg.get("Train.nprocs")
    if nprocs < 1:
        raise ConfigError(f"Train.nprocs={nprocs} must be at least 1.",
                          solution="use -o Train.nprocs=1 (or more for data parallel on CPU).")
    return device, nprocs, ""


def dist_info() -> tuple[int, int]:
    """(rank, world size) of this process under ``paddle.distributed.launch``."""
    return int(os.environ.get("PADDLE_TRAINER_ID", 0)), int(os.environ.get(
        "PADDLE_TRAINERS_NUM", 1))


def train(cfg: Config) -> dict:
    """Train ``cfg`` here, or start its data-parallel processes; returns the final report."""
    device, nprocs, gpu_ids = devices(cfg)
    rank, world = dist_info()
    if nprocs > 1 and world == 1:
        return launch(cfg, nprocs, gpu_ids)
    return build_trainer(cfg, device, rank, world).train()


def run_rank(config_path: Path, extra_hooks: Sequence[HookBase] = ()) -> dict:
    """One data-parallel process: the launch config, trained with extra hooks (tests)."""
    cfg = load_config(config_path)
    device, _, _ = devices(cfg)
    rank, world = dist_info()
    trainer = build_trainer(cfg, device, rank, world)
    trainer.hooks.extend(extra_hooks)
    return trainer.train()


def _rank_env() -> dict[str, str]:
    """The launcher's environment, with this segx importable by ``python -m segx`` in every rank
    (a checkout that is not installed; an installed segx is found as it is)."""
    import site
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    installed = {str(Path(p).resolve()) for p in (*site.getsitepackages(),
                                                   site.getusersitepackages())}
    if root not in installed:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def launch(cfg: Config, nprocs: int, gpu_ids: str = "",
           entry: Sequence[str] = RANK_COMMAND) -> dict:
    """Start ``nprocs`` ranks of ``python -u *entry CONFIG`` (``CONFIG``: the launch config's
    path) and wait; rank 0 writes the outputs. Pretrained weights are fetched here, never inside the ranks, and
    not at all when resuming (the checkpoint holds the weights)."""
    out = Path(cfg.get("Global.output"))
    out.mkdir(parents=True, exist_ok=True)
    data = json.loads(json.dumps(cfg.data))
    _, path = (None, None) if resume_folder(cfg) else pretrained_file(cfg)
    data["Train"]["pretrained"] = str(path) if path else "none"
    # a folder of its own per launch: a launch that fails replaces no file of an existing run
    logs = RunFolder(out).distributed_logs / time.strftime(f"%Y%m%d-%H%M%S-{os.getpid()}")
    launch_cfg = logs / "launch_config.yaml"
    write_text(launch_cfg, Config(data, cfg.source).to_yaml())
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--log_dir", str(logs)]
    cmd += ["--gpus", gpu_ids] if gpu_ids else ["--nproc_per_node", str(nprocs)]
    cmd += [sys.executable, "-u", *entry, str(launch_cfg)]  # not .py: the launcher runs it as is
    print(f"starting {nprocs} training processes (logs: {logs})", flush=True)
    result_path = RunFolder(out).train_result
    started = time.time()
    proc = subprocess.Popen(cmd, env=_rank_env())
    # Ctrl-C reaches the ranks directly (same process group) and they checkpoint; this process
    # waits for them instead of dying first.
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main_thread else None
    try:
        code = proc.wait()
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, previous)
    fresh = result_path.is_file() and result_path.stat().st_mtime >= started
    result = json.loads(result_path.read_text(encoding="utf-8")) if fresh else None
    if result and result.get("interrupted_at"):
        raise Interrupted(f"training interrupted at iteration {result['interrupted_at']}; "
                          f"checkpoint {RunFolder(out).checkpoint(result['interrupted_at'])} saved.",
                          solution="resume with -o Train.resume_path=auto.", report=result)
    if code != 0 or result is None:
        raise SegxError(f"a training process failed (exit {code}).",
                        solution=f"see {logs}/workerlog.* for each rank's output.")
    return result
