"""Any model and any data: models.external (FILE.py:NAME, package.module:NAME, TorchScript,
torch.export, timm/torchvision), data.external (tensor files, image folders), sources.load_classifier,
and the CLI's --model/--weights/--model-kwargs/--normalize/--num-classes."""
from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from smoothcert.data import get_dataset
from smoothcert.data.external import load_image_folder, load_tensor_file
from smoothcert.models.external import (load_external_model, parse_model_kwargs, parse_normalize)
from smoothcert.sources import load_classifier
from smoothcert.validation import ArgumentError

MODEL_FILE = textwrap.dedent('''
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self, classes=10, width=8):
            super().__init__()
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU())
            self.head = nn.Linear(width, classes)

        def forward(self, x):
            return self.head(self.body(x))

    def make_net(classes=10):
        return Net(classes=classes)

    def not_a_model():
        return 3
''')


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    p = tmp_path / "mynet.py"
    p.write_text(MODEL_FILE)
    return p


@pytest.fixture
def digits_file(tmp_path: Path) -> Path:
    ds = get_dataset("digits", "test")
    p = tmp_path / "digits.pt"
    torch.save({"x": ds.x[:40].clone(), "y": ds.y[:40].clone()}, p)
    return p


def _weights(tmp_path: Path, model: nn.Module, name: str = "w.pt") -> Path:
    p = tmp_path / name
    torch.save(model.state_dict(), p)
    return p


# -- models -------------------------------------------------------------------------------------------
def test_file_class_and_function_with_kwargs(model_file):
    m, src = load_external_model(f"{model_file}:Net", model_kwargs={"classes": 3, "width": 4})
    assert m(torch.rand(2, 1, 8, 8)).shape == (2, 3) and not m.training
    assert src == {"spec": f"{model_file}:Net", "kind": "file", "model_kwargs": {"classes": 3, "width": 4}}
    f, _ = load_external_model(f"{model_file}:make_net", model_kwargs={"classes": 5})
    assert f(torch.rand(1, 1, 8, 8)).shape == (1, 5)


def test_package_module_spec(tmp_path, monkeypatch):
    pkg = tmp_path / "userpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(MODEL_FILE)
    monkeypatch.syspath_prepend(str(tmp_path))
    m, src = load_external_model("userpkg.nets:Net")
    assert src["kind"] == "module" and m(torch.rand(1, 1, 8, 8)).shape == (1, 10)


def test_weights_are_loaded_and_fingerprinted(tmp_path, model_file):
    torch.manual_seed(1)
    ref, _ = load_external_model(f"{model_file}:Net")
    w = _weights(tmp_path, ref)
    m, src = load_external_model(f"{model_file}:Net", weights=w)
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(m(x), ref(x))
    import hashlib
    assert src["weights"] == str(w) and src["weights_sha256"] == hashlib.sha256(w.read_bytes()).hexdigest()
    # a checkpoint dict holding the state dict, saved from DataParallel (module. prefix)
    ck = tmp_path / "ck.pt"
    torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in ref.state_dict().items()}}, ck)
    m2, _ = load_external_model(f"{model_file}:Net", weights=ck)
    assert torch.equal(m2(x), ref(x))


def test_weights_that_do_not_fit_list_keys(tmp_path, model_file):
    other = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    w = _weights(tmp_path, other)
    with pytest.raises(ArgumentError) as e:
        load_external_model(f"{model_file}:Net", weights=w)
    msg = str(e.value)
    assert e.value.arg == "weights" and "\n" not in msg
    assert "missing body.1.bias, body.1.weight, head.bias (and 1 more)" in msg and "unexpected 1.bias, 1.weight" in msg
    wide, _ = load_external_model(f"{model_file}:Net", model_kwargs={"width": 16})
    with pytest.raises(ArgumentError, match=r"body.1.bias has shape \(16,\), the model expects \(8,\)"):
        load_external_model(f"{model_file}:Net", weights=_weights(tmp_path, wide, "wide.pt"))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ArgumentError, match="weights: cannot load"):
        load_external_model(f"{model_file}:Net", weights=tmp_path / "junk.pt")


