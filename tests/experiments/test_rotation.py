import pytest
import torch

from clearmamba.experiments.rotation import rotate, rotation_series


def test_quarter_and_half_turns_match_exact_pixel_permutations():
    x = torch.rand(3, 2, 28, 28)
    torch.testing.assert_close(rotate(x, 0.0), x, atol=1e-5, rtol=0)
    # counter-clockwise on screen, like torch.rot90 over (h, w)
    torch.testing.assert_close(rotate(x, 90.0), torch.rot90(x, 1, (-2, -1)), atol=1e-5, rtol=0)
    torch.testing.assert_close(rotate(x, 180.0), x.flip(-1, -2), atol=1e-5, rtol=0)
    torch.testing.assert_close(rotate(x, -90.0), torch.rot90(x, -1, (-2, -1)), atol=1e-5, rtol=0)


def test_top_pixel_goes_left_for_plus_90():
    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 2, 13:15] = 1.0  # a mark near the top centre
    y = rotate(x, 90.0)[0, 0]
    assert y[13:15, 2].min() > 0.99 and y[2, 13:15].max() < 1e-6


def test_rotation_keeps_mass_inside_the_frame_and_per_image_angles():
    # a smooth elongated blob: bilinear resampling keeps its mass and turns its principal axis
    ys, xs = torch.meshgrid(torch.arange(28.0) - 13.5, torch.arange(28.0) - 13.5, indexing="ij")
    blob = torch.exp(-(ys**2) / (2 * 4.0**2) - xs**2 / (2 * 1.5**2))
    x = blob.expand(2, 1, 28, 28).clone()
    y = rotate(x, torch.tensor([30.0, 45.0]))
    torch.testing.assert_close(y.sum((1, 2, 3)), x.sum((1, 2, 3)), rtol=0.005, atol=0)
    turned = rotate(x[:1], 90.0)[0, 0]
    torch.testing.assert_close(turned, blob.T, atol=1e-4, rtol=0)
    torch.testing.assert_close(y[1], rotate(x[1:], 45.0)[0])


def test_rotation_series_angles_and_errors():
    images, angles = rotation_series(torch.rand(1, 28, 28), 180.0, 10.0)
    assert images.shape == (19, 1, 28, 28)
    assert angles.tolist() == [10.0 * i for i in range(19)]
    with pytest.raises(ValueError, match="batch, channels, height, width"):
        rotate(torch.rand(28, 28), 10.0)
    with pytest.raises(ValueError, match="got 3 angles for 2 images"):
        rotate(torch.rand(2, 1, 8, 8), [1.0, 2.0, 3.0])
