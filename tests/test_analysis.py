"""smoothcert.analysis and `smoothcert analyze`: certified accuracy, ACR, abstain rate, envelope,
labels, tables and their JSON schema, reference-code logs, one-line errors on bad input."""
import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

from smoothcert.analysis import (SCHEMA, SCHEMA_VERSION, abstain_rate, accuracy, acr_difference, acr_standard_error,
                                 average_certified_radius,
                                 certified_accuracy, certified_accuracy_curve, default_labels, default_radii,
                                 envelope, envelope_curve, format_table, latex_escape, load_log, mean_time,
                                 parse_radii, parse_time, summarize)
from smoothcert.cli import main

HEADER = "idx\tlabel\tpredict\tradius\tcorrect\ttime\n"
RADII = [0.0, 0.25, 0.5, 0.75, 1.0]

# Log A (smoothcert style, seconds): 3 correct (radii 0.8, 0.3, 0.5), one abstention, one wrong
# prediction that carries a radius (it must never count).
A_ROWS = ["0\t3\t3\t0.8\t1\t1.5", "1\t1\t1\t0.3\t1\t2.5", "2\t7\t-1\t0.0\t0\t1.0",
          "3\t2\t5\t0.6\t0\t0.5", "4\t9\t9\t0.5\t1\t4.5"]
# Log B (reference-code style: time as datetime.timedelta strings): 3 correct (0.4, 0.9, 0.2),
# one abstention.
B_ROWS = ["0\t3\t3\t0.4\t1\t0:00:01.500000", "1\t1\t1\t0.9\t1\t0:00:02.250000",
          "2\t7\t7\t0.2\t1\t0:00:00.250000", "3\t2\t-1\t0.0\t0\t1 day, 0:00:00"]


def write(path: Path, text: str, meta: dict | None = None) -> Path:
    path.write_text(text)
    if meta is not None:
        Path(str(path) + ".meta.json").write_text(json.dumps(meta))
    return path


@pytest.fixture
def logs(tmp_path):
    a = write(tmp_path / "a.tsv", HEADER + "\n".join(A_ROWS) + "\n")
    b = write(tmp_path / "b.tsv", HEADER + "\n".join(B_ROWS) + "\n")
    return a, b


def meta(method: str, params: dict, sigma: float, train_sigma: float | None = None) -> dict:
    return {"model": "runs/x", "config": {"method": method, "method_params": params,
                                          "sigma": train_sigma if train_sigma is not None else sigma,
                                          "arch": "digits_cnn", "dataset": "digits"},
            "certify": {"sigma": sigma, "N0": 100, "N": 100000, "alpha": 0.001}}


# ---------------------------------------------------------------- metrics by hand


def test_certified_accuracy_acr_abstain_by_hand(logs):
    a, b = map(load_log, logs)
    assert a.kind == b.kind == "certify" and (a.n, b.n) == (5, 4)
    # A: correct radii {0.8, 0.3, 0.5}, n = 5; "radius >= r" counts the boundary (r = 0.5 -> 0.8 and 0.5).
    assert certified_accuracy(a, RADII).tolist() == pytest.approx([3 / 5, 3 / 5, 2 / 5, 1 / 5, 0 / 5])
    assert average_certified_radius(a) == pytest.approx((0.8 + 0.3 + 0.5) / 5)  # = 0.32; the wrong 0.6 is excluded
    assert accuracy(a) == pytest.approx(3 / 5) and abstain_rate(a) == pytest.approx(1 / 5)
    assert mean_time(a) == pytest.approx((1.5 + 2.5 + 1.0 + 0.5 + 4.5) / 5)
    # B: correct radii {0.4, 0.9, 0.2}, n = 4.
    assert certified_accuracy(b, RADII).tolist() == pytest.approx([3 / 4, 2 / 4, 1 / 4, 1 / 4, 0 / 4])
    assert average_certified_radius(b) == pytest.approx((0.4 + 0.9 + 0.2) / 4)  # = 0.375
    assert abstain_rate(b) == pytest.approx(1 / 4)
    assert mean_time(b) == pytest.approx((1.5 + 2.25 + 0.25 + 86400) / 4)


