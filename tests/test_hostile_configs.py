"""Hostile configs: every YAML segx reads from a user (``-c`` files, ``_base_`` files, pipeline
YAMLs, ``-o`` values) is bounded in bytes, nesting and alias expansion, and each refusal is one
line (exit 2), in a process that stays small."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from segx.config import load_config, parse_yaml, read_yaml
from segx.utils.errors import ConfigError

from conftest import ROOT, run_cli

# Runs the CLI as its own child, under a 4 GiB address-space cap (so the machine is safe even
# when segx is not), and prints the child's exit code, peak RSS (KiB) and stderr as JSON.
PEAK = textwrap.dedent("""
    import json, resource, subprocess, sys
    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
    r = subprocess.run([sys.executable, *sys.argv[1:]], capture_output=True, text=True,
                       preexec_fn=cap, timeout=120)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"rc": r.returncode, "peak_kib": peak, "stderr": r.stderr}))
""")


def run_measured(*args: str) -> dict:
    """``python main.py ARGS`` with its exit code, peak RSS and stderr."""
    r = subprocess.run([sys.executable, "-c", PEAK, str(ROOT / "main.py"), *args], cwd=ROOT,
                       capture_output=True, text=True, timeout=180,
                       env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return json.loads(r.stdout)


def alias_bomb(head: str = "") -> str:
    """Nine levels of nine aliases to the level below: under 1 KB, 9**8 values expanded."""
    lines = [head, "lol:", "  a0: &a0 {x: 1}"]
    lines += [f"  a{i}: &a{i} {{" + ", ".join(f"k{j}: *a{i - 1}" for j in range(9)) + "}"
              for i in range(1, 9)]
    return "\n".join(lines) + "\n"


def assert_one_line_refusal(result: dict, *needles: str) -> None:
    err = result["stderr"].strip()
    assert result["rc"] == 2, err[-2000:]
    assert "Traceback" not in err and len(err.splitlines()) == 1, err[-2000:]
    for needle in needles:
        assert needle in err, err


@pytest.mark.parametrize("flag,head", [("-c", "_base_: {root}/segx/configs/PP-LiteSeg-T.yaml"),
                                       ("--pipeline", "Pipeline: {{model: PP-LiteSeg-T}}")])
def test_an_alias_bomb_is_refused_early_and_small(tmp_path, flag, head):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(alias_bomb(head.format(root=ROOT)))
    assert bomb.stat().st_size < 1000
    result = run_measured(flag, str(bomb), "--print-config" if flag == "-c" else "--device=cpu")
    assert_one_line_refusal(result, str(bomb), "SEGX_MAX_YAML_NODES")
    assert result["peak_kib"] < 1 << 20  # under 1 GiB (today: MemoryError after GBs)


@pytest.mark.parametrize("target", ["/dev/zero", "fifo", "folder"])
def test_a_base_that_is_not_a_regular_file_is_refused(tmp_path, target):
    if target == "fifo":
        os.mkfifo(tmp_path / "fifo")  # reading it would wait forever for a writer
    elif target == "folder":
        (tmp_path / "folder").mkdir()
    config = tmp_path / "c.yaml"
    config.write_text(f"_base_: {target}\n")
    result = run_measured("-c", str(config), "--print-config")
    assert_one_line_refusal(result, "not a regular file")
    assert result["peak_kib"] < 1 << 20


def test_a_config_larger_than_the_limit_is_refused_unread(tmp_path, monkeypatch):
    big = tmp_path / "big.yaml"
    big.write_text("Global: {}\n" + "# padding\n" * 120_000)  # 1.2 MB of comments
    with pytest.raises(ConfigError, match="larger than 1,048,576 bytes.*SEGX_MAX_CONFIG_BYTES"):
        read_yaml(big)
    monkeypatch.setenv("SEGX_MAX_CONFIG_BYTES", str(2 << 20))
    assert read_yaml(big) == {"Global": {}}


def test_a_50000_deep_override_is_one_line(tmp_path):
    value = "[" * 50_000 + "]" * 50_000
    r = run_cli("-c", "PP-LiteSeg-T", "-o", f"Train.transforms={value}", "--print-config")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert len(r.stderr.strip().splitlines()) == 1 and len(r.stderr) < 400, r.stderr[:400]
    assert "-o Train.transforms" in r.stderr and "deeper than 100" in r.stderr


def test_nesting_and_expansion_limits_in_any_yaml():
    with pytest.raises(ConfigError, match="deeper than 100"):
        parse_yaml("a: " + "{b: " * 101 + "1" + "}" * 101, "deep.yaml")
    assert parse_yaml("a: " + "[" * 99 + "1" + "]" * 99)  # 100 levels with the top mapping
    with pytest.raises(ConfigError, match="recursive"):
        parse_yaml("Arch: &a {x: *a}\n", "rec.yaml")


def test_ordinary_anchors_still_load(monkeypatch):
    text = textwrap.dedent("""\
        base: &base {type: CrossEntropyLoss, weight: null}
        losses: [*base, *base, {<<: *base, type: DiceLoss}]
        """)
    data = parse_yaml(text)
    assert data["losses"][2] == {"type": "DiceLoss", "weight": None}
    assert data["losses"][0] is data["losses"][1]
    for name in ("BiSeNetV2", "Fast-SCNN", "U2-Net-p"):  # shipped configs that use aliases
        cfg = load_config(ROOT / "segx" / "configs" / f"{name}.yaml")
        assert len(cfg.get("Train.losses")) >= 2
    monkeypatch.setenv("SEGX_MAX_YAML_NODES", "10")  # the same document over a small limit
    with pytest.raises(ConfigError, match="more than 10 values"):
        parse_yaml(text, "small.yaml")


def test_bad_bytes_and_bad_base_values_are_one_line_errors(tmp_path):
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("Global: {model: caf\xe9}\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(latin)
    number = tmp_path / "number.yaml"
    number.write_text("_base_: 5\n")
    with pytest.raises(ConfigError, match="_base_=5"):
        load_config(number)


def test_base_fan_out_is_bounded(tmp_path):
    # four levels of ten bases each: 10,000 reads today
    for level in range(4):
        (tmp_path / f"b{level}.yaml").write_text(
            "_base_: [" + ", ".join([f"b{level + 1}.yaml"] * 10) + "]\n")
    (tmp_path / "b4.yaml").write_text("Global: {}\n")
    with pytest.raises(ConfigError, match="more than 64 files"):
        load_config(tmp_path / "b0.yaml")
