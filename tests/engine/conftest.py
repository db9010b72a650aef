"""Fixtures of the engine tests (helpers in engine_helpers.py, importable from the workers too)."""

from __future__ import annotations

import pytest
from engine_helpers import fake_builder, use_fake_data

from stfn.engine import features


@pytest.fixture
def fake_data(monkeypatch: pytest.MonkeyPatch):
    """Serve :class:`FakeVideos` wherever the engine builds a dataset."""
    use_fake_data(monkeypatch, fake_builder())
    monkeypatch.setattr(features, "_extraction_dataset", lambda cfg, subset: fake_builder()(cfg, subset, views=1))
    return fake_builder


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The real chain's input: ``generate(preset="tiny")`` then ``prepare_dataset``, once per session.

    ``splits_odd`` is a copy of the split folder whose test list lacks its last video (15 of 16), so
    a 2-process evaluation cannot split the test set evenly."""
    from stfn.data.prepare.run import prepare_dataset
    from stfn.data.synthetic.generate import generate

    root = tmp_path_factory.mktemp("tiny_data")
    generate(root / "syn", "tiny", seed=0)
    prepare_dataset(root / "syn" / "videos", root / "prepared", workers=1, progress=False)
    odd = root / "splits_odd"
    odd.mkdir()
    for f in (root / "syn" / "splits").iterdir():
        lines = f.read_text().splitlines(keepends=True)
        (odd / f.name).write_text("".join(lines[:-1] if f.name.startswith("testlist") else lines))
    return {"root": str(root / "prepared"), "splits": str(root / "syn" / "splits"), "splits_odd": str(odd)}
