"""Tiny hostile weights files cannot exhaust CPU, memory or disk: pickles crafted opcode by
opcode, archives crafted member by member and a real HTTP server that misbehaves on 127.0.0.1.

Each case is refused with one line, leaves no partial or oversized file in the cache, and (where
memory is the attack) runs in a child process whose peak RSS is measured and whose address space
is capped, so a regression fails the test instead of the machine."""
from __future__ import annotations

import zlib  # noqa: F401

import gzip
import io
import json
import os
import shutil
import struct
import sys
import tarfile
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest

from helpers import ROOT, measured_run, run_cli
from segx.utils import safe_pickle
from segx.utils.errors import WeightsError
from weights_server import WeightsServer

CHILD_LIMIT = 3 << 30  # address space of a child; the promise is < 1 GB of RSS


# --------------------------------------------------------------------------- helpers
def isolated(code: str, *args: str, env: dict | None = None, timeout: int = 60) -> dict:
    """Run ``code`` in a child (address space capped); it prints one JSON line: its outcome.
    Returns that outcome plus ``rss_mb``, the child's peak RSS (measured by
    :func:`helpers.measured_run`, so the test process's size does not count)."""
    wrapper = (
        "import json, sys\n"
        "out = {}\n"
        "try:\n" + "".join(f"    {line}\n" for line in code.splitlines()) +
        "except BaseException as exc:\n"
        "    out = {'error': type(exc).__name__, 'message': str(exc)}\n"
        "print(json.dumps(out))\n")
    folder = Path(tempfile.mkdtemp(prefix="isolated."))
    try:
        proc, peak_kib = measured_run([sys.executable, "-c", wrapper, *args], folder,
                                      env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
                                      limit=CHILD_LIMIT, timeout=timeout)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "rss_mb": peak_kib / 1024}


LOAD = ("from segx.utils import safe_pickle\n"
        "obj = safe_pickle.load_state_dict(sys.argv[1])\n"
        "out = {'loaded': len(obj)}")


def put(i: int) -> bytes:
    return b"q" + bytes([i]) if i < 256 else b"r" + struct.pack("<I", i)


def get(i: int) -> bytes:
    return b"h" + bytes([i]) if i < 256 else b"j" + struct.pack("<I", i)


def text(s: str) -> bytes:
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def raw_bytes(b: bytes) -> bytes:
    return b"B" + struct.pack("<I", len(b)) + b


def dag(levels: int, first: int = 0) -> tuple[bytes, int]:
    """Lists L0 = [0, 0], Lk = [Lk-1, Lk-1]: 10 bytes a level, 2^levels items expanded."""
    out = b"]" + put(first) + b"(K\x00K\x00e0"
    for i in range(first + 1, first + levels):
        out += b"]" + put(i) + b"(" + get(i - 1) + get(i - 1) + b"e0"
    return out, first + levels - 1


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def refused(result: dict, *words: str) -> None:
    assert result.get("error") in ("WeightsError", "UnsafePickleError"), result
    assert "\n" not in result["message"]
    for word in words:
        assert word in result["message"], result
    assert result["rss_mb"] < 1024, result


# --------------------------------------------------------------------------- the unpickler
def test_a_shared_reference_bomb_of_300_bytes_is_refused(tmp_path):
    body, top = dag(30)
    bomb = write(tmp_path, "dag.pdparams", b"\x80\x02}q\xf0" + text("w") + body + get(top)
                 + b"s.")
    assert len(bomb.read_bytes()) < 400
    refused(isolated(LOAD, str(bomb)), str(bomb), "expand")


def test_a_sliced_parameter_cannot_claim_more_than_its_data(tmp_path):
    # 147 bytes of lists expand, once paddle's big-parameter join converts them, to 512 MiB
    body, top = dag(26)
    info = (text("UnpackBigParamInfor@@") + b"}" + text("w") + b"}(" + text("OriginShape")
            + b"]" + b"(" + b"K\x02" * 26 + b"e" + text("slices") + b"]" + text("p") + b"aus")
    bomb = write(tmp_path, "join.pdparams", b"\x80\x02}q\xf0(" + text("p") + body + get(top)
                 + info + b"u.")
    refused(isolated(LOAD, str(bomb)), str(bomb))
    # a real array whose slice table claims a far larger shape
    state = {"p": np.zeros(4, np.float32), "UnpackBigParamInfor@@": {
        "w": {"OriginShape": (1 << 20, 1 << 20), "slices": ["p"]}}}
    claim = write(tmp_path, "claim.pdparams", __import__("pickle").dumps(state, protocol=2))
    with pytest.raises(WeightsError, match="claims the shape") as info:
        safe_pickle.load(claim)
    assert str(claim) in str(info.value) and "\n" not in str(info.value)


