"""smoothcert.plotting and `smoothcert plot`: the drawn curves are the exact step functions, the
figure is labelled, PNG/PDF files are valid, bad input exits 2 with one line."""
import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import matplotlib.pyplot as plt
import pytest

from smoothcert.cli import main
from smoothcert.plotting import (ENVELOPE_LABEL, MIXED_X_LABEL, X_LABEL, Y_LABEL, certified_accuracy_figure,
                                 plot_certified_accuracy)

HEADER = "idx\tlabel\tpredict\tradius\tcorrect\ttime\n"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def logs(tmp_path):
    # A: n = 5, correct radii 0.8, 0.3, 0.5 (one abstention, one wrong prediction with radius 0.6)
    a = tmp_path / "a.tsv"
    a.write_text(HEADER + "0\t3\t3\t0.8\t1\t1\n1\t1\t1\t0.3\t1\t1\n2\t7\t-1\t0\t0\t1\n3\t2\t5\t0.6\t0\t1\n"
                          "4\t9\t9\t0.5\t1\t1\n")
    # B: n = 4, correct radii 0.4, 0.9, 0.2; written by the reference code (timedelta times)
    b = tmp_path / "b.tsv"
    b.write_text(HEADER + "0\t3\t3\t0.4\t1\t0:00:01.5\n1\t1\t1\t0.9\t1\t0:00:02\n2\t7\t7\t0.2\t1\t0:00:00.25\n"
                          "3\t2\t-1\t0.0\t0\t0:00:01\n")
    Path(str(b) + ".meta.json").write_text(json.dumps({"config": {"method": "maxup-gauss", "sigma": 0.5,
                                                                  "method_params": {"m": 25, "sigma": 0.5}},
                                                       "certify": {"sigma": 0.5, "N": 100000}}))
    return a, b


