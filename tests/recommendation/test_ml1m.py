"""Issue 16.6: a user-supplied MovieLens-1M folder (``ratings.dat``, ``users.dat``, ``movies.dat`` in
the exact ml-1m format: ``::``-separated, latin-1, ml-1m age/occupation codes) runs end to end under
both protocols — train, evaluate, score, recommend — on a small synthetic folder."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from domains.recommendation.train import TrainConfig, train

GENRES = ["Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy", "Film-Noir",
          "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western"]


def write_ml1m_folder(folder, n_users: int = 60, n_movies: int = 80, per_user: int = 25, seed: int = 0):
    """A folder in ml-1m's layout: ratings.dat UserID::MovieID::Rating::Timestamp; users.dat
    UserID::Gender::Age::Occupation::Zip-code; movies.dat MovieID::Title (Year)::Genre|Genre."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    movie_ids = np.sort(rng.choice(np.arange(1, 4000), n_movies, replace=False))  # ml-1m ids are sparse
    with open(folder / "movies.dat", "w", encoding="latin-1") as f:
        for m in movie_ids:
            g = "|".join(rng.choice(GENRES, rng.integers(1, 4), replace=False))
            f.write(f"{m}::Movie {m} café ({rng.integers(1930, 2001)})::{g}\n")
    ages = [1, 18, 25, 35, 45, 50, 56]
    with open(folder / "users.dat", "w", encoding="latin-1") as f:
        for u in range(1, n_users + 1):
            f.write(f"{u}::{'MF'[u % 2]}::{ages[u % 7]}::{u % 21}::{10000 + u}\n")
    pop = rng.zipf(1.5, n_movies).astype(float)
    with open(folder / "ratings.dat", "w", encoding="latin-1") as f:
        for u in range(1, n_users + 1):
            items = rng.choice(movie_ids, per_user, replace=False, p=pop / pop.sum())
            for t, m in enumerate(items):
                f.write(f"{u}::{m}::{rng.integers(1, 6)}::{978300000 + 1000 * u + t}\n")
    return folder


TINY = dict(track=False, text="none", id_dim=8, feature_dim=4, hidden=[16], out_dim=8, batch_size=128, epochs=2, patience=0, bpr_epochs=1)


@pytest.mark.parametrize("split", ["msr-stratified-75", "leave-last-out"])
def test_ml1m_folder_end_to_end(tmp_path, split, capsys):
    from domains.recommendation import evaluate, recommend
    from domains.recommendation.score import ScoreConfig, score

    folder = write_ml1m_folder(tmp_path / "ml-1m")
    runs = tmp_path / "runs"
    run_dir = train(TrainConfig(runs_dir=str(runs), name=f"ml1m-{split}", data=str(folder), split=split, **TINY))
    info = json.loads((run_dir / "split.json").read_text())
    assert info["split"] == split and info["test_users"] == 60
    assert info["test_rows"] == (60 if split == "leave-last-out" else 60 * 6)  # 25 - round(0.75 * 25) = 6 per user
    m = pd.read_parquet(run_dir / "eval_metrics.parquet").set_index("model")
    assert {"two_tower", "most_popular", "bpr_mf"} <= set(m.index) and m.loc["two_tower", "users_evaluated"] == 60
    report = json.loads((run_dir / "data_report.json").read_text())
    assert report["rows_out"] == 60 * 25 and report["users"] == 60 and report["items"] == 80
    jobs = ["--model-run", str(run_dir), "--runs-dir", str(runs)]
    assert evaluate.main([*jobs, "--no-track"]) == 0
    assert recommend.main([*jobs, "--user", "7", "--k", "5"]) == 0
    assert "Top 5 for user 7" in capsys.readouterr().out
    res = score(ScoreConfig(model_run=str(run_dir), runs_dir=str(runs), k=5, index="flat", progress=False))
    assert res["rows"] == 2 * 60 * 5 and res["approx_recall_vs_exact"]["faiss-flat"] == pytest.approx(1.0)
