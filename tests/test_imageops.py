"""Image ops of AugMix/AugMax: the intensity ops agree with PIL on 8-bit images, the geometric ops
are the maps they claim to be, magnitudes follow the severity, randomness is per image and seeded."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from smoothcert import imageops as I


def _uint8_images(n: int, channels: int, size: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.RandomState(seed)
    return (rng.beta(2, 5, size=(n, size, size, channels)) * 255).astype(np.uint8)


def _to_tensor(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("op", ["equalize", "autocontrast", "posterize", "solarize"])
def test_intensity_ops_match_pil(op: str, channels: int) -> None:
    Image = pytest.importorskip("PIL.Image")
    ImageOps = pytest.importorskip("PIL.ImageOps")
    arr = _uint8_images(6, channels)
    ours_fn = {"equalize": I.equalize, "autocontrast": I.autocontrast,
               "posterize": lambda t: I.posterize(t, 3), "solarize": lambda t: I.solarize(t, 100 / 255)}[op]
    pil_fn = {"equalize": ImageOps.equalize, "autocontrast": ImageOps.autocontrast,
              "posterize": lambda im: ImageOps.posterize(im, 3), "solarize": lambda im: ImageOps.solarize(im, 100)}[op]
    ours = (ours_fn(_to_tensor(arr)) * 255).round().to(torch.int64).permute(0, 2, 3, 1).numpy()
    ref = np.stack([np.array(pil_fn(Image.fromarray(a[..., 0] if channels == 1 else a))) for a in arr])
    ref = ref.reshape(ours.shape).astype(np.int64)
    tol = 1 if op == "autocontrast" else 0  # PIL rounds its autocontrast table in integers
    assert np.abs(ours - ref).max() <= tol


def test_per_image_magnitudes_equal_separate_calls() -> None:
    x = torch.rand(3, 2, 12, 12, generator=torch.Generator().manual_seed(0))
    for fn, mags in [(I.rotate, torch.tensor([5.0, -20.0, 90.0])), (I.shear_x, torch.tensor([0.1, -0.3, 0.0])),
                     (I.translate_y, torch.tensor([1.5, -2.0, 0.0])), (I.solarize, torch.tensor([0.2, 0.5, 0.9])),
                     (I.posterize, torch.tensor([1, 4, 8]))]:
        batched = fn(x, mags)
        for i in range(3):
            assert torch.allclose(batched[i : i + 1], fn(x[i : i + 1], mags[i : i + 1]), atol=1e-6)


def test_rotate_is_a_rotation_about_the_centre() -> None:
    x = torch.rand(2, 3, 10, 10, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(I.rotate(x, 90.0), torch.rot90(x, 1, dims=(-2, -1)), atol=1e-5)  # counter-clockwise
    assert torch.allclose(I.rotate(x, -90.0), torch.rot90(x, -1, dims=(-2, -1)), atol=1e-5)
    assert torch.allclose(I.rotate(x, 180.0), torch.flip(x, dims=(-2, -1)), atol=1e-5)
    assert torch.allclose(I.rotate(x, 0.0), x, atol=1e-6)


def test_translate_shifts_with_zero_fill() -> None:
    x = torch.rand(2, 1, 9, 9, generator=torch.Generator().manual_seed(2)) + 0.1
    right = I.translate_x(x, 2.0)
    assert torch.allclose(right[..., 2:], x[..., :-2], atol=1e-6) and right[..., :2].abs().max() == 0
    up = I.translate_y(x, -3.0)
    assert torch.allclose(up[..., :-3, :], x[..., 3:, :], atol=1e-6) and up[..., -3:, :].abs().max() == 0


def test_shear_moves_pixels_along_one_axis_only() -> None:
    rows = torch.linspace(0, 1, 16).view(1, 1, 16, 1).expand(2, 3, 16, 16)  # constant along x
    cols = rows.transpose(2, 3)  # constant along y
    inner = (slice(None), slice(None), slice(4, 12), slice(4, 12))
    assert torch.allclose(I.shear_x(rows, 0.2)[inner], rows[inner], atol=1e-6)
    assert torch.allclose(I.shear_y(cols, -0.2)[inner], cols[inner], atol=1e-6)
    assert not torch.allclose(I.shear_x(cols, 0.2)[inner], cols[inner], atol=1e-3)


def test_magnitudes_follow_augmix_severity() -> None:
    g = torch.Generator().manual_seed(0)
    n, size = 4000, (30, 24)
    rot = I.sample_magnitudes("rotate", n, 3, size, g)
    assert rot.abs().max() <= 9.0 and rot.abs().max() > 8.5 and (rot < 0).any() and (rot > 0).any()
    assert set(I.sample_magnitudes("posterize", n, 3, size, g).tolist()) == {3, 4}
    sol = I.sample_magnitudes("solarize", n, 3, size, g)
    assert sol.min() >= (256 - 76) / 255 and sol.max() <= 256 / 255
    assert I.sample_magnitudes("shear_x", n, 3, size, g).abs().max() <= 0.09
    assert I.sample_magnitudes("translate_x", n, 3, size, g).abs().max() <= 0.3 * 24 / 3 + 1e-6
    assert I.sample_magnitudes("translate_y", n, 3, size, g).abs().max() <= 0.3 * 30 / 3 + 1e-6
    assert I.sample_magnitudes("rotate", n, 10, size, g).abs().max() > 25  # higher severity reaches further
    assert I.sample_magnitudes("equalize", n, 3, size, g) is None
    for bad in (0, 11, True, "3"):
        with pytest.raises(ValueError, match="severity"):
            I.sample_magnitudes("rotate", 2, bad, size, g)
    with pytest.raises(ValueError, match="unknown op"):
        I.apply_op(torch.rand(1, 1, 4, 4), "blur")


@pytest.mark.parametrize("channels", [1, 3])
def test_random_chain_range_seed_and_per_image_randomness(channels: int) -> None:
    x = torch.rand(1, channels, 16, 16, generator=torch.Generator().manual_seed(3)).expand(32, -1, -1, -1).contiguous()
    a = I.random_chain(x, 3, 3, torch.Generator().manual_seed(7))
    b = I.random_chain(x, 3, 3, torch.Generator().manual_seed(7))
    c = I.random_chain(x, 3, 3, torch.Generator().manual_seed(8))
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    flat = a.flatten(1)
    distinct = {tuple(row.round(decimals=4).tolist()) for row in flat}
    assert len(distinct) > 16  # identical inputs, different augmentations
    assert (flat - x.flatten(1)).abs().amax(1).gt(0).float().mean() > 0.8  # nearly every image is changed
    for op in I.OPS:
        out = I.apply_op(x, op, 3, torch.Generator().manual_seed(0))
        assert out.min() >= 0 and out.max() <= 1 and out.shape == x.shape


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("op", I.OPS)
def test_same_result_on_cpu_and_cuda(op: str) -> None:
    x = (torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 255).round() / 255  # 8-bit levels
    cpu = I.apply_op(x, op, 3, torch.Generator().manual_seed(5))
    gpu = I.apply_op(x.cuda(), op, 3, torch.Generator().manual_seed(5)).cpu()
    assert torch.allclose(cpu, gpu, atol=1e-5)  # same magnitudes; only float rounding may differ