def test_acr_standard_errors_by_hand(logs, tmp_path):
    a, b = map(load_log, logs)
    ra = np.array([0.8, 0.3, 0.0, 0.0, 0.5])  # radius * correct: the wrong 0.6 counts 0
    assert acr_standard_error(a) == pytest.approx(ra.std(ddof=1) / np.sqrt(5))
    # paired over the 4 shared idx 0..3: d = (0.8-0.4, 0.3-0.9, 0-0.2, 0-0) in any row order
    shuffled = write(tmp_path / "b2.tsv", HEADER + "\n".join(B_ROWS[::-1]) + "\n")
    d = np.array([0.4, -0.6, -0.2, 0.0])
    for other in (b, shuffled):
        diff, se, k = acr_difference(a, other)
        assert k == 4 and diff == pytest.approx(d.mean()) and se == pytest.approx(d.std(ddof=1) / 2)
    assert acr_difference(a, a) == (0.0, 0.0, 5)
    one = write(tmp_path / "one.tsv", HEADER + A_ROWS[4] + "\n")
    with pytest.raises(ValueError, match="share 0 inputs"):
        acr_difference(b, one)


def test_acr_is_area_under_the_curve(logs):
    # ACR = integral_0^inf CA(r) dr; CA is CA(r_k) on (r_{k-1}, r_k].
    for path in logs:
        r, ca = certified_accuracy_curve(path)
        assert r[0] == 0 and np.all(np.diff(r) > 0) and np.all(np.diff(ca) <= 0)
        assert np.sum(np.diff(r) * ca[1:]) == pytest.approx(average_certified_radius(path))
    r, ca = certified_accuracy_curve(logs[0])
    assert r.tolist() == [0.0, 0.3, 0.5, 0.8] and ca.tolist() == pytest.approx([0.6, 0.6, 0.4, 0.2])


def test_envelope_is_best_over_logs(logs):
    # A and B hold different inputs (5 and 4 idx): the envelope is taken only when allowed explicitly
    # max(A, B) at each radius: max(.6,.75), max(.6,.5), max(.4,.25), max(.2,.25), max(0,0)
    assert envelope(logs, RADII, allow_mixed=True).tolist() == pytest.approx([0.75, 0.6, 0.4, 0.25, 0.0])
    r, v = envelope_curve(logs, allow_mixed=True)
    # breakpoints: 0 and every correct radius of A or B
    assert r.tolist() == [0.0, 0.2, 0.3, 0.4, 0.5, 0.8, 0.9]
    # e.g. on (0.4, 0.5]: A has 0.5, 0.8 -> 2/5, B has 0.9 -> 1/4: 0.4; on (0.8, 0.9]: A 0, B 1/4
    assert v.tolist() == pytest.approx([0.75, 0.75, 0.6, 0.5, 0.4, 0.25, 0.25])


def test_predict_and_attack_logs_have_no_certified_accuracy_past_zero(tmp_path):
    p = load_log(write(tmp_path / "p.tsv", "idx\tlabel\tpredict\tcorrect\ttime\n0\t1\t1\t1\t0.1\n"
                                          "1\t2\t-1\t0\t0.1\n2\t3\t3\t1\t0.1\n3\t4\t0\t0\t0.1\n"))
    assert p.kind == "predict" and p.radius is None
    ca = certified_accuracy(p, [0.0, 0.5])
    assert ca[0] == pytest.approx(2 / 4) and np.isnan(ca[1])
    assert abstain_rate(p) == pytest.approx(1 / 4)
    with pytest.raises(ValueError, match="no radius column"):
        average_certified_radius(p)
    att = load_log(write(tmp_path / "att.tsv", "idx\tlabel\tpredict\tcorrect\teps\n0\t1\t1\t1\t0.5\n1\t2\t0\t0\t0.5\n"))
    assert att.kind == "attack" and accuracy(att) == 0.5
    assert np.isnan(certified_accuracy(att, [0.0, 0.5])).all()
    # a certificate-check log carries the radius it attacked within: not a certificate
    chk = load_log(write(tmp_path / "chk.tsv", "idx\tlabel\tpredict\tcorrect\tcertified\tradius\tviolation\n"
                                              "0\t1\t1\t1\t1\t0.7\t0\n"))
    assert chk.kind == "attack" and chk.radius is None


def test_parse_time_and_radii():
    assert parse_time("0:00:01.234567") == pytest.approx(1.234567)
    assert parse_time("1:02:03") == 3723.0 and parse_time("2 days, 0:00:01.5") == pytest.approx(172801.5)
    assert parse_time("0.25") == 0.25
    with pytest.raises(ValueError):
        parse_time("soon")
    r = parse_radii("0:2.5:0.25")
    assert len(r) == 11 and r[0] == 0 and r[-1] == 2.5 and r[3] == 0.75  # stop included
    assert parse_radii("0:1:0.3").tolist() == [0.0, 0.3, 0.6, 0.9]  # 1.2 is past stop
    assert parse_radii("0,0.5,1").tolist() == [0.0, 0.5, 1.0]
    for bad in ("abc", "0:1", "1:0:0.5", "0:1:0", "0,-1", "", "0:1:0.25:2", "0,nan"):
        with pytest.raises(ValueError, match="radii"):
            parse_radii(bad)


