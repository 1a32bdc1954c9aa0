"""Common corruptions and the corruption benchmark: range, severity ordering, determinism, the
JPEG codec against libjpeg, SA/RA/mCE arithmetic, and the CLI's handling of bad input."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from smoothcert.cli import main
from smoothcert.corruptions import (CORRUPTIONS, SEVERITIES, corrupt, evaluate_corruptions, parse_corruptions,
                                    parse_severities)
from smoothcert.data import TensorImageDataset, get_dataset

RANDOM = ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "motion_blur")


def shapes(n: int = 12, size: int = 32, channels: int = 3, seed: int = 0) -> torch.Tensor:
    """Images with edges and flat areas: a coloured background and four coloured disks."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    out = []
    for _ in range(n):
        img = torch.rand(channels, 1, 1, generator=g).expand(channels, size, size).clone()
        for _ in range(4):
            cx, cy, r = (torch.rand(3, generator=g) * torch.tensor([size, size, size / 3])).tolist()
            img[:, (xx - cx) ** 2 + (yy - cy) ** 2 <= (r + 2) ** 2] = torch.rand(channels, 1, generator=g)
        out.append(img)
    return torch.stack(out)


def digits28() -> torch.Tensor:
    return F.interpolate(get_dataset("digits", "test").x[:12], size=28, mode="bilinear", align_corners=False).clamp(0, 1)


IMAGE_SETS = {"gray28_digits": digits28, "gray28_shapes": lambda: shapes(size=28, channels=1, seed=1),
              "colour32_shapes": shapes}


@pytest.mark.parametrize("images", sorted(IMAGE_SETS))
def test_higher_severity_changes_the_image_more_and_stays_in_range(images: str) -> None:
    x = IMAGE_SETS[images]()
    for name in CORRUPTIONS:
        change = []
        for s in SEVERITIES:
            xc = corrupt(x, name, s, torch.Generator().manual_seed(s))
            assert xc.shape == x.shape and xc.dtype == x.dtype
            assert xc.min() >= 0 and xc.max() <= 1, (name, s)
            change.append((xc - x).abs().mean().item())
        assert change[0] > 0, name
        assert all(a < b for a, b in zip(change, change[1:])), (name, change)


def test_deterministic_for_a_seed() -> None:
    x = shapes(4)
    for name in CORRUPTIONS:
        a = corrupt(x, name, 3, torch.Generator().manual_seed(11))
        b = corrupt(x, name, 3, torch.Generator().manual_seed(11))
        assert torch.equal(a, b), name
        if name in RANDOM:
            assert not torch.equal(a, corrupt(x, name, 3, torch.Generator().manual_seed(12))), name


@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_reproduces_libjpeg(channels: int) -> None:
    Image = pytest.importorskip("PIL.Image")
    features = pytest.importorskip("PIL.features")
    if not features.check("jpg"):
        pytest.skip("PIL without JPEG support")
    x = (shapes(6, 32, channels, seed=3) * 255).round() / 255
    for s, quality in zip(SEVERITIES, (80, 65, 58, 50, 40)):
        ours = corrupt(x, "jpeg_compression", s)
        ref = []
        for img in x:
            arr = (img * 255).round().byte().permute(1, 2, 0).numpy()
            buf = io.BytesIO()
            Image.fromarray(arr[..., 0] if channels == 1 else arr).save(buf, "JPEG", quality=quality)
            ref.append(torch.from_numpy(np.array(Image.open(io.BytesIO(buf.getvalue())))).float().reshape(32, 32, -1))
        ref = torch.stack(ref).permute(0, 3, 1, 2) / 255
        # same loss as libjpeg (whose integer DCT rounds a little differently)
        assert (ours - ref).abs().mean() < 0.15 * (ref - x).abs().mean()


def test_contrast_and_brightness_definitions() -> None:
    x = shapes(4)
    c = corrupt(x, "contrast", 5)  # factor 0.15 about the per-channel mean
    inside = (x - x.mean((2, 3), keepdim=True)) * 0.15 + x.mean((2, 3), keepdim=True)
    assert torch.allclose(c, inside.clamp(0, 1), atol=1e-6)
    b = corrupt(x, "brightness", 2)  # HSV value + 0.1: hue and saturation kept
    v, vb = x.amax(1), b.amax(1)
    assert torch.allclose(vb, (v + 0.1).clamp(max=1), atol=1e-6)
    sat = lambda t: (t.amax(1) - t.amin(1)) / t.amax(1)  # noqa: E731
    assert torch.allclose(sat(b), sat(x), atol=1e-5)
    g = x[:, :1]
    assert torch.allclose(corrupt(g, "brightness", 5), (g + 0.3).clamp(max=1))


def test_bad_names_and_severities() -> None:
    x = torch.rand(1, 1, 8, 8)
    with pytest.raises(ValueError, match="unknown corruption 'fog'"):
        corrupt(x, "fog", 1)
    for bad in (0, 6, 2.5, True):
        with pytest.raises(ValueError, match="severity must be an integer in 1..5"):
            corrupt(x, "contrast", bad)
    with pytest.raises(ValueError, match="severity"):
        parse_severities("1,x")
    assert parse_corruptions("all") == list(CORRUPTIONS)
    assert parse_corruptions(" contrast , pixelate") == ["contrast", "pixelate"]


