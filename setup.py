"""segx's install requirements (metadata and extras are in setup.cfg).

OpenCV is published as four distributions of one ``cv2`` module (opencv-python,
opencv-contrib-python and their -headless builds). Asking for one by name installs it beside
whichever build an environment already has, and the later install silently overwrites the
other's ``cv2`` files (PaddleX 3.7 pins opencv-contrib-python 4.10.0.84, whose contrib modules
would vanish). So segx asks for the build the target environment already has, when it is new
enough, and for opencv-python-headless otherwise. pip builds segx in an isolated environment
whose ``sys.path`` hides the target's packages, but the interpreter (and so ``sysconfig``'s
site-packages paths) is the target's: the distributions are looked up there by their
``*.dist-info`` folders.
"""
import re
import sysconfig
from pathlib import Path

from setuptools import setup

OPENCV_MIN = (4, 10)  # past the libwebp fix (CVE-2023-4863); built for numpy 2 and 1
OPENCV_BUILDS = ("opencv-contrib-python-headless", "opencv-python-headless",
                 "opencv-contrib-python", "opencv-python")

BASE = [
    "numpy>=1.24",
    "pyyaml>=6",
    "pillow>=11.3",
    "matplotlib>=3.7",
    "rich>=13",
    "fastapi>=0.135",
    "starlette>=1.3.1",
    "uvicorn>=0.30",
    "h11>=0.16",
    "httpx>=0.27",
    "pydantic>=2.6",
]


def installed_opencv() -> str | None:
    """The OpenCV build (name) already in the target environment at version >= OPENCV_MIN."""
    folders = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}
    for name in OPENCV_BUILDS:
        pattern = re.compile(re.escape(name.replace("-", "_")) + r"-(\d+)\.(\d+)[^-]*\.dist-info",
                             re.IGNORECASE)
        for folder in folders:
            for entry in Path(folder).glob("*.dist-info") if Path(folder).is_dir() else []:
                m = pattern.fullmatch(entry.name)
                if m and (int(m[1]), int(m[2])) >= OPENCV_MIN:
                    return name
    return None


if __name__ == "__main__":  # (pip's build runs this file as __main__; tests import it)
    opencv = installed_opencv() or "opencv-python-headless"
    setup(install_requires=BASE + [f"{opencv}>={OPENCV_MIN[0]}.{OPENCV_MIN[1]}"])
