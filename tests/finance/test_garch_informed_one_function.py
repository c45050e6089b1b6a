"""Whether a forecaster is GARCH-informed is decided by one function, for a built forecaster (train, forecast,
finetune) and for the forecaster.json that score's driver reads without building the model."""

from types import SimpleNamespace

from domains.finance.features import FoldScaler


def _scaler(gjr: dict) -> FoldScaler:
    return FoldScaler(cutoff="2020-01-02", ret_scale={"AAPL": 1.0}, absret_scale={"AAPL": 1.0}, lrv_center={"AAPL": 0.0},
                      lrv_scale={"AAPL": 1.0}, cov_stats={}, gjr=gjr, gjr_horizon=5 if gjr else 0)


def test_a_forecaster_and_its_saved_description_give_the_same_answer():
    from domains.finance.model import is_garch_informed

    for gjr in ({"AAPL": [0.01, 0.05, 0.1, 0.85, 6.0]}, {}):
        fc = SimpleNamespace(scaler=_scaler(gjr))  # the attributes is_garch_informed reads of a Forecaster
        saved = {"scaler": fc.scaler.to_dict(), "garch_informed": bool(gjr)}  # as Forecaster.save writes them
        written_before_the_key = {"scaler": fc.scaler.to_dict()}
        assert is_garch_informed(fc) is is_garch_informed(saved) is is_garch_informed(written_before_the_key) is bool(gjr)
    assert is_garch_informed({}) is False and is_garch_informed({"scaler": None}) is False


def test_every_module_imports_it_from_its_home_the_model_module():
    """training re-exported it from model and finetuning and forecast imported it from training: one function reached by
    two import paths. Each finance module now imports it from model, and training no longer lists it."""
    import ast
    from pathlib import Path

    from domains.finance import forecast, model, score, training

    sources = {}
    for f in sorted(Path(model.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and any(a.name == "is_garch_informed" for a in node.names):
                sources[f.stem] = node.module
    assert {"forecast", "finetuning", "score", "training"} <= set(sources)
    assert set(sources.values()) == {"domains.finance.model"}, sources
    assert "is_garch_informed" not in training.__all__
    assert score.is_garch_informed is forecast.is_garch_informed is model.is_garch_informed
