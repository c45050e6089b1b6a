"""Two processes downloading the same MSD task into the same folder at once (real processes, a local
HTTP server): one download, both get the task folder."""

from __future__ import annotations

import functools
import http.server
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[2]

_DOWNLOAD = """
import sys, time
from pathlib import Path
from domains.medical.data import download_msd_task, read_msd_task
go = Path({go!r})
go.with_name(go.name + ".ready{i}").touch()
while not go.exists():
    time.sleep(0.005)
out = download_msd_task("Task09_Spleen", {root!r}, url={url!r})
print("OK", out, len(read_msd_task(out).training))
"""


def write_msd_task(folder: Path) -> Path:
    """A two-case MSD task folder (what the archive holds)."""
    for split in ("imagesTr", "labelsTr"):
        (folder / split).mkdir(parents=True)
    rng, affine = np.random.default_rng(0), np.diag([1.5, 1.5, 2.0, 1])
    for i in range(2):
        lab = np.zeros((12, 10, 8), np.uint8)
        lab[3:8, 2:6, 2:5] = 1
        nib.save(nib.Nifti1Image(rng.normal(size=lab.shape).astype(np.float32), affine), str(folder / "imagesTr" / f"case_{i}.nii.gz"))
        nib.save(nib.Nifti1Image(lab, affine), str(folder / "labelsTr" / f"case_{i}.nii.gz"))
    (folder / "dataset.json").write_text(json.dumps({
        "name": "Tiny", "modality": {"0": "CT"}, "labels": {"0": "background", "1": "spleen"},
        "training": [{"image": f"./imagesTr/case_{i}.nii.gz", "label": f"./labelsTr/case_{i}.nii.gz"} for i in range(2)], "test": []}))
    return folder


def test_two_processes_downloading_one_msd_task_download_it_once_and_both_get_it(tmp_path):
    """Both downloaded the archive and unpacked it into the same staging folder, removing each other's
    files: one of the two failed with "archive has no dataset.json; not an MSD task" (about the archive that
    was fine) or a traceback (FileExistsError, or "OSError: Directory not empty" renaming the task folder). Now the second waits for the first and reuses its folder."""
    src = write_msd_task(tmp_path / "src" / "Task09_Spleen")
    www = tmp_path / "www"
    www.mkdir()
    with tarfile.open(www / "Task09_Spleen.tar", "w") as tf:
        tf.add(src, arcname="Task09_Spleen")
    requests = []

    class SlowHandler(http.server.SimpleHTTPRequestHandler):  # a real mirror takes a while: both requests overlap
        def do_GET(self):  # noqa: N802 - the http.server name
            requests.append(self.path)
            time.sleep(1.0)
            super().do_GET()

        def log_message(self, *args):  # quiet
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(SlowHandler, directory=str(www)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    root, go = tmp_path / "data", tmp_path / "go"
    url = f"http://127.0.0.1:{srv.server_address[1]}/Task09_Spleen.tar"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    try:
        procs = [subprocess.Popen([sys.executable, "-c", _DOWNLOAD.format(go=str(go), i=i, root=str(root), url=url)], cwd=REPO, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
        deadline = time.monotonic() + 120
        while not all(go.with_name(f"go.ready{i}").exists() for i in range(2)) and time.monotonic() < deadline:
            if any(p.poll() is not None for p in procs):
                break
            time.sleep(0.02)
        go.touch()
        results = [p.communicate(timeout=120) + (p.returncode,) for p in procs]
    finally:
        srv.shutdown()
    for stdout, stderr, rc in results:
        assert rc == 0 and stdout.startswith("OK") and stdout.split()[-1] == "2", stderr[-2000:]
    assert len(requests) == 1, f"the archive was downloaded {len(requests)} times at once"
    assert sorted(p.name for p in root.iterdir()) == [".Task09_Spleen.lock", "Task09_Spleen"]  # no staging folder or archive left