def test_only_the_latin1_codec_is_allowed(tmp_path):
    quadratic = (b"\x80\x02c_codecs\nencode\n(" + text("\u00e9" * 20000) + text("punycode")
                 + b"tR.")
    with pytest.raises(WeightsError, match="latin1") as info:
        safe_pickle.load(write(tmp_path, "codec.pdparams", quadratic))
    assert "codec.pdparams" in str(info.value)


def test_hashing_a_shared_tuple_key_is_refused(tmp_path):
    # t0 = (0, 0), tk = (tk-1, tk-1): hashing t40 as a dict key visits 2^40 tuples
    tuples = b"(K\x00K\x00tq\x000" + b"".join(b"(" + get(i - 1) + get(i - 1) + b"t" + put(i)
                                                  + b"0" for i in range(1, 41))
    bomb = write(tmp_path, "hash.pdparams", b"\x80\x02" + tuples + b"}" + get(40) + b"K\x01s.")
    refused(isolated(LOAD, str(bomb)), str(bomb), "key")


def test_a_huge_memo_index_costs_nothing(tmp_path):
    # pickle's C unpickler sizes its memo by the largest index: 10 bytes asked for 2 GiB
    bomb = write(tmp_path, "memo.pdparams", b"\x80\x02}r" + struct.pack("<I", 1 << 27) + b".")
    result = isolated(LOAD, str(bomb))
    refused(result, "not a state dict")