def test_default_radii_reach_the_largest_certified_radius(logs):
    # largest correct radius over A and B is 0.9 -> grid 0, 0.25, 0.5, 0.75 (the wrong 0.6 of A is ignored)
    assert default_radii(logs).tolist() == [0.0, 0.25, 0.5, 0.75]


@pytest.mark.parametrize("body,needle", [
    ("", "empty"),
    ("idx\tlabel\tpredict\tradius\tcorrect\ttime\n", "no records"),
    ("idx\tlabel\tradius\ttime\n0\t1\t0.5\t1\n", "lacks predict, correct"),
    (HEADER + "0\t1\t1\t0.5\t1\t1\n1\t2\t2\t0.5\t1\n", "line 3 has 5 fields"),  # torn last line
    (HEADER + "x\t1\t1\t0.5\t1\t1\n", "line 2 is malformed"),
    (HEADER + "0\t1\t1\t0.5\t2\t1\n", "correct must be 0 or 1"),
    (HEADER + "0\t1\t1\t-0.5\t1\t1\n", "radius must be"),
    (HEADER + "0\t1\t1\tnan\t1\t1\n", "radius must be"),
    (HEADER + "0\t1\t1\t0.5\t1\tyesterday\n", "neither seconds"),
    (HEADER + "0\t1\t-1\t0.0\t1\t1\n", "abstention"),
    (HEADER + "0\t1\t1\t0.5\t1\t1\n1\t2\t2\t0.5\t1\t1\n0\t1\t1\t0.5\t1\t1\n", "duplicate idx 0"),
])
def test_bad_logs_raise_value_error(tmp_path, body, needle):
    with pytest.raises(ValueError, match=needle):
        load_log(write(tmp_path / "bad.tsv", body))


# ---------------------------------------------------------------- labels


def test_labels_from_meta(tmp_path):
    rows = HEADER + "0\t1\t1\t0.5\t1\t1\n1\t2\t0\t0.5\t0\t1\n"
    g = write(tmp_path / "g.tsv", rows, meta("gauss", {"sigma": 0.25}, 0.25))
    m25 = write(tmp_path / "m25.tsv", rows, meta("maxup-gauss", {"m": 25, "sigma": 0.25}, 0.25))
    m4 = write(tmp_path / "m4.tsv", rows, meta("maxup-gauss", {"m": 4, "sigma": 0.5}, 0.5))
    other = write(tmp_path / "other.tsv", rows, meta("maxup-gauss", {"m": 25, "sigma": 0.25}, 0.5, train_sigma=0.25))
    plain = write(tmp_path / "plain.tsv", rows)
    assert default_labels([g, m25, plain]) == ["gauss σ=0.25", "maxup-gauss m=25 σ=0.25", "plain"]
    assert default_labels([m25]) == ["maxup-gauss m=25 σ=0.25"]  # a single log shows all its params
    assert default_labels([m25, m4]) == ["maxup-gauss m=25 σ=0.25", "maxup-gauss m=4 σ=0.5"]
    # m is the same in both: not distinguishing; certified at another sigma than trained: said so
    assert default_labels([m25, other]) == ["maxup-gauss σ=0.25", "maxup-gauss σ=0.5 (trained 0.25)"]
    twin = write(tmp_path / "twin.tsv", rows, meta("gauss", {"sigma": 0.25}, 0.25))
    assert default_labels([g, twin]) == ["gauss σ=0.25 [g]", "gauss σ=0.25 [twin]"]
    for run in ("run1", "run2"):  # same file name in two run folders: the folder tells them apart
        (tmp_path / run).mkdir()
        write(tmp_path / run / "certify.tsv", rows)
    assert default_labels([tmp_path / "run1" / "certify.tsv", tmp_path / "run2" / "certify.tsv"]) == \
        ["certify [run1/certify]", "certify [run2/certify]"]


# ---------------------------------------------------------------- summary and tables


