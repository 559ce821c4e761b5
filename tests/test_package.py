"""The package's face: ``import tlgan`` gives the main verbs, and the README's Python example
runs as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import torch

import tlgan

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_name_in_all_exists():
    assert tlgan.__version__ == "0.1.0"
    for name in tlgan.__all__:
        value = getattr(tlgan, name)
        assert name == "__version__" or callable(value), name
    assert set(tlgan.__all__) <= set(dir(tlgan))
    # the names are the ones their modules define, not copies
    from tlgan.evaluation.report import write_report
    from tlgan.sampling.sample import sample

    assert tlgan.write_report is write_report and tlgan.sample is sample


def test_import_tlgan_is_light_and_unknown_names_fail():
    code = "import sys, tlgan; assert 'torch' not in sys.modules, 'torch'; tlgan.nothing_here"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(Path(tlgan.__file__).parents[1])},
    )
    assert "module 'tlgan' has no attribute 'nothing_here'" in result.stderr, result.stderr


def readme_python_example() -> str:
    text = README.read_text()
    section = text[text.index("## Using it") :]
    section = section[: section.index("\n## ", 1)]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1
    return blocks[0]


def test_readme_example_runs_as_written(tmp_path, monkeypatch):
    code = readme_python_example()
    assert re.findall(r"^(?:from|import) .*$", code, re.M) == ["import tlgan"]
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    assert (tmp_path / "runs" / "small" / "manifest.json").is_file() and (
        tmp_path / "axes.safetensors"
    ).is_file()
    images = namespace["images"]
    assert images.shape == (4, 3, 64, 64) and images.min() >= -1 and images.max() <= 1
    # the edit did what it says: the classifier sees more smile, and no more maleness than before
    F, G, z = namespace["F"], namespace["G"], namespace["z"]
    with torch.inference_mode():
        before, after = F.logits(G.synthesize(z)), F.logits(images)
    smiling, male = F.attributes.index("Smiling"), F.attributes.index("Male")
    assert (after[:, smiling] - before[:, smiling]).mean() > 1.0
    assert (after[:, male] - before[:, male]).abs().mean() < (after[:, smiling] - before[:, smiling]).mean()


def test_python_dash_m_tlgan_is_the_command_line():
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "tlgan", "bench", "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "Usage: python -m tlgan bench" in done.stdout and "--only" in done.stdout