def test_one_buffer_shared_by_many_arrays_is_refused(tmp_path):
    # 64 KiB of data and 16,000 arrays built from it: 1 GiB if each array copied it
    head = (b"\x80\x02}q\x00(cnumpy.core.multiarray\n_reconstruct\nq\x01cnumpy\nndarray\nq\x02"
            b"K\x00\x85q\x03cnumpy\ndtype\nq\x04" + text("u1") + b"\x89\x88\x87Rq\x05"
            b"(K\x03" + text("|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb0"
            + raw_bytes(bytes(1 << 16)) + b"q\x060")
    array = (get(1) + get(2) + get(3) + text("b") + b"\x87R(K\x01J" + struct.pack("<i", 1 << 16)
             + b"\x85" + get(5) + b"\x89" + get(6) + b"tb")
    body = b"".join(text(f"a{i}") + array for i in range(16000))
    bomb = write(tmp_path, "shared.pdparams", head + body + b"u.")
    assert len(bomb.read_bytes()) < 1 << 20
    refused(isolated(LOAD, str(bomb)), str(bomb), "expands")


@pytest.mark.parametrize("name,data,words", [
    ("ndarray-called", b"\x80\x02cnumpy\nndarray\n(J\x00\x00\x00\x10tR.", "readable"),
    ("object-dtype", b"\x80\x02cnumpy\ndtype\n" + text("O8") + b"\x85R.", "data type"),
    ("structured-dtype", b"\x80\x02cnumpy\ndtype\n" + text("f4,i4") + b"\x85R.", "data type"),
    ("dict-key-tuple-dag", b"\x80\x02}(" + b"(K\x00t" + b"\x85" * 40 + b"K\x01u.", "key"),
    ("self-reference", b"\x80\x02]q\x00h\x00a.", "holds itself"),
])
def test_forms_numpy_and_paddle_never_write_are_refused(tmp_path, name, data, words):
    with pytest.raises(WeightsError, match=words) as info:
        safe_pickle.load(write(tmp_path, f"{name}.pdparams", data))
    assert "\n" not in str(info.value) and name in str(info.value)


def test_honest_files_of_every_protocol_still_load(tmp_path):
    import pickle
    from collections import OrderedDict
    state = OrderedDict(w=np.arange(6, dtype=np.float16).reshape(2, 3), n=np.int64(3),
                        names=np.array(["a", "bc"]), meta={"lr": [0.1, 0.01], "epoch": 2})
    shared = np.ones(3, np.float32)
    for protocol in (2, 3, 4):
        data = pickle.dumps({"state": state, "again": state, "s": shared, "t": shared},
                            protocol=protocol)
        loaded = safe_pickle.loads(data, "ok")
        assert np.array_equal(loaded["state"]["w"], state["w"]) and loaded["again"]["n"] == 3
        assert loaded["state"]["meta"] == state["meta"] and list(loaded["s"]) == [1, 1, 1]


# --------------------------------------------------------------------------- archives
@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("SEGX_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def tar_bytes(members: dict[str, bytes], mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def sparse_tar(name: str, real_size: int) -> bytes:
    """A GNU tar whose one member is sparse: 1 byte stored, ``real_size`` bytes unpacked."""
    info = tarfile.TarInfo(name)
    info.size = 1
    head = bytearray(info.tobuf(format=tarfile.GNU_FORMAT))
    head[156:157] = tarfile.GNUTYPE_SPARSE
    head[386:398] = b"%011o\0" % (real_size - 1)  # one region: (offset, length)
    head[398:410] = b"%011o\0" % 1
    head[483:495] = b"%011o\0" % real_size  # the unpacked size
    head[148:156] = b" " * 8
    head[148:155] = b"%06o\0" % sum(head)
    return bytes(head) + b"x" + bytes(511) + bytes(1024)


def entry_files(url: str) -> list[str]:
    """What the cache entry of ``url`` holds besides its lock file."""
    from segx.zoo.weights import entry_dir
    folder = entry_dir(url)
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.name != ".lock" and not p.is_dir()) if folder.is_dir() else []


ARCHIVE_URL = "https://example.invalid/paddleseg/dygraph/hostile.tar.gz"


@pytest.mark.parametrize("case", ["sparse", "bomb", "members"])
def test_hostile_archives_are_refused_on_import(home, tmp_path, case):
    data = {
        "sparse": lambda: sparse_tar("model.pdparams", 64 << 20),
        "bomb": lambda: tar_bytes({"model.pdparams": bytes(64 << 20)}),  # 64 MiB in ~64 KB
        "members": lambda: tar_bytes({f"d/{i}.txt": b"" for i in range(5000)}
                                     | {"model.pdparams": b"w"}),
    }[case]()
    archive = write(tmp_path, "hostile.tar.gz", data)
    assert archive.stat().st_size < 1 << 20
    r = run_cli("weights", "import", str(archive), "--url", ARCHIVE_URL)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert ARCHIVE_URL in r.stderr
    assert {"sparse": "not a plain file", "bomb": "more bytes than allowed",
            "members": "too many entries"}[case] in r.stderr
    assert entry_files(ARCHIVE_URL) == []


def test_the_archive_limits_are_settings(home, tmp_path, monkeypatch):
    from segx.zoo.weights import import_file
    archive = write(tmp_path, "ok.tar.gz", tar_bytes({"model.pdparams": bytes(20 << 20)}))
    with pytest.raises(WeightsError, match="SEGX_WEIGHTS_MAX_RATIO"):
        import_file(archive, ARCHIVE_URL)
    monkeypatch.setenv("SEGX_WEIGHTS_MAX_RATIO", "100000")
    assert import_file(archive, ARCHIVE_URL).stat().st_size == 20 << 20
    monkeypatch.setenv("SEGX_WEIGHTS_MAX_MEMBERS", "1")
    many = write(tmp_path, "many.tar", tar_bytes({"a/model.pdparams": b"1", "b": b"2"}, "w"))
    with pytest.raises(WeightsError, match="too many entries"):
        import_file(many, ARCHIVE_URL.replace(".tar.gz", "2.tar"))


def test_a_changed_extracted_file_is_extracted_again(home, tmp_path, monkeypatch):
    from segx.zoo.weights import entry_dir, fetch
    url = "https://example.invalid/paddleseg/dygraph/checked.tar.gz"
    with WeightsServer({urlsplit(url).path: tar_bytes({"m/model.pdparams": b"original"})}) \
            as server:
        monkeypatch.setenv("SEGX_WEIGHTS_MIRROR", server.url)
        path = fetch(url)
    source = json.loads((entry_dir(url) / "source.json").read_text())
    assert source["extracted"] == {"file": "m/model.pdparams",
                                   "sha256": __import__("hashlib").sha256(b"original")
                                   .hexdigest()}
    path.write_bytes(b"tampered")
    assert fetch(url).read_bytes() == b"original"  # server gone: from the checked archive
    path.write_bytes(b"tampered")
    (entry_dir(url) / "checked.tar.gz").write_bytes(tar_bytes({"m/model.pdparams": b"evil"}))
    with pytest.raises(WeightsError, match="does not match its sha256"):
        fetch(url)


# --------------------------------------------------------------------------- downloads
URL = "https://example.invalid/paddleseg/dygraph/hostile.pdparams"
PATH = urlsplit(URL).path


def test_a_206_for_another_range_restarts_instead_of_splicing(home, monkeypatch):
    from segx.zoo.weights import entry_dir, fetch
    payload = os.urandom(300_000)
    part = entry_dir(URL) / "hostile.pdparams.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"the start of an older, different file" * 100)
    with WeightsServer({PATH: payload}) as server:
        monkeypatch.setenv("SEGX_WEIGHTS_MIRROR", server.url)
        server.modes[PATH] = "wrong-range"
        assert fetch(URL).read_bytes() == payload
        assert [r for r, _ in server.gets(PATH)] == [f"bytes={3700}-", None]


def test_a_partial_file_longer_than_the_file_restarts(home, monkeypatch):
    from segx.zoo.weights import entry_dir, fetch
    payload = os.urandom(1000)
    part = entry_dir(URL) / "hostile.pdparams.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(os.urandom(5000))  # a longer file once served at this address
    with WeightsServer({PATH: payload}) as server:
        monkeypatch.setenv("SEGX_WEIGHTS_MIRROR", server.url)
        assert fetch(URL).read_bytes() == payload
        assert [r for r, _ in server.gets(PATH)] == ["bytes=5000-", None]


def test_redirects_to_another_host_need_the_setting(home, monkeypatch):
    from segx.zoo.weights import fetch
    payload = b"weights on the other host"
    with WeightsServer({"/elsewhere.pdparams": payload}) as server:
        monkeypatch.setenv("SEGX_WEIGHTS_MIRROR", server.url)
        server.modes[PATH] = f"redirect:http://localhost:{server.port}/elsewhere.pdparams"
        with pytest.raises(WeightsError, match="SEGX_WEIGHTS_ALLOW_REDIRECT") as info:
            fetch(URL)
        assert "localhost" in str(info.value) and "\n" not in str(info.value)
        assert entry_files(URL) == [] and server.gets("/elsewhere.pdparams") == []
        server.modes[PATH] = f"redirect:{server.url}/elsewhere.pdparams"  # the same host
        assert fetch(URL).read_bytes() == payload
        other = URL.replace("hostile", "other")
        server.modes[urlsplit(other).path] = \
            f"redirect:http://localhost:{server.port}/elsewhere.pdparams"
        monkeypatch.setenv("SEGX_WEIGHTS_ALLOW_REDIRECT", "mirror.example.com, localhost")
        assert fetch(other).read_bytes() == payload


FETCH = ("from segx.zoo.weights import fetch\n"
         "fetch(sys.argv[1])\n"
         "out = {'fetched': True}")


def test_a_download_has_a_total_deadline(home, tmp_path):
    with WeightsServer({PATH: b"unused"}) as server:
        server.modes[PATH] = "endless"
        result = isolated(FETCH, URL, env={"SEGX_HOME": str(home), "SEGX_WEIGHTS_DEADLINE": "2",
                                           "SEGX_WEIGHTS_MIRROR": server.url})
    assert result.get("error") == "WeightsError" and "\n" not in result["message"], result
    assert "SEGX_WEIGHTS_DEADLINE" in result["message"] and URL in result["message"]
    assert entry_files(URL) == []


@pytest.mark.parametrize("mode", ["flood", "claim:10737418240"])
def test_a_download_has_a_size_cap(home, monkeypatch, mode):
    from segx.zoo.weights import fetch
    monkeypatch.setenv("SEGX_WEIGHTS_MAX_MB", "4")
    with WeightsServer({PATH: bytes(16 << 20)}) as server:
        monkeypatch.setenv("SEGX_WEIGHTS_MIRROR", server.url)
        server.modes[PATH] = mode
        with pytest.raises(WeightsError, match="larger than 4 MB.*SEGX_WEIGHTS_MAX_MB") as info:
            fetch(URL)
    assert "\n" not in str(info.value) and entry_files(URL) == []


def test_tarfiles_own_header_reading_is_capped(home, tmp_path):
    # a 1 GiB pax header (zeros, ~1 MB compressed): tarfile reads a header whole into memory
    info = tarfile.TarInfo("././@PaxHeader")
    info.type, info.size = tarfile.XHDTYPE, 1 << 30
    zeros = gzip.compress(bytes(1 << 24), 9)  # gzip members concatenate
    archive = write(tmp_path, "pax.tar.gz", gzip.compress(info.tobuf(tarfile.USTAR_FORMAT))
                    + zeros * 64)
    assert archive.stat().st_size < 4 << 20
    code = ("from segx.zoo.weights import import_file\n"
            "import_file(sys.argv[1], sys.argv[2])\n"
            "out = {'imported': True}")
    result = isolated(code, str(archive), ARCHIVE_URL, env={"SEGX_HOME": str(home)})
    refused(result, "holds more data than allowed", ARCHIVE_URL)
    assert entry_files(ARCHIVE_URL) == []
