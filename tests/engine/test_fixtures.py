"""The fixtures never depend on the machine: fonts come from a pinned wheel or the committed subset, and the same
seed writes the same corpus."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from clearmamba.testing import fonts
from clearmamba.testing.reports import HARD, STANDARD, generate_corpus, generator_cjk_text


def test_every_generated_chinese_character_is_in_the_committed_font():
    assert fonts.missing_glyphs(generator_cjk_text()) == set()
    assert fonts.font_path("右眼 OD") == fonts.CJK_FONT and fonts.CJK_FONT.is_file()


def test_latin_font_comes_from_the_matplotlib_wheel_not_the_system():
    import matplotlib

    path = fonts.font_path("ZHANG WEI ID:3432265651")
    assert Path(matplotlib.__file__).parent in path.parents
    assert not str(path).startswith("/usr/share/fonts")


@pytest.mark.parametrize("style", [STANDARD, HARD], ids=["standard", "hard"])
def test_same_seed_same_corpus(tmp_path, style):
    a = generate_corpus(tmp_path / "a", 2, seed=3, style=style, scanned_fraction=0.5)
    b = generate_corpus(tmp_path / "b", 2, seed=3, style=style, scanned_fraction=0.5)
    assert a == b

    def digest(folder: Path) -> list[str]:
        return [hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.pdf"))]

    assert digest(tmp_path / "a") == digest(tmp_path / "b")