def test_summary_json_round_trip_and_best_flags(logs):
    s = summarize(logs, RADII, labels=["A", "B"], envelope=True, allow_mixed=True)
    back = json.loads(format_table(s, "json"))
    assert back == s
    assert back["schema"] == SCHEMA and back["version"] == SCHEMA_VERSION and back["radii"] == RADII
    a, b = back["logs"]
    assert (a["label"], a["n"], a["kind"]) == ("A", 5, "certify")
    assert a["certified_accuracy"] == pytest.approx([0.6, 0.6, 0.4, 0.2, 0.0])
    assert a["acr"] == pytest.approx(0.32) and b["acr"] == pytest.approx(0.375)
    assert a["abstain_rate"] == pytest.approx(0.2) and b["accuracy"] == pytest.approx(0.75)
    # best: accuracy B (.75 > .6), abstain A (.2 < .25), ACR B, radii: B, A, A, B, none (all tie at 0)
    assert [a["best"][k] for k in ("accuracy", "abstain_rate", "acr")] == [False, True, False]
    assert [b["best"][k] for k in ("accuracy", "abstain_rate", "acr")] == [True, False, True]
    assert a["best"]["certified_accuracy"] == [False, True, True, False, False]
    assert b["best"]["certified_accuracy"] == [True, False, False, True, False]
    env = back["envelope"]
    assert env["certified_accuracy"] == pytest.approx([0.75, 0.6, 0.4, 0.25, 0.0])
    assert env["argmax"] == [["B"], ["A"], ["A"], ["B"], ["A", "B"]] and env["of"] == ["A", "B"]


def test_summary_of_a_predict_log_has_nulls(logs, tmp_path):
    p = write(tmp_path / "p.tsv", "idx\tlabel\tpredict\tcorrect\ttime\n0\t1\t1\t1\t0.1\n1\t2\t-1\t0\t0.1\n")
    s = json.loads(format_table(summarize([logs[0], p], [0.0, 0.5], envelope=True, allow_mixed=True), "json"))
    row = s["logs"][1]
    assert row["kind"] == "predict" and row["acr"] is None and row["certified_accuracy"] == [0.5, None]
    assert s["envelope"]["of"] == ["a"]  # the envelope is over certify logs only
    md = format_table(summarize([logs[0], p], [0.0, 0.5], allow_mixed=True), "md")
    assert "| p | - | 2 | 50.0 | 50.0 | - | 50.0 | - |" in md


def test_markdown_and_latex_mark_the_best_cell(logs):
    s = summarize(logs, [0.0, 0.5, 1.0], labels=["A", "B"], envelope=True, allow_mixed=True)
    md = format_table(s, "md").splitlines()
    assert md[0] == "| config | certificate | n | acc. (%) | abstain (%) | ACR | r=0.00 | r=0.50 | r=1.00 |"
    cert = "L2 assumed, no metadata"
    assert md[2] == f"| A | {cert} | 5 | 60.0 | **20.0** | 0.320 | 60.0 | **40.0** | 0.0 |"
    assert md[3] == f"| B | {cert} | 4 | **75.0** | 25.0 | **0.375** | **75.0** | 25.0 | 0.0 |"
    assert md[4] == "| best of 2 (envelope) |  |  | - | - | - | 75.0 | 40.0 | 0.0 |"
    tex = format_table(summarize(logs, [0.0, 0.5, 1.0], labels=["A_1", "B σ"], allow_mixed=True), "latex")
    assert f"A\\_1 & {cert} & 5 & 60.0 & \\textbf{{20.0}} & 0.320 & 60.0 & \\textbf{{40.0}} & 0.0 \\\\" in tex
    assert (f"B $\\sigma$ & {cert} & 4 & \\textbf{{75.0}} & 25.0 & \\textbf{{0.375}} & \\textbf{{75.0}} & 25.0 & 0.0 "
            "\\\\") in tex
    assert tex.count("\\begin{tabular}") == 1 and "\\multicolumn{3}" in tex and "\\end{tabular}" in tex
    assert latex_escape("50% & a#b") == "50\\% \\& a\\#b"


def test_csv_has_numbers_and_best_column(logs):
    rows = list(csv.DictReader(io.StringIO(format_table(summarize(logs, [0.0, 0.5], labels=["A", "B"],
                                                                  envelope=True, allow_mixed=True), "csv"))))
    assert [r["label"] for r in rows] == ["A", "B", "envelope"]
    assert float(rows[0]["acr"]) == pytest.approx(0.32) and float(rows[1]["r=0.00"]) == pytest.approx(0.75)
    assert rows[0]["best"] == "abstain_rate r=0.50" and rows[1]["best"] == "accuracy acr r=0.00"
    assert float(rows[2]["r=0.50"]) == pytest.approx(0.4)


