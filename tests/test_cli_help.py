"""Every command-line entry point answers --help (exit 0) and documents its flags."""

import importlib
from pathlib import Path

import pytest




def _cli_modules():
    root = Path(__file__).resolve().parents[1] / "domains"
    for path in sorted(root.glob("*/*.py")):
        src = path.read_text()
        if "def main(" in src and '__name__ == "__main__"' in src:
            yield f"domains.{path.parent.name}.{path.stem}"


CLIS = sorted(set(_cli_modules()))


def test_every_domain_has_its_verbs():
    for d in ("medical", "finance", "recommendation"):
        for verb in ("train", "score"):
            assert f"domains.{d}.{verb}" in CLIS, f"missing CLI domains.{d}.{verb}"


@pytest.mark.parametrize("module", CLIS)
def test_help(module, capsys):
    mod = importlib.import_module(module)
    with pytest.raises(SystemExit) as e:
        mod.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "usage:" in out and "--" in out


def test_help_keeps_the_example_lines_and_states_each_default_once(capsys):
    """The description (a module docstring of example commands) is shown line by line, not reflowed into one
    paragraph, and a flag whose help states its own default gets no second '(default: None)'."""
    mod = importlib.import_module("domains.recommendation.recommend")
    with pytest.raises(SystemExit):
        mod.main(["--help"])
    out = capsys.readouterr().out
    lines = out.splitlines()
    examples = [ln for ln in lines if ln.lstrip().startswith("python -m domains.recommendation.recommend --")]
    assert len(examples) >= 3, out  # one command per line, as the docstring writes them
    model_run = out[out.index("\n  --model-run MODEL_RUN") + 3:].split("\n  --")[0]  # its entry under options, not the usage line
    assert model_run.count("(default:") == 1, model_run
