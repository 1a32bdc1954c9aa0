"""Smooth's inference copy (the caller's model is never changed), BatchNorm folding, the chunk
probe, the reused workspace, memory errors, and ``--max-batch`` (a bound on the forward pass only)."""
import copy
import json

import pytest
import torch
from torch import nn

from smoothcert import Smooth
from smoothcert import inference
from smoothcert.cli import main
from smoothcert.inference import chunk_candidates, fold_batchnorm, memory_cap, prepare_model
from smoothcert.logs import read_tsv
from smoothcert.models import create_model
from smoothcert.validation import ArgumentError


def bn_net() -> nn.Module:
    """conv-BN-ReLU, conv-BN (no conv bias), linear-BN1d, linear: three foldable pairs, with
    non-trivial running statistics and affine parameters."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Conv2d(6, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Flatten(), nn.Linear(4 * 4 * 4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 5),
    )
    for m in net.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.2, 3.0)
            m.weight.data.uniform_(0.5, 2.0)
            m.bias.data.uniform_(-1, 1)
            m.eps = 0.05  # large enough that dropping it from the fold shows
    return net.eval()


def snapshot(net: nn.Module) -> dict:
    return {"state": {k: v.clone() for k, v in net.state_dict().items()},
            "strides": {k: v.stride() for k, v in net.state_dict().items()},
            "training": [m.training for m in net.modules()],
            "grad": [p.requires_grad for p in net.parameters()]}


@pytest.mark.parametrize("train_mode", [False, True])
def test_callers_model_is_unchanged(train_mode):
    net = bn_net().train(train_mode)
    before = snapshot(net)
    s = Smooth(net, 5, 0.5, seed=0, channels_last=True)
    s.certify(torch.rand(3, 8, 8), 10, 200, 0.01, 64)
    s.predict_batch(torch.rand(2, 3, 8, 8), 100, 0.01, 64)
    after = snapshot(net)
    assert after["training"] == before["training"]
    assert after["grad"] == before["grad"]
    assert after["strides"] == before["strides"]  # no channels-last conversion in place
    for k, v in before["state"].items():
        assert torch.equal(after["state"][k], v), k  # weights and BN statistics
    assert s.model is not net


def test_smooth_runs_the_copy_in_eval_mode_and_folds_only_eval_models():
    assert Smooth(bn_net(), 5, 0.5).inference_info["folded_bn"] == 3
    train = Smooth(bn_net().train(), 5, 0.5)
    assert train.inference_info["folded_bn"] == 0  # default: fold only models given in eval mode
    assert not any(m.training for m in train.model.modules())
    assert Smooth(bn_net(), 5, 0.5, fold_bn=False).inference_info["folded_bn"] == 0


def test_batchnorm_folding_agrees_with_the_model():
    net = bn_net()
    folded, k = fold_batchnorm(copy.deepcopy(net))
    assert k == 3
    assert not any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in folded.modules())
    x = torch.rand(64, 3, 8, 8) * 2 - 0.5
    with torch.no_grad():
        ref, got = net(x), folded(x)
    assert torch.allclose(ref, got, rtol=1e-4, atol=1e-5), (ref - got).abs().max()


def test_batchnorm_folding_on_registered_resnet_agrees():
    torch.manual_seed(1)
    net = create_model("cifar_resnet20", 10, 3, 32)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    net.eval()
    prepared, info = prepare_model(net, channels_last=True)
    assert info["folded_bn"] == sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    x = torch.rand(8, 3, 32, 32)
    with torch.no_grad():
        ref, got = net(x), prepared(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(ref, got, rtol=1e-3, atol=1e-4), (ref - got).abs().max()


def test_bn_after_a_shared_conv_output_is_not_folded():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2)

        def forward(self, x):
            z = self.conv(x)
            return (self.bn(z) + z).flatten(1)  # folding would change the skip branch

    net = Shared().eval()
    net.bn.running_mean.fill_(0.5)
    folded, k = fold_batchnorm(net)
    assert k == 0
    x = torch.rand(4, 2, 3, 3)
    assert torch.allclose(folded(x), net(x))


def test_chunk_candidates_never_straddle_a_noise_block():
    assert chunk_candidates(1000, 1000) == [125, 250, 500, 1000]
    assert chunk_candidates(1000, 8000) == [125, 250, 500, 1000, 2000, 4000, 8000]
    assert chunk_candidates(10, 10) == [10]
    for c in chunk_candidates(300, 5000):
        assert c <= 300 or c % 300 == 0


def test_probe_runs_once_and_is_cached(monkeypatch):
    calls = []
    real = inference.probe_chunk_size

    def spy(*a, **kw):
        calls.append(kw)
        return real(*a, **kw)

    monkeypatch.setattr("smoothcert.sampling.probe_chunk_size", spy)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    s = Smooth(net, 3, 0.5, seed=0)
    x = torch.rand(2, 1, 4, 4)
    s.sample_counts(x, 10, 256)  # 20 rows <= smallest candidate (32): one chunk, nothing to probe
    assert calls == []
    s.sample_counts(x, 500, 256)
    s.sample_counts(x, 700, 256)
    assert len(calls) == 1
    assert list(s.sampler.chunks.values())[0] in chunk_candidates(256, 256)


def test_workspace_is_reused_across_calls():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    s = Smooth(net, 3, 0.5, seed=0, chunk_size=64)
    x = torch.rand(2, 3, 8, 8)
    s.sample_counts(x, 300, 128)
    ptrs = (s.sampler.workspace.noise.data_ptr(), s.sampler.workspace.batch.data_ptr())
    s.certify(x[0], 20, 300, 0.01, 128)
    s.sample_counts(x, 100, 64)
    assert (s.sampler.workspace.noise.data_ptr(), s.sampler.workspace.batch.data_ptr()) == ptrs


def test_batch_size_too_large_for_memory_names_it(monkeypatch):
    s = Smooth(nn.Sequential(nn.Flatten(), nn.Linear(784, 2)), 2, 0.5)
    x = torch.rand(1, 28, 28)
    huge = 10**11  # 10^11 rows of 784 floats: ~300 TB
    with pytest.raises(ArgumentError, match="^batch_size") as e:
        s.certify(x, 10, huge, 0.01, huge)
    assert e.value.arg == "batch_size"
    # also when free memory is unknown: the allocation's own error becomes the same message
    monkeypatch.setattr(inference, "available_memory", lambda device: None)
    with pytest.raises(ArgumentError, match="^batch_size") as e:
        s.certify(x, 10, huge, 0.01, huge)


def test_memory_cap_is_positive_and_bounded():
    net = nn.Sequential(nn.Conv2d(1, 8, 3), nn.Flatten(), nn.Linear(8 * 6 * 6, 3))
    cap = memory_cap(net, (1, 8, 8), torch.device("cpu"), limit=4096)
    assert 1 <= cap <= 4096
    assert memory_cap(net, (1, 8, 8), torch.device("cpu"), fraction=1e-9) < cap


def test_max_batch_auto_gives_the_counts_of_batch_1000(monkeypatch):
    tried = []
    real = inference.probe_chunk_size
    monkeypatch.setattr("smoothcert.sampling.probe_chunk_size",
                        lambda f, shape, cands, **kw: tried.extend(cands) or real(f, shape, cands, **kw))
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    x = torch.rand(2, 3, 8, 8)
    auto = Smooth(net, 3, 1.0, max_batch="auto")
    a = auto.sample_counts(x, 1500, 1000, torch.Generator().manual_seed(4))
    assert auto.sampler.chunks[("cap", (3, 8, 8), torch.float32)] > 1000
    assert max(tried) > 1000  # chunks beyond batch_size, up to the memory cap, were considered
    b = Smooth(net, 3, 1.0, chunk_size=1000).sample_counts(x, 1500, 1000, torch.Generator().manual_seed(4))
    assert torch.equal(a, b)


def test_cli_max_batch_bounds_the_forward_pass_only(digits_run, runner, tmp_path, monkeypatch):
    """--batch is the noise block (recorded); --max-batch N|auto only bounds the rows of a forward
    pass: the rows are those of --batch alone, for a bound above or below the block, and the
    metadata is the same (--max-batch is not recorded). --batch auto (the second release's)
    means --batch 1000 --max-batch auto, with a warning."""
    caps = []
    real = memory_cap
    monkeypatch.setattr("smoothcert.sampling.memory_cap", lambda *a, **kw: caps.append(real(*a, **kw)) or caps[-1])
    outs, metas = {}, {}
    for name, extra in (("plain", []), ("auto", ["--max-batch", "auto"]), ("small", ["--max-batch", "7"]),
                        ("large", ["--max-batch", "5000"]), ("old", ["--batch", "auto"])):
        out = tmp_path / f"{name}.tsv"
        r = runner.invoke(main, ["certify", str(digits_run), "--max", "3", "--out", str(out), "--N0", "10",
                                 "--N", "300", "--pack", "2", "--seed", "3", "--quiet", *extra])
        assert r.exit_code == 0, r.output
        assert ("deprecated" in r.output) == (name == "old"), r.output
        header, rows = read_tsv(out)
        t = header.index("time")
        outs[name] = [row[:t] for row in rows]
        metas[name] = json.loads((tmp_path / f"{name}.tsv.meta.json").read_text())["certify"]
    assert len(outs["plain"]) == 3
    assert len(caps) == 2 and caps[0] >= 1  # only --max-batch auto (and --batch auto) derive a cap from free memory
    assert all(rows == outs["plain"] for rows in outs.values())  # the bound never changes the results
    assert all(m == metas["plain"] for m in metas.values()) and metas["plain"]["batch"] == 1000
    for args, flag in ((["--batch", "lots"], "--batch"), (["--max-batch", "0"], "--max-batch"),
                       (["--batch", "auto", "--max-batch", "auto"], "--max-batch")):
        r = runner.invoke(main, ["certify", str(digits_run), "--out", str(tmp_path / "x.tsv"), *args])
        assert r.exit_code == 2 and flag in r.output, (args, r.output)


def test_cli_batch_too_large_for_memory_is_a_one_line_error(digits_run, runner, tmp_path):
    huge = str(10**13)
    r = runner.invoke(main, ["certify", str(digits_run), "--max", "1", "--out", str(tmp_path / "c.tsv"),
                             "--N0", "10", "--N", huge, "--batch", huge, "--quiet"])
    assert r.exit_code == 2, r.output
    assert "batch_size" in r.output and "Traceback" not in r.output