def test_summarize_errors(logs, tmp_path):
    with pytest.raises(ValueError, match="labels"):
        summarize(logs, RADII, labels=["only one"])
    with pytest.raises(ValueError, match="radii"):
        summarize(logs, [-1.0])
    p = write(tmp_path / "p.tsv", "idx\tlabel\tpredict\tcorrect\ttime\n0\t1\t1\t1\t0.1\n")
    with pytest.raises(ValueError, match="envelope"):
        summarize([p], RADII, envelope=True)
    with pytest.raises(ValueError, match="fmt"):
        format_table(summarize(logs, RADII, allow_mixed=True), "html")


# ---------------------------------------------------------------- CLI


def test_cli_analyze_writes_each_format(logs, runner, tmp_path):
    out = tmp_path / "t.json"  # format from the suffix
    r = runner.invoke(main, ["analyze", *map(str, logs), "--radii", "0:1:0.25", "--label", "A", "--label", "B",
                             "--envelope", "--mixed", "--out", str(out)])
    assert r.exit_code == 0, r.output
    s = json.loads(out.read_text())
    assert s["radii"] == RADII and [x["label"] for x in s["logs"]] == ["A", "B"]
    assert s["envelope"]["certified_accuracy"] == pytest.approx([0.75, 0.6, 0.4, 0.25, 0.0])
    r = runner.invoke(main, ["analyze", *map(str, logs), "--radii", "0,0.5", "--format", "latex", "--mixed"])
    assert r.exit_code == 0 and r.output.startswith("% needs \\usepackage{booktabs}")
    r = runner.invoke(main, ["analyze", str(logs[0]), "--radii", "0.5"])  # md by default, label = file stem
    assert r.exit_code == 0 and "| a | L2 assumed, no metadata | 5 | 60.0 | 20.0 | 0.320 | 40.0 |" in r.output
    xml = tmp_path / "t.xml"  # a suffix that names no format: --format decides
    r = runner.invoke(main, ["analyze", str(logs[0]), "--radii", "0.5", "--format", "csv", "--out", str(xml)])
    assert r.exit_code == 0 and xml.read_text().startswith("label,")


