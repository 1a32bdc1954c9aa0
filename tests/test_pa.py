"""The counts nA, n in certify logs, and the distribution of pA beside ACR (analysis.pa_summary,
analyze's JSON logs[].pa, smoothcert plot-pa)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from smoothcert import Selection, Smooth, certify_dataset, load_model
from smoothcert.analysis import load_log, pa_estimates, pa_summary, summarize
from smoothcert.cli import main
from smoothcert.data import get_dataset
from smoothcert.logs import CERTIFY_COLUMNS, COUNT_COLUMNS, floor_decimal
from smoothcert.stats import clopper_pearson_lower
from smoothcert.validation import ArgumentError

SETTINGS = dict(n0=20, n=200, alpha=0.01, batch_size=100)


def _certify(model, out: Path, max_count: int = 6, **kw):
    return certify_dataset(Smooth(model, 10, 0.25), get_dataset("digits", "test"), out,
                           **{**SETTINGS, **kw}, selection=Selection(2, max_count), seed=1)


def _table(path: Path) -> tuple[list[str], list[list[str]]]:
    lines = path.read_text().splitlines()
    return lines[0].split("\t"), [line.split("\t") for line in lines[1:]]


@pytest.mark.parametrize("bound", ["one-sided", "two-sided"])
def test_certify_logs_carry_the_counts_of_their_certificates(digits_run, tmp_path, bound):
    model, _ = load_model(digits_run)
    out = _certify(model, tmp_path / "c.tsv", bound=bound).path
    header, rows = _table(out)
    assert tuple(header) == CERTIFY_COLUMNS + COUNT_COLUMNS
    assert json.loads(Path(str(out) + ".meta.json").read_text())["columns"] == header
    level = SETTINGS["alpha"] / (2 if bound == "two-sided" else 1)
    for r in rows:
        pred, radius, n_a, n = int(r[2]), float(r[3]), int(r[6]), int(r[7])
        assert n == SETTINGS["n"] and 0 <= n_a <= n
        if bound == "one-sided" and pred != -1:  # the radius is sigma Phi^-1(pA_lower) of these counts
            from scipy.stats import norm

            p_lower = float(clopper_pearson_lower(np.array([n_a]), n, level)[0])
            assert r[3] == floor_decimal(0.25 * norm.ppf(p_lower), 4)
        if pred == -1 and bound == "one-sided":
            assert clopper_pearson_lower(np.array([n_a]), n, level)[0] < 0.5
    # the same draws and certificates as the Cohen-compatible certify_batch
    ds = get_dataset("digits", "test")
    xs = torch.stack([ds[i][0] for i in (0, 2)])
    s = Smooth(model, 10, 0.25)
    a = s.certify_batch(xs, 20, 200, 0.01, 100, torch.Generator().manual_seed(3), bound=bound)
    b = s.certify_counts_batch(xs, 20, 200, 0.01, 100, torch.Generator().manual_seed(3), bound=bound)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and b[2].dtype == torch.int64
    log = load_log(out)
    estimate, lower = pa_estimates(log)
    assert np.allclose(estimate, log.count_a / 200)
    assert np.allclose(lower, clopper_pearson_lower(log.count_a, 200, level))


def test_an_old_log_resumes_in_its_own_columns(digits_run, tmp_path):
    model, _ = load_model(digits_run)
    new = _certify(model, tmp_path / "new.tsv", max_count=6).path
    old = tmp_path / "old.tsv"  # the same rows as a log of the previous release wrote them: no nA, n
    header, rows = _table(new)
    old.write_text("\n".join("\t".join(r[:6]) for r in [header] + rows[:3]) + "\n")
    meta = json.loads(Path(str(new) + ".meta.json").read_text())
    meta["columns"] = list(CERTIFY_COLUMNS)
    Path(str(old) + ".meta.json").write_text(json.dumps(meta))
    report = _certify(model, old, max_count=6)
    assert report.written == 3
    h2, rows2 = _table(old)
    assert tuple(h2) == CERTIFY_COLUMNS and all(len(r) == 6 for r in rows2)  # never two formats in one file
    assert [r[:5] for r in rows2] == [r[:5] for r in rows]  # the same certificates
    assert json.loads(Path(str(old) + ".meta.json").read_text())["columns"] == list(CERTIFY_COLUMNS)
    assert load_log(old).count_a is None and pa_summary(old) is None
    assert summarize([old])["logs"][0]["pa"] is None
    with pytest.raises(ValueError, match="has no nA and n columns"):
        pa_estimates(old)
    # a file of another format is refused, not extended
    other = tmp_path / "other.tsv"
    other.write_text("\t".join(CERTIFY_COLUMNS + ("n_used",)) + "\n0\t1\t1\t0.5\t1\t0.1\t300\n")
    Path(str(other) + ".meta.json").write_text(json.dumps(meta))
    with pytest.raises(ArgumentError, match="is not a certify log"):
        _certify(model, other)


def test_pa_summary_quantiles_saturation_and_acr_share(tmp_path):
    log = tmp_path / "c.tsv"
    rows = [(0, 1, 1, 0.9, 1, 100, 100), (1, 2, 2, 0.5, 1, 95, 100), (2, 3, 3, 0.2, 1, 80, 100),
            (3, 4, -1, 0.0, 0, 40, 100)]
    log.write_text("\t".join(CERTIFY_COLUMNS + COUNT_COLUMNS) + "\n"
                   + "".join(f"{i}\t{y}\t{p}\t{r}\t{c}\t0.1\t{a}\t{n}\n" for i, y, p, r, c, a, n in rows))
    Path(str(log) + ".meta.json").write_text(json.dumps({"certify": {"alpha": 0.001, "N": 100, "sigma": 0.25}}))
    pa = pa_summary(log)
    assert pa["estimate"][0] == 0.4 and pa["estimate"][-1] == 1.0 and pa["estimate"][4] == pytest.approx(0.875)
    assert pa["mean_estimate"] == pytest.approx((1 + 0.95 + 0.8 + 0.4) / 4)
    assert pa["lower"][-1] == pytest.approx(0.001 ** (1 / 100))  # nA = n: the ceiling alpha^(1/n)
    assert pa["saturated"] == 0.25 and pa["acr_share_saturated"] == pytest.approx(0.9 / 1.6)
    assert pa["level"] == 0.001 and pa["n"] == 100
    Path(str(log) + ".meta.json").write_text(json.dumps({"certify": {"N": 100}}))  # no alpha: no lower bound
    assert pa_summary(log)["lower"] is None and pa_summary(log)["estimate"] == pa["estimate"]
    bad = tmp_path / "bad.tsv"
    bad.write_text("\t".join(CERTIFY_COLUMNS + COUNT_COLUMNS) + "\n0\t1\t1\t0.5\t1\t0.1\t101\t100\n")
    with pytest.raises(ValueError, match="line 2 is malformed: nA and n must be counts"):
        load_log(bad)


def test_analyze_json_and_plot_pa(digits_run, runner, tmp_path):
    model, _ = load_model(digits_run)
    a = _certify(model, tmp_path / "a.tsv").path
    b = _certify(model, tmp_path / "b.tsv", n=100).path
    r = runner.invoke(main, ["analyze", str(a), str(b), "--format", "json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)["logs"]
    assert rows[0]["pa"]["n"] == 200 and rows[1]["pa"]["n"] == 100 and len(rows[0]["pa"]["estimate"]) == 9
    assert rows[0]["pa"] == pa_summary(a)
    r = runner.invoke(main, ["plot-pa", str(a), str(b), "--label", "N=200", "--label", "N=100", "--out",
                             str(tmp_path / "pa.png")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "pa.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    old = tmp_path / "old.tsv"
    old.write_text("\t".join(CERTIFY_COLUMNS) + "\n0\t1\t1\t0.5\t1\t0.1\n")
    r = runner.invoke(main, ["plot-pa", str(old), "--out", str(tmp_path / "x.png")])
    err = [line for line in r.output.splitlines() if line.startswith("Error")]
    assert r.exit_code == 2 and len(err) == 1 and "has no nA and n columns" in err[0], r.output
    assert not (tmp_path / "x.png").exists()


def test_a_stand_in_without_counts_writes_cohens_columns_and_cannot_extend_a_counted_log(digits_run, tmp_path):
    model, _ = load_model(digits_run)

    class Own(Smooth):  # its own CERTIFY: the runner cannot know its counts
        def certify_batch(self, *args, **kwargs):
            return super().certify_batch(*args, **kwargs)

    ds = get_dataset("digits", "test")
    plain = certify_dataset(Own(model, 10, 0.25), ds, tmp_path / "own.tsv", **SETTINGS, selection=Selection(1, 2))
    assert tuple(_table(plain.path)[0]) == CERTIFY_COLUMNS
    counted = _certify(model, tmp_path / "c.tsv", max_count=2).path
    with pytest.raises(ArgumentError, match="holds the counts nA, n of Smooth's CERTIFY, which Own.certify_batch"):
        certify_dataset(Own(model, 10, 0.25), ds, counted, **SETTINGS, selection=Selection(2, 4), seed=1)
