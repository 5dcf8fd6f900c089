"""``clearmamba data``: generate -> check round trip, a named error with exit code 1, preview PNG."""

from __future__ import annotations

from PIL import Image
from typer.testing import CliRunner

from clearmamba.cli.main import app
from tests.cli.run import assert_clean_error, clearmamba

runner = CliRunner()


def test_generate_then_check(tmp_path):
    args = ["data", "generate", str(tmp_path), "--n", "4", "--size", "16", "--frames", "3"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "manifest.csv").is_file() and len(list((tmp_path / "frames").glob("*.png"))) == 12
    result = runner.invoke(app, ["data", "check", str(tmp_path / "manifest.csv")])
    assert result.exit_code == 0, result.output
    assert "4 exams" in result.output and "skipped: 0" in result.output


def test_check_reports_the_bad_row(tmp_path):
    (tmp_path / "m.csv").write_text("path,label\nmissing.png,normal\n")
    assert_clean_error(clearmamba("data", "check", tmp_path / "m.csv"), "m.csv:2", "missing.png: file not found")


def test_preview_writes_a_grid(tmp_path):
    out = tmp_path / "p.png"
    result = runner.invoke(app, ["data", "preview", "--out", str(out), "--size", "16", "--frames", "3"])
    assert result.exit_code == 0, result.output
    with Image.open(out) as img:
        width, height = img.size
    assert width > 3 * 32 and height > 12 * 32  # 3 frames across, 6 classes x 2 modalities down