class _Threshold(nn.Module):
    """A fixed classifier: class 1 if the image's mean brightness exceeds t, else class 0."""

    def __init__(self, t: float = 0.5):
        super().__init__()
        self.t = t
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean((1, 2, 3))
        return torch.stack([self.t - m, m - self.t], 1) + 0 * self.dummy


def _dataset(n: int = 40) -> TensorImageDataset:
    x = shapes(n, 16, 3, seed=5)
    y = (x.mean((1, 2, 3)) > 0.5).long()
    y[:5] = 1 - y[:5]  # 5 wrong labels: clean accuracy (n - 5) / n
    return TensorImageDataset(x, y, name="shapes", num_classes=2, mean=(0.5,) * 3, std=(0.25,) * 3, default_arch="x")


def test_evaluate_reports_sa_ra_and_accuracies_exactly() -> None:
    ds, model = _dataset(), _Threshold()
    res = evaluate_corruptions(model, ds, ["brightness", "gaussian_noise"], [1, 5], batch_size=16, seed=3)
    assert res["SA"] == pytest.approx(35 / 40)
    for s in (1, 5):  # brightness is deterministic: recompute its accuracy by hand
        by_hand = (model(corrupt(ds.x, "brightness", s)).argmax(1) == ds.y).float().mean().item()
        assert res["accuracy"]["brightness"][str(s)] == pytest.approx(by_hand)
    accs = [a for c in res["accuracy"].values() for a in c.values()]
    assert res["RA"] == pytest.approx(sum(accs) / 4)
    assert res["corruption_accuracy"]["brightness"] == pytest.approx(sum(res["accuracy"]["brightness"].values()) / 2)
    assert res["mCE"] is None and res["num_images"] == 40


def test_evaluate_is_deterministic_and_independent_of_the_other_corruptions() -> None:
    ds, model = _dataset(), _Threshold(0.45)
    a = evaluate_corruptions(model, ds, ["gaussian_noise"], [5], batch_size=8, seed=1)
    b = evaluate_corruptions(model, ds, ["contrast", "gaussian_noise"], [1, 5], batch_size=8, seed=1)
    assert a["accuracy"]["gaussian_noise"]["5"] == b["accuracy"]["gaussian_noise"]["5"]
    assert a == evaluate_corruptions(model, ds, ["gaussian_noise"], [5], batch_size=8, seed=1)


def test_mce_against_a_baseline() -> None:
    ds, model = _dataset(), _Threshold()
    res = evaluate_corruptions(model, ds, ["contrast", "pixelate"], [1, 2], batch_size=40)
    assert evaluate_corruptions(model, ds, ["contrast", "pixelate"], [1, 2], batch_size=40, baseline=res)["mCE"] == 1.0
    err = {c: sum(1 - a for a in res["accuracy"][c].values()) for c in ("contrast", "pixelate")}
    base = {"dataset": "shapes", "accuracy": {"contrast": {"1": 0.5, "2": 0.3, "3": 0.0}, "pixelate": {"1": 0.9, "2": 0.8}}}
    got = evaluate_corruptions(model, ds, ["contrast", "pixelate"], [1, 2], batch_size=40, baseline=base)
    ce = {"contrast": err["contrast"] / 1.2, "pixelate": err["pixelate"] / 0.3}
    assert got["CE"] == pytest.approx(ce) and got["mCE"] == pytest.approx((ce["contrast"] + ce["pixelate"]) / 2)
    with pytest.raises(ValueError, match="baseline has no accuracy for pixelate at severity 3"):
        evaluate_corruptions(model, ds, ["pixelate"], [3], baseline=base)
    with pytest.raises(ValueError, match="baseline was evaluated on 'mnist'"):
        evaluate_corruptions(model, ds, ["pixelate"], [1], baseline={**base, "dataset": "mnist"})


def test_cli_writes_result_and_mce(digits_run: Path, runner, tmp_path: Path) -> None:  # noqa: ANN001
    out = tmp_path / "res.json"
    args = ["evaluate", str(digits_run), "--max", "50", "--batch", "32", "--corruptions", "contrast,shot_noise",
            "--severities", "2,4"]
    r = runner.invoke(main, args + ["--out", str(out)])
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    assert set(res["accuracy"]) == {"contrast", "shot_noise"} and set(res["accuracy"]["contrast"]) == {"2", "4"}
    assert "SA" in r.output and f"{100 * res['RA']:.2f}%" in r.output
    r2 = runner.invoke(main, args + ["--baseline", str(out), "--out", str(tmp_path / "res2.json")])
    assert r2.exit_code == 0, r2.output
    res2 = json.loads((tmp_path / "res2.json").read_text())
    assert res2["mCE"] == 1.0 and res2["accuracy"] == res["accuracy"]  # same seed: same corruptions


@pytest.mark.parametrize("flags, message", [
    (["--corruptions", "gaussian_noise,fog"], "unknown corruption 'fog'"),
    (["--severities", "1,6"], "severity must be an integer in 1..5, got 6"),
    (["--severities", "0"], "severity must be an integer in 1..5, got 0"),
    (["--baseline", "missing.json"], "does not exist"),
])
def test_cli_bad_input_exits_2_with_one_line(digits_run: Path, runner, flags: list[str], message: str) -> None:  # noqa: ANN001
    r = runner.invoke(main, ["evaluate", str(digits_run), "--max", "5"] + flags)
    assert r.exit_code == 2
    assert "Traceback" not in r.output
    errors = [line for line in r.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0]
