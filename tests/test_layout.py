"""Dependency direction: paddle and paddleseg are imported only inside segx/backend."""
from __future__ import annotations

import re

from conftest import ROOT

IMPORT = re.compile(r"^\s*(import|from)\s+(paddle|paddleseg)\b", re.M)


def test_only_the_backend_imports_paddle():
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "segx").rglob("*.py")
                 if "backend" not in p.parts and IMPORT.search(p.read_text(encoding="utf-8"))]
    assert offenders == []