@pytest.mark.parametrize("args,needle", [
    (["{empty}"], "is empty"),
    (["{malformed}"], "malformed"),
    (["{dup}"], "duplicate idx"),
    (["{a}", "--radii", "0:x"], "--radii"),
    (["{a}", "--radii", "2:1:0.5"], "--radii"),
    (["{a}", "--out", "{missing}/t.md"], "does not exist"),
    (["{a}", "{a}", "--label", "one"], "--label"),
    (["{a}", "--format", "html"], "--format"),
    (["{a}", "--out", "{tmp}/t.xml"], "cannot tell the table format from 't.xml'"),
    (["{a}", "--out", "{tmp}"], "--out"),
    (["{nofile}"], "does not exist"),
])
def test_cli_analyze_bad_input_exits_2_with_one_line(logs, runner, tmp_path, args, needle):
    paths = {"a": str(logs[0]), "empty": str(write(tmp_path / "e.tsv", "")),
             "malformed": str(write(tmp_path / "m.tsv", HEADER + "0\t1\t1\tfar\t1\t1\n")),
             "dup": str(write(tmp_path / "d.tsv", HEADER + "3\t1\t1\t0.5\t1\t1\n3\t1\t1\t0.5\t1\t1\n")),
             "missing": str(tmp_path / "no" / "such"), "nofile": str(tmp_path / "nofile.tsv"),
             "tmp": str(tmp_path)}
    r = runner.invoke(main, ["analyze", *[a.format(**paths) for a in args]])
    assert r.exit_code == 2, r.output
    errors = [line for line in r.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and needle in errors[0] and "Traceback" not in r.output
    assert not (tmp_path / "t.xml").exists()


def test_sequential_and_non_l2_logs_are_certify_logs_labelled_by_their_certificate(tmp_path):
    """A sequential log's trailing n_used column keeps it a certify log (radii read, ACR
    defined), and labels say the norm (when not L2), a two-sided bound and a sequential run, so
    rows certified in different norms are never read as one kind."""
    import json

    from smoothcert.analysis import default_labels, load_log

    rows = "idx\tlabel\tpredict\tradius\tcorrect\ttime\tn_used\n0\t1\t1\t0.5\t1\t0.1\t300\n1\t2\t2\t0.25\t1\t0.1\t900\n"
    seq = tmp_path / "seq.tsv"
    seq.write_text(rows)
    l1 = tmp_path / "l1.tsv"
    l1.write_text("\n".join(line.rsplit("\t", 1)[0] for line in rows.splitlines()) + "\n")
    two = tmp_path / "two.tsv"
    two.write_text(l1.read_text())
    config = {"method": "gauss", "method_params": {"sigma": 0.25}, "sigma": 0.25}
    for path, run in ((seq, {"sigma": 0.25, "norm": "l2", "sequential": True}),
                      (l1, {"sigma": 0.25, "norm": "l1", "bound": "one-sided"}),
                      (two, {"sigma": 0.25, "norm": "l2", "bound": "two-sided"})):
        Path(str(path) + ".meta.json").write_text(json.dumps({"config": config, "certify": run}))
    log = load_log(seq)
    assert log.kind == "certify" and log.radius.tolist() == [0.5, 0.25]
    # l1 and two would repeat as "gauss σ=0.25": the parts of their certificates that differ tell them apart
    assert default_labels([seq, l1, two]) == ["gauss sequential σ=0.25", "gauss L1 one-sided σ=0.25",
                                              "gauss L2 two-sided σ=0.25"]


def test_sequential_logs_report_their_samples_per_input(tmp_path):
    """A sequential log's point is fewer samples: mean_samples is the mean of its n_used column
    (not the n_max of its meta), a fixed-N log's is the N of its meta, a log without meta has
    none; md, LaTeX and CSV tables carry the column when a sequential log is compared."""
    from smoothcert.analysis import mean_samples

    seq = write(tmp_path / "seq.tsv", "idx\tlabel\tpredict\tradius\tcorrect\ttime\tn_used\n"
                "0\t1\t1\t0.5\t1\t0.1\t300\n1\t2\t2\t0.25\t1\t0.1\t900\n2\t3\t-1\t0.0\t0\t0.1\t100000\n",
                {"config": {"method": "gauss", "method_params": {"sigma": 0.25}, "sigma": 0.25},
                 "certify": {"sigma": 0.25, "N0": 100, "N": 100000, "sequential": True}})
    fixed = write(tmp_path / "fixed.tsv", HEADER + "\n".join(A_ROWS) + "\n", meta("gauss", {"sigma": 0.25}, 0.25))
    bare = write(tmp_path / "bare.tsv", HEADER + "\n".join(B_ROWS) + "\n")
    assert mean_samples(seq) == pytest.approx((300 + 900 + 100000) / 3)
    assert mean_samples(fixed) == 100000 and mean_samples(bare) is None
    summary = summarize([seq, fixed, bare], RADII, allow_mixed=True)
    assert [row["mean_samples"] for row in summary["logs"]] == [pytest.approx(33733.33, abs=0.01), 100000, None]
    assert [row["sequential"] for row in summary["logs"]] == [True, False, False]
    md = format_table(summary, "md").splitlines()
    assert "samples/input" in md[0].split(" | ")
    assert "33,733" in md[2] and "100,000" in md[3] and md[4].split(" | ")[6] == "-"
    latex = format_table(summary, "latex")
    assert "samples/input" in latex and "\\cmidrule(lr){8-12}" in latex
    rows = list(csv.DictReader(io.StringIO(format_table(summary, "csv"))))
    assert [r["mean_samples"] for r in rows] == [repr(summary["logs"][0]["mean_samples"]), "100000.0", ""]
    # the column follows the log, not its label; without a sequential log the md table keeps its columns
    assert "samples/input" in format_table(summarize([seq, fixed], RADII, labels=["a", "b"], allow_mixed=True), "md")
    assert "samples/input" not in format_table(summarize([fixed, bare], RADII, allow_mixed=True), "md")


def test_bad_n_used_is_a_malformed_log(tmp_path):
    bad = write(tmp_path / "bad.tsv", "idx\tlabel\tpredict\tradius\tcorrect\tn_used\n0\t1\t1\t0.5\t1\t-3\n")
    with pytest.raises(ValueError, match="line 2 is malformed: n_used"):
        load_log(bad)


# ---------------------------------------------------------------- certificates: noise, norm, bound (issue 23)

ROWS = HEADER + "0\t3\t3\t0.8\t1\t1\n1\t1\t1\t0.3\t1\t1\n2\t7\t7\t0.1\t0\t1\n"


def certified(tmp_path: Path, name: str, rows: str = ROWS, **run) -> Path:
    """A certify log of a gauss-trained model with the settings ``run`` recorded as the certify runner does."""
    config = {"method": "gauss", "method_params": {"sigma": 0.25}, "sigma": 0.25}
    settings = {"sigma": 0.25, "N0": 100, "N": 10000, "alpha": 0.001, "noise": "gaussian", "norm": "l2",
                "bound": "one-sided", "sequential": False, **run}
    return write(tmp_path / f"{name}.tsv", rows, {"config": config, "certify": settings})


def test_rows_name_their_noise_norm_and_bound_from_the_meta(tmp_path):
    """A Laplace L1 certification of a gauss-trained model says laplace, L1 in its row and JSON (the
    JSON's norm was hard-coded l2), a first-release meta reads as Gaussian L2 one-sided, a log
    without meta as L2 assumed."""
    lap = certified(tmp_path, "lap", noise="laplace", norm="l1")
    two = certified(tmp_path, "two", bound="two-sided")
    legacy = write(tmp_path / "legacy.tsv", ROWS, meta("gauss", {"sigma": 0.25}, 0.25))  # no noise/norm/bound
    bare = write(tmp_path / "bare.tsv", ROWS)
    s = summarize([lap], RADII)
    assert s["radius"]["norm"] == "l1"
    row = s["logs"][0]
    assert (row["noise"], row["norm"], row["bound"], row["certificate"]) == ("laplace", "l1", "one-sided",
                                                                            "laplace L1 one-sided")
    assert "| gauss σ=0.25 | laplace L1 one-sided | 3 |" in format_table(s, "md")
    assert "laplace L1 one-sided" in format_table(s, "latex")
    assert list(csv.DictReader(io.StringIO(format_table(s, "csv"))))[0]["noise"] == "laplace"
    s = summarize([legacy, two, bare], RADII)  # all L2, same inputs: comparable
    assert s["radius"]["norm"] == "l2" and s["mixed"] == []
    assert [row["certificate"] for row in s["logs"]] == ["gaussian L2 one-sided", "gaussian L2 two-sided",
                                                         "L2 assumed, no metadata"]
    assert [row["certificate_recorded"] for row in s["logs"]] == [True, True, False]
    assert "without metadata is read as L2" in format_table(s, "md")
    # labels that would repeat get the certificate parts that differ
    assert default_labels([legacy, two]) == ["gauss one-sided σ=0.25", "gauss two-sided σ=0.25"]
    assert default_labels([certified(tmp_path, "g"), lap]) == ["gauss gaussian L2 σ=0.25", "gauss laplace L1 σ=0.25"]
    from smoothcert.analysis import certificate

    assert (certificate(lap).noise, certificate(lap).norm, certificate(lap).bound) == ("laplace", "l1", "one-sided")
    assert certificate(legacy).text == "gaussian L2 one-sided" and certificate(two).text == "gaussian L2 two-sided"
    assert certificate(bare).text == "L2 assumed, no metadata" and not certificate(bare).recorded


def test_envelope_and_best_cells_are_refused_across_norms_and_inputs(tmp_path):
    l2 = certified(tmp_path, "l2")
    l1 = certified(tmp_path, "l1", noise="laplace", norm="l1")
    linf = certified(tmp_path, "linf", norm="linf")
    fewer = certified(tmp_path, "fewer", rows=HEADER + "0\t3\t3\t0.8\t1\t1\n1\t1\t1\t0.3\t1\t1\n")
    for other, needle in ((l1, "different norms"), (linf, "different norms"), (fewer, "different inputs")):
        for call in (lambda: summarize([l2, other], RADII), lambda: envelope([l2, other], RADII),
                     lambda: envelope_curve([l2, other])):
            with pytest.raises(ValueError, match=f"allow_mixed: .*{needle}") as e:
                call()
            assert e.value.arg == "allow_mixed" and "\n" not in str(e.value)
    s = summarize([l2, l1, linf], RADII, envelope=True, allow_mixed=True)
    assert s["mixed"] == ["norms"] and s["radius"]["norm"] is None
    assert [row["norm"] for row in s["logs"]] == ["l2", "l1", "linf"]
    assert "certify different norms" in format_table(s, "md")
    assert summarize([l2, fewer], RADII, allow_mixed=True)["mixed"] == ["inputs"]
    # same norm and inputs, another noise or bound: comparable, each row says which
    s = summarize([l2, certified(tmp_path, "u", noise="uniform"), certified(tmp_path, "t", bound="two-sided")],
                  RADII, envelope=True)
    assert [row["certificate"] for row in s["logs"]] == ["gaussian L2 one-sided", "uniform L2 one-sided",
                                                         "gaussian L2 two-sided"]
    # a single log has no best cells to refuse; a predict log has no norm to mix
    assert summarize([l1], RADII)["mixed"] == []
    p = write(tmp_path / "p.tsv", "idx\tlabel\tpredict\tcorrect\ttime\n0\t3\t3\t1\t1\n1\t1\t1\t1\t1\n2\t7\t7\t0\t1\n")
    assert summarize([l1, p], RADII)["logs"][1]["norm"] is None


def test_published_extracts_without_meta_are_read_as_l2(tmp_path):
    published = Path(__file__).resolve().parents[1] / "experiments/results/mnist/published/cohen_noise_0.25_4067.tsv"
    if not published.is_file():
        pytest.skip("published extracts not in this checkout")
    s = summarize([published], RADII)
    assert s["radius"]["norm"] == "l2" and s["logs"][0]["certificate"] == "L2 assumed, no metadata"


def test_cli_analyze_refuses_a_mix_unless_mixed(runner, tmp_path):
    l2, l1 = certified(tmp_path, "l2"), certified(tmp_path, "l1", noise="laplace", norm="l1")
    for extra in ([], ["--envelope"]):
        r = runner.invoke(main, ["analyze", str(l2), str(l1), *extra])
        errors = [line for line in r.output.splitlines() if line.startswith("Error:")]
        assert r.exit_code == 2 and len(errors) == 1 and "--mixed" in errors[0] and "different norms" in errors[0]
        r = runner.invoke(main, ["analyze", str(l2), str(l1), *extra, "--mixed", "--format", "json"])
        assert r.exit_code == 0, r.output
        s = json.loads(r.output)
        assert [row["norm"] for row in s["logs"]] == ["l2", "l1"] and s["mixed"] == ["norms"]


def test_a_directory_is_said_to_be_a_directory(runner, tmp_path):
    with pytest.raises(ValueError, match="is a directory"):
        load_log(tmp_path)
    r = runner.invoke(main, ["analyze", str(tmp_path)])
    errors = [line for line in r.output.splitlines() if line.startswith("Error:")]
    assert r.exit_code == 2 and len(errors) == 1 and "is a directory" in errors[0] and "does not exist" not in r.output


# ---------------------------------------------------------------- committed logs: radii rounded down (issue 23)

REPO = Path(__file__).resolve().parents[1]


def _fix_rounding():
    import importlib.util

    spec = importlib.util.spec_from_file_location("fix_rounding", REPO / "experiments" / "fix_rounding.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fix_rounding_rounds_a_round_to_nearest_log_down_soundly_and_once(tmp_path):
    """A log written as the first release wrote it (round(radius, 4)) is rewritten to radii that
    never exceed the certificate and are at most 1e-4 below it; a second run finds nothing."""
    from smoothcert.logs import floor_decimal
    from smoothcert.noise import get_noise
    from smoothcert.stats import clopper_pearson_lower

    fr = _fix_rounding()
    n, alpha, sigma = 1000, 0.001, 0.25
    counts = np.arange(560, 1001, 7)
    true = get_noise("gaussian", sigma).radius(clopper_pearson_lower(counts, n, alpha))
    rows = ([f"{i}\t1\t1\t{round(float(r), 4)}\t1\t0.1" for i, r in enumerate(true)]  # as the first release logged
            + [f"{len(true)}\t2\t-1\t0.0\t0\t0.1"])
    (tmp_path / "mnist").mkdir()
    log = write(tmp_path / "mnist" / "old.tsv", HEADER + "\n".join(rows) + "\n",
                {"certify": {"sigma": sigma, "N": n, "N0": 100, "alpha": alpha}})  # a first-release meta
    published = tmp_path / "published"
    published.mkdir()
    write(published / "theirs.tsv", log.read_text(), json.loads(Path(str(log) + ".meta.json").read_text()))
    found = fr.candidates(tmp_path)
    assert [x[0] for x in found] == [log]  # the published extract is never touched
    assert fr.fix(*found[0], write=True) > 0
    fixed = load_log(log).radius
    assert (fixed[:-1] <= true + 1e-12).all() and (fixed[:-1] >= true - 1e-4).all() and fixed[-1] == 0
    assert [f"{r:.4f}" for r in fixed[:-1]] == [floor_decimal(float(r), 4) for r in true]  # exact at this N
    assert (fixed[:-1] < np.round(true, 4) - 1e-9).any()  # some radii were rounded up, and are lowered
    assert "radius_rounding" in json.loads(Path(str(log) + ".meta.json").read_text())
    assert fr.fix(*fr.candidates(tmp_path)[0], write=True) is None  # idempotent


def test_committed_logs_of_ours_are_rounded_down():
    """18 committed MNIST logs were written before radii were rounded down (round to nearest, up to
    5e-5 too large); every certify log of ours whose meta records its settings must hold radii
    that a rounded-down certificate can give (experiments/fix_rounding.py --check finds none)."""
    fr = _fix_rounding()
    found = fr.candidates()
    if not found:
        pytest.skip("no committed certify logs in this checkout")
    assert len(found) >= 33
    assert [str(log) for log, meta, s in found if fr.fix(log, meta, s, write=False) is not None] == []
