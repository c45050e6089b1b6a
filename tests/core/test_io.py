import os
import subprocess
import sys
import textwrap

import pytest

from core.io import atomic_write, atomic_write_json, atomic_write_parquet


def test_atomic_write_replaces_whole_file(tmp_path):
    p = tmp_path / "out.json"
    atomic_write_json(p, {"a": 1})
    atomic_write_json(p, {"a": 2})
    assert p.read_text().strip().startswith("{") and '"a": 2' in p.read_text()
    assert [x.name for x in tmp_path.iterdir()] == ["out.json"]  # no temp files left behind


def test_crash_between_write_and_rename_keeps_old_file(tmp_path, monkeypatch):
    p = tmp_path / "ckpt.bin"
    p.write_bytes(b"old-complete-content")

    def crash(*args, **kwargs):
        raise RuntimeError("injected crash before rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(RuntimeError, match="injected crash"):
        with atomic_write(p, "wb") as fh:
            fh.write(b"new-but-never-committed" * 1000)
    assert p.read_bytes() == b"old-complete-content"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["ckpt.bin"]


def test_process_killed_mid_write_leaves_old_file(tmp_path):
    """A real SIGKILL while the new content is half written: the target still holds the old file."""
    p = tmp_path / "data.txt"
    p.write_text("old")
    code = textwrap.dedent(f"""
        import os, signal
        from core.io import atomic_write
        with atomic_write({str(p)!r}, "w") as fh:
            fh.write("partial" * 10000)
            fh.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert r.returncode == -9
    assert p.read_text() == "old"


def test_parquet_atomic(tmp_path):
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"x": [1, 2, 3]})
    out = atomic_write_parquet(df, tmp_path / "a.parquet")
    assert pd.read_parquet(out)["x"].tolist() == [1, 2, 3]
    assert len(list(tmp_path.iterdir())) == 1