def test_bad_specs_are_one_line_errors(tmp_path, model_file):
    cases = {
        f"{model_file}:Nope": "has no 'Nope' (it defines Net, make_net, not_a_model",
        f"{model_file}:": "names no class or function after ':'",
        f"{model_file}:not_a_model": "returned a int, not an nn.Module",
        f"{tmp_path}/absent.py:Net": "does not exist",
        "no_such_package_xyz.mod:Net": "cannot import 'no_such_package_xyz.mod' (no module named 'no_such_package_xyz')",
        str(tmp_path / "absent.pt"): "does not exist",
        "": "model must be",
    }
    broken = tmp_path / "broken.py"
    broken.write_text("import torch\nraise RuntimeError('boom at import')\n")
    cases[f"{broken}:Net"] = "importing"
    for spec, text in cases.items():
        with pytest.raises(ArgumentError) as e:
            load_external_model(spec)
        assert e.value.arg == "model" and text in str(e.value) and "\n" not in str(e.value), (spec, str(e.value))
    with pytest.raises(ArgumentError) as e:
        load_external_model(f"{model_file}:Net", model_kwargs={"depth": 3})
    assert e.value.arg == "model_kwargs" and "unexpected keyword argument 'depth'" in str(e.value)


def test_a_weights_checkpoint_is_not_a_torchscript_model(tmp_path, model_file):
    m, _ = load_external_model(f"{model_file}:Net")
    with pytest.raises(ArgumentError, match="is not a TorchScript file .*--weights"):
        load_external_model(str(_weights(tmp_path, m)))


def test_torchscript_and_export_files(tmp_path, model_file):
    m, _ = load_external_model(f"{model_file}:Net")
    x = torch.rand(2, 1, 8, 8)
    ts = tmp_path / "net.ts.pt"
    torch.jit.script(m).save(str(ts))
    s, src = load_external_model(str(ts))
    assert src["kind"] == "torchscript" and len(src["file_sha256"]) == 64
    assert torch.allclose(s(x), m(x))
    pt2 = tmp_path / "net.pt2"
    torch.export.save(torch.export.export(m, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},)), str(pt2))
    e, src = load_external_model(str(pt2))
    assert src["kind"] == "export" and e(torch.rand(5, 1, 8, 8)).shape == (5, 10) and torch.allclose(e(x), m(x))
    from smoothcert import Smooth  # the sampler's eval-mode copy works on an exported program
    assert Smooth(e, 10, 0.25).certify(x[0], 10, 50, 0.01, 50)[0] in range(-1, 10)
    with pytest.raises(ArgumentError, match="takes no keyword arguments"):
        load_external_model(str(ts), model_kwargs={"a": 1})
    with pytest.raises(ArgumentError, match="weights: .* holds its own weights"):
        load_external_model(str(pt2), weights=_weights(tmp_path, m))


def test_normalize_wraps_the_model_in_pixel_space(model_file):
    m, _ = load_external_model(f"{model_file}:Net")
    wrapped, src = load_external_model(f"{model_file}:Net", normalize=((0.5,), (0.25,)))
    wrapped[1].load_state_dict(m.state_dict())
    x = torch.rand(2, 1, 8, 8)
    assert torch.allclose(wrapped(x), m((x - 0.5) / 0.25))
    assert src["normalize"] == {"mean": [0.5], "std": [0.25]}
    assert parse_normalize("0.5,0.25") == ((0.5,), (0.25,))
    assert parse_normalize("1,2,3,4,5,6") == ((1.0, 2.0, 3.0), (4.0, 5.0, 6.0))
    assert parse_normalize("imagenet")[0] == (0.485, 0.456, 0.406)
    for bad, text in (("0.5", "an even count"), ("a,b", "neither"), ("0.5,0", "stds finite and > 0")):
        with pytest.raises(ArgumentError, match=text):
            parse_normalize(bad)


def test_model_kwargs_json():
    assert parse_model_kwargs('{"width": 4}') == {"width": 4} and parse_model_kwargs(None) == {}
    for bad, text in (('{"width": 4', "is not valid JSON"), ("[1, 2]", "must be a JSON object")):
        with pytest.raises(ArgumentError) as e:
            parse_model_kwargs(bad)
        assert e.value.arg == "model_kwargs" and text in str(e.value)


@pytest.mark.parametrize("package", ["timm", "torchvision"])
def test_timm_and_torchvision_missing_is_a_clear_error(package, monkeypatch):
    monkeypatch.setitem(sys.modules, package, None)
    monkeypatch.setitem(sys.modules, f"{package}.models", None)
    with pytest.raises(ArgumentError, match=f"needs the {package} package .*pip install {package}"):
        load_external_model(f"{package}:resnet18")


