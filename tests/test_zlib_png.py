"""paddle 2.6 exports its own zlib symbols; segx imports zlib first so PNG I/O keeps working.

Run in a fresh interpreter so that the import order is exactly a user's.
"""
from __future__ import annotations

import subprocess
import sys

from helpers import ROOT

SCRIPT = r"""
import segx                                   # must import zlib before paddle
from segx import backend, load_config         # imports paddle and paddleseg
backend.build_model(load_config("PP-LiteSeg-T")["Arch"], 2)
import numpy as np, cv2, io
from PIL import Image
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
img = (np.arange(64 * 48 * 3) % 251).astype("uint8").reshape(64, 48, 3)
ok, buf = cv2.imencode(".png", img)
assert ok and (cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) == img).all()
b = io.BytesIO(); Image.fromarray(img).save(b, format="PNG")
assert (np.asarray(Image.open(io.BytesIO(b.getvalue()))) == img).all()
cv2.imwrite(r"{tmp}/a.png", img)
assert (np.asarray(Image.open(r"{tmp}/a.png"))[..., ::-1] == img).all()
plt.plot([0, 1]); plt.savefig(r"{tmp}/plot.png"); plt.close("all")
assert Image.open(r"{tmp}/plot.png").size[0] > 0
print("PNG-OK")
"""


def test_png_io_after_importing_segx_and_paddle(tmp_path):
    r = subprocess.run([sys.executable, "-c", SCRIPT.replace("{tmp}", str(tmp_path))],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "PNG-OK" in r.stdout
