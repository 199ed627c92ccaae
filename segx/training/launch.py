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
from segx.errors import ConfigError, SegxError
from segx.fileio import write_text
from segx.runs import RunFolder
from segx.training.build import build_trainer, pretrained_file, resume_folder
from segx.training.trainer import HookBase, Interrupted

RANK_ENTRY = Path(__file__).with_name("rank.py")


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


def launch(cfg: Config, nprocs: int, gpu_ids: str = "", entry: Path = RANK_ENTRY) -> dict:
    """Start ``nprocs`` ranks of ``entry`` (a script taking the launch config's path) and wait;
    rank 0 writes the outputs. Pretrained weights are fetched here, never inside the ranks, and
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
    cmd += [str(entry), str(launch_cfg)]
    print(f"starting {nprocs} training processes (logs: {logs})", flush=True)
    result_path = RunFolder(out).train_result
    started = time.time()
    proc = subprocess.Popen(cmd)
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