def test_timm_model_when_installed():
    timm = pytest.importorskip("timm")
    m, src = load_external_model("timm:resnet18", model_kwargs={"num_classes": 3})
    assert src["kind"] == "timm" and m(torch.rand(1, 3, 32, 32)).shape == (1, 3)
    with pytest.raises(ArgumentError, match="timm has no model"):
        load_external_model("timm:no_such_net_xyz")
    del timm


# -- data ---------------------------------------------------------------------------------------------
def test_tensor_files(tmp_path):
    x = torch.rand(6, 3, 4, 4)
    torch.save({"x": x, "y": torch.tensor([0, 1, 2, 0, 1, 2])}, tmp_path / "a.pt")
    ds = get_dataset(str(tmp_path / "a.pt"))
    assert (ds.name, ds.split, ds.num_classes, ds.input_shape, len(ds)) == (str(tmp_path / "a.pt"), "test", 3,
                                                                             (3, 4, 4), 6)
    assert torch.equal(ds[2][0], x[2]) and ds[2][1] == 2
    u8 = (np.arange(2 * 4 * 4 * 3) % 256).astype(np.uint8).reshape(2, 4, 4, 3)  # channels-last uint8
    np.savez(tmp_path / "b.npz", x_train=u8, y_train=np.array([1, 0]), x_test=u8[:1], y_test=np.array([1]),
             num_classes=np.array(5))
    tr, te = load_tensor_file(tmp_path / "b.npz", "train"), load_tensor_file(tmp_path / "b.npz", "test")
    assert len(tr) == 2 and len(te) == 1 and tr.num_classes == 5 and tr.input_shape == (3, 4, 4)
    assert torch.allclose(tr[0][0], torch.from_numpy(u8[0]).permute(2, 0, 1).float() / 255)
    assert load_tensor_file(tmp_path / "a.pt", num_classes=10).num_classes == 10
    bad = {"c.pt": ({"x": x * 255, "y": torch.zeros(6, dtype=torch.long)}, "pixels must be in [0, 1]"),
           "d.pt": ({"x": x}, "has no y"),
           "e.pt": ({"x": x, "y": torch.zeros(5, dtype=torch.long)}, "one label per image"),
           "f.pt": ({"images": x}, "has no x_test, y_test (it holds images)")}
    for name, (obj, text) in bad.items():
        torch.save(obj, tmp_path / name)
        with pytest.raises(ArgumentError) as e:
            get_dataset(str(tmp_path / name))
        assert e.value.arg == "dataset" and text in str(e.value), str(e.value)
    with pytest.raises(ArgumentError, match="does not exist"):
        get_dataset(str(tmp_path / "absent.npz"))
    with pytest.raises(ArgumentError, match="num_classes: dataset 'digits' knows its classes"):
        get_dataset("digits", num_classes=3)


def _png_folder(root: Path, sizes=((5, 4),), mode="RGB") -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, name in enumerate(["cat", "dog"]):
        (root / name).mkdir(parents=True)
        for k in range(2):
            w, h = sizes[min(k, len(sizes) - 1)]
            shape = (h, w, 3) if mode == "RGB" else (h, w)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(root / name / f"{k}.png")
    return root


def test_image_folders(tmp_path, monkeypatch):
    pytest.importorskip("PIL")
    from PIL import Image

    root = _png_folder(tmp_path / "imgs")
    ds = get_dataset(str(root))
    assert (len(ds), ds.num_classes, ds.input_shape) == (4, 2, (3, 4, 5))
    x, y = ds[3]
    assert y == 1 and x.shape == (3, 4, 5)
    ref = np.asarray(Image.open(root / "dog" / "1.png"), dtype=np.float32).transpose(2, 0, 1) / 255
    assert torch.allclose(x, torch.from_numpy(ref))
    gray = _png_folder(tmp_path / "split" / "test", mode="L")
    _png_folder(tmp_path / "split" / "train", mode="L")
    g = load_image_folder(tmp_path / "split", "test")
    assert g.input_shape == (1, 4, 5) and len(g) == 4 and gray.is_dir()
    with pytest.raises(ArgumentError, match="different sizes"):
        get_dataset(str(_png_folder(tmp_path / "mixed", sizes=((5, 4), (6, 6)))))
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(ArgumentError, match="no images"):
        get_dataset(str(tmp_path / "empty"))
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ArgumentError, match="read with Pillow, which is not installed"):
        get_dataset(str(root))


