"""Files tlgan writes get the mode a plain ``open()`` gives under the umask (0644 under 022),
not the private 0600 of a temporary file."""

from __future__ import annotations

import os
import stat

import pytest
import torch

import tlgan
from tlgan.imaging import save_grid


@pytest.fixture
def umask(request):
    before = os.umask(request.param)
    yield request.param
    os.umask(before)


def modes(folder) -> dict[str, int]:
    return {
        str(p.relative_to(folder)): stat.S_IMODE(p.stat().st_mode)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("umask", [0o022, 0o027], indirect=True)
def test_written_files_follow_the_umask(umask, tmp_path):
    G, F = tlgan.load_generator("toyfaces-gan"), tlgan.load_classifier("toyfaces-classifier")
    run = tlgan.sample(G, F, 300, tmp_path / "run", seed=0, shard_size=200, progress=False)
    axes = tlgan.fit_axes(run, "logistic")
    axes.save(tmp_path / "axes.safetensors")
    save_grid(torch.zeros(2, 3, 8, 8), tmp_path / "grid.png")
    tlgan.write_report(
        run,
        axes,
        tmp_path / "report",
        generator=G,
        classifier=F,
        methods=("logistic",),
        unsupervised=(),
        edit_faces=2,
        progress=False,
    )
    found = modes(tmp_path)
    for expected in (
        "run/manifest.json",
        "run/shard-00000.safetensors",
        "run/shard-00001.safetensors",
        "axes.safetensors",
        "grid.png",
        "report/report.html",
        "report/report.json",
    ):
        assert expected in found
    assert any(name.startswith("report/") and name.endswith(".png") for name in found)
    assert found == {name: 0o666 & ~umask for name in found}
