import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="the letters are rendered from matplotlib's bundled fonts")

from clearmamba.experiments.letters import LETTERS, font_files, frame_like_mnist, render_letters  # noqa: E402


def test_fonts_are_the_bundled_text_fonts():
    names = [p.name for p in font_files()]
    assert "DejaVuSans.ttf" in names and "cmr10.ttf" in names
    assert not any("STIXSiz" in n or "cmex" in n or "LastResort" in n for n in names)


def test_frame_like_mnist_scales_into_a_20px_box_and_centres_the_mass():
    ink = np.zeros((40, 10), np.float32)
    ink[:, :] = 255.0  # a 40 x 10 bar -> 20 x 5 after scaling
    out = frame_like_mnist(ink)
    rows, cols = np.nonzero(out > 127)
    assert rows.max() - rows.min() + 1 == 20 and cols.max() - cols.min() + 1 == 5
    ys, xs = np.indices(out.shape)
    mass = out.astype(float).sum()
    assert abs((ys * out).sum() / mass - 14) <= 1.0 and abs((xs * out).sum() / mass - 14) <= 1.0
    with pytest.raises(ValueError, match="no ink"):
        frame_like_mnist(np.zeros((5, 5), np.float32))


def test_render_letters_shapes_labels_and_reproducibility():
    images, labels = render_letters(per_letter=4, seed=3)
    assert images.shape == (40, 28, 28) and images.dtype == np.uint8
    assert labels.tolist() == [k for k in range(len(LETTERS)) for _ in range(4)]
    assert images.max() == 255 and (images[:, 0, :] == 0).all()  # ink never touches the border row
    np.testing.assert_array_equal(images, render_letters(per_letter=4, seed=3)[0])
    # different letters look different: class-mean images are far apart
    means = images.reshape(10, 4, -1).mean(1).astype(float)
    distances = np.linalg.norm(means[:, None] - means[None], axis=-1)
    assert distances[~np.eye(10, dtype=bool)].min() > 100
