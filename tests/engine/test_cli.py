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


def test_expected_failures_are_user_errors_naming_the_flag_or_file(tmp_path):
    """The engine raises UserError subclasses; ``clearmamba``'s main prints them as one ``error:`` line."""
    from clearmamba.engine.errors import InputFolderError, NoStateError, OutFolderError, VocabularyError
    from clearmamba.errors import UserError

    def failure(*args: str) -> BaseException:
        result = CliRunner().invoke(app, ["engine", *args])
        assert result.exit_code != 0 and isinstance(result.exception, UserError), result.output
        return result.exception

    err = failure("status", "--out", str(tmp_path / "nowhere"))
    assert isinstance(err, NoStateError) and "--out" in str(err) and "nowhere" in str(err)
    err = failure("run", str(tmp_path / "nope"), "--out", str(tmp_path / "o"))
    assert isinstance(err, InputFolderError) and "expected a folder of PDF reports" in str(err)
    (tmp_path / "v.json").write_text('["not", "a", "mapping"]')
    (tmp_path / "pdfs").mkdir()
    err = failure("run", str(tmp_path / "pdfs"), "--out", str(tmp_path / "o"), "--vocab", str(tmp_path / "v.json"))
    assert isinstance(err, VocabularyError) and "--vocab" in str(err) and "v.json" in str(err)
    assert "expected a mapping" in str(err)
    (tmp_path / "out.txt").write_text("x")
    err = failure("run", str(tmp_path / "pdfs"), "--out", str(tmp_path / "out.txt"))
    assert isinstance(err, OutFolderError) and "--out" in str(err) and "is a file" in str(err)
    err = failure("review", "--out", str(tmp_path / "nowhere"))
    assert isinstance(err, NoStateError)
