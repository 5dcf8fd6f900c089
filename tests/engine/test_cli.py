from __future__ import annotations

import json

from typer.testing import CliRunner

from clearmamba.cli.main import app


def test_engine_commands_are_registered():
    result = CliRunner().invoke(app, ["engine", "--help"])
    assert result.exit_code == 0
    for command in ("run", "status", "review"):
        assert command in result.output


def test_run_on_bad_pdfs_records_and_skips_them(corpus, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["engine", "run", str(corpus["bad"]["bomb"].parent), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "errors.log" in result.output and "bad_bomb" not in result.output  # paths stay in the private log
    status = CliRunner().invoke(app, ["engine", "status", "--out", str(out)])
    assert status.exit_code == 0
    counts = json.loads(status.output[: status.output.rindex("}") + 1])
    assert counts["failed"] == {"bomb": 2, "encrypted": 1, "not_pdf": 1, "truncated": 1}
    assert counts["sources"] == {"failed": 5}


def test_clear_errors_for_missing_folders_and_bad_vocabulary(tmp_path):
    r = CliRunner().invoke(app, ["engine", "status", "--out", str(tmp_path / "nowhere")])
    assert r.exit_code == 2 and "no engine state" in r.output
    r = CliRunner().invoke(app, ["engine", "run", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "expected a folder of PDF reports" in r.output
    (tmp_path / "v.json").write_text('["not", "a", "mapping"]')
    (tmp_path / "pdfs").mkdir()
    r = CliRunner().invoke(
        app,
        [
            "engine",
            "run",
            str(tmp_path / "pdfs"),
            "--out",
            str(tmp_path / "o"),
            "--vocab",
            str(tmp_path / "v.json"),
        ],
    )
    assert r.exit_code == 2 and "v.json" in r.output and "expected a mapping" in r.output
