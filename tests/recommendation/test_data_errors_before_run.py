"""train and train_sequential read --data before a run folder exists: a file they cannot use (mixed date orders,
a missing column, an empty file) is one line on stderr, exit 2, and no failed run folder is left behind (the data
used to be loaded inside the run). The data is read once: the run trains on the frame checked before it."""

from __future__ import annotations

import pytest

import domains.recommendation.data as rec_data

BAD_FILES = {
    "mixed-orders.csv": "user_id,item_id,timestamp\n1,1,13/01/2024\n1,2,01/14/2024\n2,1,02/02/2024\n",
    "no-item-column.csv": "user_id,timestamp\n1,1\n2,1\n",  # (a file without timestamps alone: test_no_timestamp_column.py)
    "empty.csv": "",
}


def _main(command: str):
    if command == "train":
        from domains.recommendation.train import main
    else:
        from domains.recommendation.train_sequential import main
    return main


@pytest.mark.parametrize("command", ["train", "train_sequential"])
@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_a_bad_data_file_is_refused_before_a_run_folder(command, name, tmp_path, capsys):
    p = tmp_path / name
    p.write_text(BAD_FILES[name])
    runs = tmp_path / "runs"
    rc = _main(command)(["--data", str(p), "--runs-dir", str(runs), "--no-track", "--epochs", "1",
                         *(["--text", "none", "--no-wide"] if command == "train" else ["--no-text"])])
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and name in lines[0], err
    assert "Run directory" not in err, err
    assert not runs.exists() or not any(runs.rglob("run.json")), sorted(map(str, runs.rglob("*")))


def test_train_reads_the_data_once(tmp_path, monkeypatch):
    """The frame checked before the run is the one trained on: load_dataset runs once per train."""
    import numpy as np
    import pandas as pd

    from domains.recommendation import training
    from domains.recommendation.train import TrainConfig, train

    rng = np.random.default_rng(0)
    rows = [(u, f"i{i}", t) for u in range(8) for t, i in enumerate(rng.choice(20, 5, replace=False))]
    p = tmp_path / "inter.csv"
    pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).to_csv(p, index=False)
    calls = []
    real = rec_data.load_dataset

    def counting(*a, **kw):
        calls.append(a)
        return real(*a, **kw)

    monkeypatch.setattr(training, "load_dataset", counting)
    run = train(TrainConfig(runs_dir=str(tmp_path / "runs"), name="once", data=str(p), track=False, epochs=1, max_steps=1,
                            baselines=False, text="none", wide=False, validation_ratio=0))
    assert (run / "metrics.json").is_file()
    assert len(calls) == 1