# -- sources.load_classifier ---------------------------------------------------------------------------
def test_load_classifier_spec_and_checks(tmp_path, model_file, digits_file):
    c = load_classifier(spec=f"{model_file}:Net", dataset=str(digits_file), normalize=((0.5,), (0.5,)))
    assert c.config["num_classes"] == 10 and c.config["sigma"] is None and c.dataset.num_classes == 10
    assert c.meta["model"] == f"{model_file}:Net" and c.meta["model_source"]["normalize"]["mean"] == [0.5]
    with pytest.raises(ArgumentError) as e:
        load_classifier(spec=f"{model_file}:Net", dataset=str(digits_file), normalize=((0.5,) * 3, (0.5,) * 3))
    assert e.value.arg == "normalize" and "3 means and 3 stds, but the inputs have 1 channel" in str(e.value)
    with pytest.raises(ArgumentError, match="num_classes: the model gives 10 logits per input, not 12"):
        load_classifier(spec=f"{model_file}:Net", dataset=str(digits_file), num_classes=12)
    with pytest.raises(ArgumentError, match="has 10 classes but the model gives 3 logits"):
        load_classifier(spec=f"{model_file}:Net", model_kwargs={"classes": 3}, dataset="digits")
    with pytest.raises(ArgumentError, match="needs the data to evaluate it on"):
        load_classifier(spec=f"{model_file}:Net")
    with pytest.raises(ArgumentError, match="not both"):
        load_classifier(tmp_path, spec=f"{model_file}:Net", dataset="digits")


def test_load_classifier_run_dir_on_a_tensor_file(digits_run, tmp_path, model_file):
    ds = get_dataset("digits", "test")
    keep = ds.y < 9  # the labels miss the last class: the run's 10 classes are taken
    torch.save({"x": ds.x[keep][:20].clone(), "y": ds.y[keep][:20].clone()}, tmp_path / "d9.pt")
    c = load_classifier(digits_run, dataset=str(tmp_path / "d9.pt"))
    assert c.dataset.num_classes == 10 and c.meta == {}
    with pytest.raises(ArgumentError) as e:
        load_classifier(digits_run, weights=tmp_path / "w.pt")
    assert e.value.arg == "weights" and "applies to a model given by its spec" in str(e.value)


# -- the command line ----------------------------------------------------------------------------------
def _one_error_line(r) -> str:
    lines = [line for line in r.output.splitlines() if line.startswith("Error")]
    assert r.exit_code == 2 and len(lines) == 1, r.output
    return lines[0]


@pytest.fixture
def cli_model(tmp_path, model_file):
    torch.manual_seed(0)
    m, _ = load_external_model(f"{model_file}:Net")
    return f"{model_file}:Net", _weights(tmp_path, m), m


