"""Finding the bundled panel's source files must not import the packages that ship them: ``find_spec("skfolio.datasets")``
imports skfolio (scikit-learn, SciPy, matplotlib), which cost every up-to-date ``prepare`` — each training's first use — 3-8 s."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_locating_the_panels_sources_imports_neither_skfolio_nor_arch():
    code = ("import sys; from domains.finance.data import _locate; found = _locate(); "
            "assert all(p.is_file() for p in found.values()), found; "
            "print(sorted(m for m in ('skfolio', 'sklearn', 'arch', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
