"""The quickstart end to end at reduced size (the two-command promise of the README)."""
import json

from smoothcert.cli import main


def test_quickstart_small_end_to_end(runner, tmp_path):
    out = tmp_path / "qs"
    r = runner.invoke(main, ["quickstart", "--small", "--quiet", "--out", str(out)])
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "summary.json").read_text())
    rows = summary["logs"]
    assert len(rows) == 2
    for method in ("gauss", "maxup-gauss"):
        assert (out / method / "config.json").is_file()
        lines = (out / method / "certify.tsv").read_text().splitlines()
        assert lines[0].split("\t") == ["idx", "label", "predict", "radius", "correct", "time", "nA", "n"]
        assert len(lines) == 1 + 10
    assert (out / "certified_accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "maxup-gauss" in (out / "table.md").read_text()
    # rerunning resumes: nothing is trained or certified twice
    r2 = runner.invoke(main, ["quickstart", "--small", "--quiet", "--out", str(out)])
    assert r2.exit_code == 0, r2.output
    assert len((out / "gauss" / "certify.tsv").read_text().splitlines()) == 11


def test_quickstart_bad_out(runner, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    r = runner.invoke(main, ["quickstart", "--out", str(f)])
    assert r.exit_code == 2 and "not a folder" in r.output
    r = runner.invoke(main, ["quickstart", "--out", str(tmp_path / "missing" / "qs")])
    assert r.exit_code == 2 and "does not exist" in r.output
