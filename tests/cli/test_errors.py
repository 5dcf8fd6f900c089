"""Every input mistake a new user makes gets one readable line: exit code 2, no traceback, the file or flag named."""

import struct
import sys
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from clearmamba import __version__
from tests.cli.run import assert_clean_error, clearmamba
from tests.cli.test_train_cli import write_npz


def huge_png(path, side=30000):
    """A PNG whose header claims side x side pixels (900 megapixels) while the file holds a few bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def png(path, side=16, value=100):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((side, side), value, dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("errors")
    write_npz(root / "data.npz")
    result = clearmamba("train", "--data", root / "data.npz", "--out", root / "run", "--epochs", "1")
    assert result.code == 0, result.output
    return root / "run"


def test_a_missing_data_path(tmp_path):
    assert_clean_error(clearmamba("train", "--data", tmp_path / "nope.csv", "--out", tmp_path / "r"),
                       "--data", "nope.csv", "no such file")


def test_a_model_name_typo_is_reported_before_any_data_is_read(tmp_path):
    # the data path does not exist either: the model is checked first
    result = clearmamba("train", "--data", tmp_path / "nope.csv", "--out", tmp_path / "r", "--model", "clear_mamba_tny")
    assert_clean_error(result, "--model clear_mamba_tny", "clear_mamba_tiny")
    assert "nope.csv" not in result.stderr


def test_a_head_typo_names_the_flag_and_the_choices(tmp_path):
    result = clearmamba("train", "--data", "builtin", "--out", tmp_path / "r", "--head", "evidental")
    assert_clean_error(result, "--head", "'evidental'", "evidential", "softmax")


def test_an_out_of_range_learning_rate_names_the_flag(tmp_path):
    assert_clean_error(clearmamba("train", "--data", "builtin", "--out", tmp_path / "r", "--lr", "0"), "--lr: 0.0")


def test_an_existing_out_and_nothing_to_resume(tmp_path, run):
    assert_clean_error(clearmamba("train", "--data", "builtin", "--out", run), "--out", "already exists", "--overwrite")
    assert_clean_error(clearmamba("train", "--data", "builtin", "--out", tmp_path / "new", "--resume"),
                       "--resume", "no resumable run")


def test_a_missing_checkpoint(tmp_path):
    assert_clean_error(clearmamba("predict", "--checkpoint", tmp_path / "none", tmp_path / "x.png"),
                       "--checkpoint", "none", "no such file or folder")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "last").mkdir()
    assert_clean_error(clearmamba("evaluate", "--checkpoint", tmp_path / "half", "--data", "builtin"),
                       "no clearmamba checkpoint", "--resume")


def test_a_pickle_checkpoint_is_refused_in_one_line(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "model.pt")
    result = clearmamba("predict", "--checkpoint", tmp_path / "model.pt", png(tmp_path / "a.png"))
    assert_clean_error(result, "model.pt", "pickle")


def test_a_flat_ood_folder_is_read_as_one_frame_exams(run, tmp_path):
    for i in range(3):
        png(tmp_path / "stills" / f"s{i}.png", value=30 * i)
    write_npz(tmp_path / "data.npz")
    result = clearmamba("evaluate", "--checkpoint", run, "--data", tmp_path / "data.npz", "--ood",
                        f"stills={tmp_path / 'stills'}", "--out", tmp_path / "e", "--n-boot", "0")  # fmt: skip
    assert result.code == 0, result.output
    assert "ood_stills (3 exams" in result.stdout


def test_a_decompression_bomb_is_refused_everywhere_and_predict_carries_on(run, tmp_path):
    bomb = huge_png(tmp_path / "bomb.png")
    png(tmp_path / "folder" / "0" / "x.png")  # class "0", one of the checkpoint's
    (tmp_path / "folder" / "0" / "bomb.png").write_bytes(bomb.read_bytes())
    assert_clean_error(clearmamba("data", "check", tmp_path / "folder"), "bomb.png", "megapixels", "--max-pixels")
    assert_clean_error(clearmamba("train", "--data", tmp_path / "folder", "--out", tmp_path / "r"), "bomb.png",
                       "--max-pixels")
    assert_clean_error(clearmamba("evaluate", "--checkpoint", run, "--data", tmp_path / "folder"), "bomb.png")
    good = png(tmp_path / "good.png")
    result = clearmamba("predict", "--checkpoint", run, bomb, good)
    assert result.code == 0, result.output
    assert "bomb.png" in result.stderr and "megapixels" in result.stderr and "good.png: " in result.stdout
    assert "Traceback" not in result.output


def test_a_latin1_manifest_names_the_line_and_reads_with_encoding(tmp_path):
    png(tmp_path / "a.png")
    png(tmp_path / "b.png", value=200)
    (tmp_path / "m.csv").write_bytes("path,label\na.png,normal\nb.png,Läsion\n".encode("latin-1"))
    assert_clean_error(clearmamba("data", "check", tmp_path / "m.csv"), "m.csv:3", "UTF-8", "--encoding")
    result = clearmamba("data", "check", tmp_path / "m.csv", "--encoding", "latin-1")
    assert result.code == 0 and "Läsion" in result.stdout, result.output


def test_a_binary_manifest(tmp_path):
    (tmp_path / "m.csv").write_bytes(bytes(range(256)) * 4)
    assert_clean_error(clearmamba("data", "check", tmp_path / "m.csv"), "m.csv", "not a text CSV")


def test_nan_images_are_refused_naming_the_file_and_index(tmp_path):
    images = np.random.default_rng(0).random((6, 16, 16)).astype(np.float32)
    images[4, 3, 3] = np.nan
    np.savez(tmp_path / "nan.npz", train_images=images, train_labels=np.array([0, 1, 0, 1, 0, 1])[:, None])
    assert_clean_error(clearmamba("data", "check", tmp_path / "nan.npz"), "nan.npz", "image 4", "NaN")
    assert_clean_error(clearmamba("train", "--data", tmp_path / "nan.npz", "--out", tmp_path / "r"), "image 4")


def test_a_stray_label_is_not_a_new_class(tmp_path):
    labels = np.array([0, 1, 2, 0, 1, 7])[:, None]
    images = np.zeros((6, 16, 16), dtype=np.uint8)
    np.savez(tmp_path / "typo.npz", train_images=images, train_labels=labels)
    assert_clean_error(clearmamba("data", "check", tmp_path / "typo.npz"), "typo.npz", "train_labels[5] is 7",
                       "0..K-1")


def test_a_one_pixel_image_is_refused(run, tmp_path):
    tiny = png(tmp_path / "tiny.png", side=1)
    result = clearmamba("predict", "--checkpoint", run, tiny)
    assert result.code == 1 and "tiny.png: image is 1x1 pixels; expected at least 8x8" in result.stderr
    assert "Traceback" not in result.output


def test_a_test_only_manifest_cannot_train(tmp_path):
    png(tmp_path / "a.png")
    (tmp_path / "m.csv").write_text("path,exam_id,label,split\na.png,1,normal,test\na.png,2,other,test\n")
    assert_clean_error(clearmamba("train", "--data", tmp_path / "m.csv", "--out", tmp_path / "r"),
                       "no training exams")


def test_a_missing_optional_package_names_its_pip_line(tmp_path, monkeypatch):
    png(tmp_path / "c" / "a.png")
    monkeypatch.setitem(sys.modules, "PIL.Image", None)
    assert_clean_error(clearmamba("data", "check", tmp_path), 'pip install "clearmamba[data]"', "pillow")


def test_debug_shows_the_traceback(tmp_path):
    from clearmamba.cli.main import main
    from clearmamba.errors import UserError

    with pytest.raises(UserError, match="nope.csv"):  # raised, so Python prints the traceback
        main(["train", "--data", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "r"), "--debug"])


def test_version_flag_and_help_examples():
    result = clearmamba("--version")
    assert result.code == 0 and result.stdout.strip() == f"clearmamba {__version__}"
    for command in ("train", "evaluate", "predict", "demo"):
        help_text = clearmamba(command, "--help").stdout
        assert "Example:" in help_text and f"clearmamba {command}" in help_text, command
        assert "<bool>" not in help_text and "list[str]" not in help_text and "<str>" not in help_text, help_text
    assert "[default: 20" in clearmamba("train", "--help").stdout