def test_certify_any_model_on_a_tensor_file(runner, tmp_path, cli_model, digits_file):
    from smoothcert.cli import main
    from smoothcert.certification import certify_dataset
    from smoothcert.runs import Selection
    from smoothcert import Smooth

    spec, weights, m = cli_model
    out = tmp_path / "c.tsv"
    args = ["certify", "--model", spec, "--weights", str(weights), "--dataset", str(digits_file), "--sigma", "0.25",
            "--N0", "20", "--N", "200", "--batch", "100", "--max", "4", "--out", str(out), "--quiet"]
    r = runner.invoke(main, args)
    assert r.exit_code == 0, r.output
    meta = json.loads((tmp_path / "c.tsv.meta.json").read_text())
    import hashlib
    assert meta["model"] == spec and meta["dataset"] == str(digits_file)
    assert meta["model_source"]["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert len(meta["certify"]["model_sha256"]) == 64 and meta["config"]["num_classes"] == 10
    rows = [line.split("\t")[:5] for line in out.read_text().splitlines()[1:]]
    assert len(rows) == 4
    # the Python route gives the same rows: any module, any dataset
    ds = load_tensor_file(digits_file)
    lib = certify_dataset(Smooth(m, 10, 0.25), ds, tmp_path / "lib.tsv", n0=20, n=200, alpha=0.001, batch_size=100,
                          selection=Selection(1, 4))
    assert [line.split("\t")[:5] for line in lib.path.read_text().splitlines()[1:]] == rows
    # a resume with other weights is refused (the weights' fingerprint is a checked setting)
    torch.manual_seed(5)
    other, _ = load_external_model(spec)
    w2 = _weights(tmp_path, other, "w2.pt")
    bad = runner.invoke(main, [a if a != str(weights) else str(w2) for a in args[:-1]] + ["--max", "6", "--quiet"])
    assert "other settings (model_sha256=" in _one_error_line(bad)
    # --normalize with the wrong number of channels, bad JSON, both MODEL and --model
    for extra, text in ((["--normalize", "imagenet"], "--normalize: 3 means and 3 stds, but the inputs have 1 channel"),
                        (["--model-kwargs", "{width: 4}"], "--model-kwargs: '{width: 4}' is not valid JSON"),
                        ([str(tmp_path)], "give MODEL (a run directory or checkpoint) or --model SPEC, not both")):
        assert text in _one_error_line(runner.invoke(main, args[:1] + extra + args[1:])), extra


@pytest.mark.parametrize("spec, text", [
    ("{file}:Missing", "--model: '{file}' has no 'Missing'"),
    ("nosuchpkg_xyz.nets:Net", "--model: cannot import 'nosuchpkg_xyz.nets'"),
    ("{file}", "--model: '{file}' is not a TorchScript file"),
])
def test_bad_model_specs_on_the_command_line(runner, tmp_path, model_file, digits_file, spec, text):
    from smoothcert.cli import main

    spec, text = spec.format(file=model_file), text.format(file=model_file)
    r = runner.invoke(main, ["certify", "--model", spec, "--dataset", str(digits_file), "--sigma", "0.25",
                             "--out", str(tmp_path / "o.tsv")])
    assert text in _one_error_line(r)
    assert not (tmp_path / "o.tsv").exists()


def test_weights_mismatch_and_missing_model_on_the_command_line(runner, tmp_path, model_file, digits_file):
    from smoothcert.cli import main

    w = _weights(tmp_path, nn.Linear(64, 10))
    r = runner.invoke(main, ["predict", "--model", f"{model_file}:Net", "--weights", str(w), "--dataset",
                             str(digits_file), "--sigma", "0.25", "--out", str(tmp_path / "p.tsv")])
    line = _one_error_line(r)
    assert "--weights:" in line and "missing body.1.bias" in line and "unexpected bias, weight" in line
    r = runner.invoke(main, ["predict", "--sigma", "0.25", "--out", str(tmp_path / "p.tsv")])
    assert "Missing argument 'MODEL'" in _one_error_line(r)
    r = runner.invoke(main, ["predict", "--model", f"{model_file}:Net", "--sigma", "0.25", "--out",
                             str(tmp_path / "p.tsv")])
    assert "--dataset: a model given by its spec needs the data" in _one_error_line(r)


def test_predict_attack_check_and_evaluate_take_any_model(runner, tmp_path, cli_model, digits_file):
    from smoothcert.cli import main

    spec, weights, _ = cli_model
    model = ["--model", spec, "--weights", str(weights), "--dataset", str(digits_file)]
    r = runner.invoke(main, ["predict", *model, "--sigma", "0.25", "--N", "100", "--max", "3", "--out",
                             str(tmp_path / "p.tsv"), "--quiet"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["attack", *model, "--attack", "fgsm", "--max", "5", "--out", str(tmp_path / "a.tsv"),
                             "--quiet"])
    assert r.exit_code == 0 and "5 inputs" in r.output, r.output
    meta = json.loads((tmp_path / "a.tsv.meta.json").read_text())
    assert meta["model"] == spec and meta["model_source"]["weights"] == str(weights)
    log = tmp_path / "c.tsv"
    r = runner.invoke(main, ["certify", *model, "--sigma", "0.25", "--N0", "20", "--N", "200", "--max", "3",
                             "--out", str(log), "--quiet"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["check-certificates", str(log), *model, "--N", "50", "--steps", "2", "--max", "3",
                             "--quiet"])
    assert r.exit_code in (0, 1) and "certificates checked" in r.output, r.output
    r = runner.invoke(main, ["evaluate", *model, "--corruptions", "gaussian_noise", "--severities", "1", "--max",
                             "8", "--out", str(tmp_path / "e.json"), "--quiet"])
    assert r.exit_code == 0 and json.loads((tmp_path / "e.json").read_text())["model"] == spec, r.output


def test_the_readme_python_route_runs(tmp_path, monkeypatch):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = next(c for c in (b.split("```")[0] for b in readme.split("```python")[1:]) if "TensorDataset" in c)
    monkeypatch.chdir(tmp_path)
    env: dict = {}
    exec(compile(block, "README.md", "exec"), env)  # noqa: S102  (the README's own example)
    meta = json.loads((tmp_path / "mine.tsv.meta.json").read_text())
    assert env["report"].rows == 5 and meta["model"] == "my conv net" and len(meta["certify"]["model_sha256"]) == 64