def test_plots_whatever_backend_the_environment_names(logs, tmp_path):
    # in-process the backend is Agg anyway on a headless machine: only a fresh process whose
    # environment names another backend can tell that plotting chooses Agg itself
    code = ("import sys, smoothcert.plotting as p; p.plot_certified_accuracy([sys.argv[1]], sys.argv[2]); "
            "import matplotlib; print(matplotlib.get_backend())")
    env = {**os.environ, "MPLBACKEND": "module://no_such_backend"}
    r = subprocess.run([sys.executable, "-c", code, str(logs[0]), str(tmp_path / "f.png")], env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().lower() == "agg" and (tmp_path / "f.png").read_bytes().startswith(PNG_SIGNATURE)


def test_figure_draws_exact_step_curves(logs):
    fig = certified_accuracy_figure(logs, envelope=True, max_radius=1.0, title="t", allow_mixed=True)  # 5 vs 4 idx
    try:
        ax = fig.axes[0]
        a_line, b_line, env_line = ax.lines
        # A: CA(r) = #{correct, radius >= r} / 5: 3/5 on [0, 0.3], 2/5 on (0.3, 0.5], 1/5 on (0.5, 0.8], then 0
        assert a_line.get_xdata().tolist() == [0.0, 0.3, 0.5, 0.8, 1.0]
        assert a_line.get_ydata().tolist() == pytest.approx([60.0, 60.0, 40.0, 20.0, 0.0])
        assert a_line.get_drawstyle() == "steps-pre"  # value y[k] on (x[k-1], x[k]]: CA is left-continuous
        # B: breakpoints 0, .2, .4, .9 with CA 3/4, 3/4, 2/4, 1/4
        assert b_line.get_xdata().tolist() == [0.0, 0.2, 0.4, 0.9, 1.0]
        assert b_line.get_ydata().tolist() == pytest.approx([75.0, 75.0, 50.0, 25.0, 0.0])
        # envelope: max of the two on each interval, e.g. (0.3, 0.4]: max(2/5, 2/4) = 50 %
        assert env_line.get_xdata().tolist() == [0.0, 0.2, 0.3, 0.4, 0.5, 0.8, 0.9, 1.0]
        assert env_line.get_ydata().tolist() == pytest.approx([75.0, 75.0, 60.0, 50.0, 40.0, 25.0, 25.0, 0.0])
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        # stem, then from the meta sidecar; each with its certificate (a first-release meta: Gaussian L2 one-sided)
        assert labels == ["a (L2 assumed, no metadata)", "maxup-gauss m=25 σ=0.5 (gaussian L2 one-sided)",
                          ENVELOPE_LABEL]
        assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == (X_LABEL.format(norm="L2"), Y_LABEL, "t")
        assert ax.get_xlim() == (0.0, 1.0) and ax.get_ylim() == (0.0, 100.0)
    finally:
        plt.close(fig)


def test_max_radius_cuts_inside_a_step(logs):
    fig = certified_accuracy_figure(logs[:1], labels=["A"], max_radius=0.45)
    try:
        line = fig.axes[0].lines[0]
        # on (0.3, 0.5] CA(A) = 2/5: the cut at 0.45 keeps that value
        assert line.get_xdata().tolist() == [0.0, 0.3, 0.45]
        assert line.get_ydata().tolist() == pytest.approx([60.0, 60.0, 40.0])
    finally:
        plt.close(fig)
    fig = certified_accuracy_figure(logs[:1])  # default: 5% past the largest certified radius (0.8)
    try:
        assert fig.axes[0].get_xlim()[1] == pytest.approx(0.84)
    finally:
        plt.close(fig)


def test_png_and_pdf_are_written(logs, tmp_path):
    png = plot_certified_accuracy(logs, tmp_path / "f.png", envelope=True, allow_mixed=True)
    data = png.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    img = matplotlib.image.imread(png)
    assert img.shape[0] > 300 and img.shape[1] > 500  # 5 x 3.4 in at 200 dpi, trimmed to the content
    assert (img[..., :3] < 0.5).any()  # not blank: dark curves/text are drawn
    pdf = plot_certified_accuracy(logs, tmp_path / "f.pdf", labels=["A", "B"], title="x")
    assert pdf.read_bytes()[:5] == b"%PDF-"
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write left no temp file behind


def test_plot_errors(logs, tmp_path):
    p = tmp_path / "p.tsv"
    p.write_text("idx\tlabel\tpredict\tcorrect\ttime\n0\t1\t1\t1\t0.1\n")
    with pytest.raises(ValueError, match="no radius column"):
        plot_certified_accuracy([logs[0], p], tmp_path / "f.png")
    with pytest.raises(ValueError, match="out must end in"):
        plot_certified_accuracy(logs, tmp_path / "f.jpg")
    with pytest.raises(ValueError, match="labels"):
        plot_certified_accuracy(logs, tmp_path / "f.png", labels=["one"])
    with pytest.raises(ValueError, match="does not exist"):
        plot_certified_accuracy(logs, tmp_path / "no" / "f.png")
    assert not (tmp_path / "f.png").exists()


def test_cli_plot(logs, runner, tmp_path):
    out = tmp_path / "fig.png"
    r = runner.invoke(main, ["plot", *map(str, logs), "--out", str(out), "--envelope", "--max-radius", "1.5",
                             "--label", "A", "--label", "B", "--title", "digits", "--mixed"])
    assert r.exit_code == 0, r.output
    assert out.read_bytes()[:8] == PNG_SIGNATURE


@pytest.mark.parametrize("args,needle", [
    (["{a}", "--out", "{tmp}/f.gif"], "must end in .png, .pdf, .svg"),
    (["{a}", "--out", "{tmp}/no/f.png"], "does not exist"),
    (["{a}", "--out", "{tmp}/f.png", "--max-radius", "0"], "--max-radius"),
    (["{a}", "--out", "{tmp}/f.png", "--max-radius", "inf"], "--max-radius: must be a finite number, got inf"),
    (["{a}", "{b}", "--out", "{tmp}/f.png", "--label", "x"], "--label"),
    (["{p}", "--out", "{tmp}/f.png"], "no radius column"),
    (["{empty}", "--out", "{tmp}/f.png"], "empty"),
])
def test_cli_plot_bad_input_exits_2_with_one_line(logs, runner, tmp_path, args, needle):
    p = tmp_path / "p.tsv"
    p.write_text("idx\tlabel\tpredict\tcorrect\ttime\n0\t1\t1\t1\t0.1\n")
    empty = tmp_path / "e.tsv"
    empty.write_text("")
    names = {"a": str(logs[0]), "b": str(logs[1]), "p": str(p), "empty": str(empty), "tmp": str(tmp_path)}
    r = runner.invoke(main, ["plot", *[a.format(**names) for a in args]])
    assert r.exit_code == 2, r.output
    errors = [line for line in r.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and needle in errors[0] and "Traceback" not in r.output
    assert not list(tmp_path.glob("f.*"))


def _certified(tmp_path, name, rows=None, **run):
    """A certify log of a gauss-trained model whose meta records ``run`` as the certify runner does."""
    path = tmp_path / f"{name}.tsv"
    path.write_text(rows or HEADER + "0\t3\t3\t0.8\t1\t1\n1\t1\t1\t0.3\t1\t1\n2\t7\t7\t0.1\t0\t1\n")
    settings = {"sigma": 0.25, "N": 10000, "noise": "gaussian", "norm": "l2", "bound": "one-sided", **run}
    config = {"method": "gauss", "method_params": {"sigma": 0.25}, "sigma": 0.25}
    Path(str(path) + ".meta.json").write_text(json.dumps({"config": config, "certify": settings}))
    return path


def test_legend_names_each_certificate_and_the_envelope_needs_one_norm_and_input_set(tmp_path):
    """The envelope took the best of L2, L1 and Linf radii, and a Laplace certification of a
    gauss-trained model was labelled 'gauss L1' without its noise."""
    l2, l1 = _certified(tmp_path, "l2"), _certified(tmp_path, "l1", noise="laplace", norm="l1")
    linf = _certified(tmp_path, "linf", norm="linf")
    fewer = _certified(tmp_path, "fewer", HEADER + "0\t3\t3\t0.8\t1\t1\n")
    for other, needle in ((l1, "different norms"), (linf, "different norms"), (fewer, "different inputs")):
        with pytest.raises(ValueError, match=needle) as e:
            certified_accuracy_figure([l2, other], envelope=True)
        assert e.value.arg == "allow_mixed"
    fig = certified_accuracy_figure([l2, l1])  # curves of different norms, no envelope: drawn, each named
    try:
        ax = fig.axes[0]
        texts = [t.get_text() for t in ax.get_legend().get_texts()]
        assert texts == ["gauss gaussian L2 σ=0.25 (gaussian L2 one-sided)",
                         "gauss laplace L1 σ=0.25 (laplace L1 one-sided)"]
        assert ax.get_xlabel() == MIXED_X_LABEL
    finally:
        plt.close(fig)
    fig = certified_accuracy_figure([l1], labels=["mine"], envelope=True)
    try:
        ax = fig.axes[0]
        assert [t.get_text() for t in ax.get_legend().get_texts()][0] == "mine (laplace L1 one-sided)"
        assert ax.get_xlabel() == X_LABEL.format(norm="L1")
    finally:
        plt.close(fig)
    fig = certified_accuracy_figure([l2, l1], envelope=True, allow_mixed=True)
    plt.close(fig)


def test_cli_plot_refuses_a_mixed_envelope_unless_mixed(runner, tmp_path):
    l2, l1 = _certified(tmp_path, "l2"), _certified(tmp_path, "l1", noise="laplace", norm="l1")
    out = tmp_path / "f.png"
    r = runner.invoke(main, ["plot", str(l2), str(l1), "--envelope", "--out", str(out)])
    errors = [line for line in r.output.splitlines() if line.startswith("Error:")]
    assert r.exit_code == 2 and len(errors) == 1 and "--mixed" in errors[0] and not out.exists()
    r = runner.invoke(main, ["plot", str(l2), str(l1), "--envelope", "--mixed", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert out.read_bytes()[:8] == PNG_SIGNATURE
