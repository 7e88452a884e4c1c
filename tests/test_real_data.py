"""tests/data, the real images the tests read: documented file by file, and true to the
shared data set it was taken from (checked where that set is present)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import tifffile

# The two QCANet stacks are top-left crops; every other file is a byte-identical copy.
CROPS = {
    "qcanet_mouse_embryo_3d/train/images/8_cell_stage.tif": np.s_[:28, :92, :93],
    "qcanet_mouse_embryo_3d/train/masks/8_cell_stage.tif": np.s_[:28, :92, :93],
    "qcanet_mouse_embryo_3d/test/images/16_cell_stage.tif": np.s_[:26, :96, :96],
}


def _files(real_data: Path) -> list[str]:
    return sorted(p.relative_to(real_data).as_posix() for p in real_data.rglob("*")
                  if p.is_file() and p.name != "README.md")


def _listed(real_data: Path) -> list[str]:
    text = (real_data / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Every file\n.*?```text\n(.*?)```", text, re.S)
    assert block, "tests/data/README.md lost its '## Every file' list"
    return sorted(block.group(1).split())


def test_every_file_is_listed_with_its_attribution(real_data: Path) -> None:
    assert _files(real_data) == _listed(real_data)
    text = (real_data / "README.md").read_text(encoding="utf-8")
    for phrase in ("CC0", "MIT", "doi:10.1038/s41592-019-0612-7", "doi:10.1038/s41540-020-00152-8",
                   "Arganda-Carreras", "Cardona"):
        assert phrase in text


def test_files_are_the_shared_data(real_data: Path, shared_data: Path) -> None:
    for name in _files(real_data):
        if name in CROPS:
            original = tifffile.imread(shared_data / name)
            np.testing.assert_array_equal(tifffile.imread(real_data / name), original[CROPS[name]])
        else:
            assert (real_data / name).read_bytes() == (shared_data / name).read_bytes(), name
