"""Shards for Slurm arrays: parse_shard, shard_of, sharded certify logs and merge_logs (library and CLI)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from smoothcert import Selection, Smooth, certify_dataset, load_model
from smoothcert.cli import main
from smoothcert.data import get_dataset
from smoothcert.shards import merge_logs, parse_shard, shard_of
from smoothcert.validation import ArgumentError

FAST = dict(n0=20, n=100, alpha=0.01, batch_size=100)


def _rows(path: Path, time: bool = False) -> list[list[str]]:
    lines = Path(path).read_text().splitlines()
    cut = lines[0].split("\t").index("time")
    return [(r if time else r[:cut] + r[cut + 1:]) for r in (line.split("\t") for line in lines[1:])]


def _meta(path: Path) -> dict:
    return json.loads(Path(str(path) + ".meta.json").read_text())


def test_parse_shard():
    assert parse_shard("2/4") == (2, 4) and parse_shard(" 1/1 ") == (1, 1) and parse_shard(None) is None
    for bad, text in (("3/2", "I = 3; I is the shard's number, 1 to 2"), ("0/0", "K = 0"),
                      ("a/b", "neither I/K"), ("0/3", "I = 0"), ("1/2/3", "neither I/K"), ("4", "neither I/K")):
        with pytest.raises(ArgumentError) as e:
            parse_shard(bad)
        assert e.value.arg == "shard" and text in str(e.value) and "\n" not in str(e.value), (bad, str(e.value))


@pytest.mark.parametrize("env, shard", [
    ({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "10", "SLURM_ARRAY_TASK_MIN": "0"}, (4, 10)),
    ({"SLURM_ARRAY_TASK_ID": "10", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "10"}, (10, 10)),
    ({"SLURM_ARRAY_TASK_ID": "10", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "20",
      "SLURM_ARRAY_TASK_STEP": "5"}, (3, 5)),
])
def test_parse_shard_slurm(env, shard):
    assert parse_shard("slurm", env) == shard


@pytest.mark.parametrize("env, text", [
    ({}, "needs SLURM_ARRAY_TASK_ID"),
    ({"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_COUNT": "2"}, "is not an integer"),
    ({"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_MIN": "0"}, "SLURM_ARRAY_TASK_COUNT or SLURM_ARRAY_TASK_MAX"),
    ({"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_COUNT": "3"}, "I = 6"),
    ({"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "9",
      "SLURM_ARRAY_TASK_COUNT": "3"}, "are not the range 1-9"),  # --array=1,4,9
])
def test_parse_shard_slurm_errors(env, text):
    with pytest.raises(ArgumentError, match=text):
        parse_shard("slurm", env)


@pytest.mark.parametrize("n, k, block", [(10, 3, 1), (10, 3, 2), (7, 7, 1), (3, 5, 1), (25, 4, 3), (0, 2, 1)])
def test_shards_are_disjoint_and_complete(n, k, block):
    indices = list(range(0, 3 * n, 3))
    parts = [shard_of(indices, (i, k), block) for i in range(1, k + 1)]
    assert sum(parts, []) == indices  # in order, disjoint, complete
    for p in parts:  # cut on block boundaries: each block (one generator) stays in one shard
        assert not p or indices.index(p[0]) % block == 0
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= block  # balanced


def _certify(model, out: Path, shard=None, pack: int = 1, n: int = 100, max_count: int = 11):
    ds = get_dataset("digits", "test")
    return certify_dataset(Smooth(model, 10, 0.25), ds, out, **{**FAST, "n": n},
                           selection=Selection(3, max_count, shard), seed=7, pack=pack)


@pytest.mark.parametrize("pack", [1, 2])
def test_shards_give_the_rows_of_the_unsharded_run(digits_run, tmp_path, pack):
    model, _ = load_model(digits_run)
    whole = _certify(model, tmp_path / "whole.tsv", pack=pack)
    k = 3
    shards = [_certify(model, tmp_path / f"s{i}.tsv", (i, k), pack=pack).path for i in range(1, k + 1)]
    concatenated = sum((_rows(s) for s in shards), [])
    assert concatenated == _rows(whole.path) and len(concatenated) == 11
    meta = _meta(shards[1])
    assert meta["selection"] == {"skip": 3, "max": 11, "shard": "2/3", "selected": 11}
    assert meta["certify"] == _meta(whole.path)["certify"] and meta["model"] == str(digits_run)
    merged = merge_logs(list(reversed(shards)), tmp_path / "merged.tsv")
    assert _rows(merged) == _rows(whole.path)
    assert _meta(merged) == _meta(whole.path)  # the metadata of the unsharded run, no shard
    from smoothcert.analysis import load_log, summarize

    s = summarize([load_log(merged), load_log(whole.path)])
    assert s["logs"][0]["acr"] == s["logs"][1]["acr"] and s["logs"][0]["n"] == 11
    merge_logs(shards, tmp_path / "merged.tsv")  # merging again into the same merge is allowed


def test_merge_refuses_what_is_not_one_complete_run(digits_run, tmp_path):
    model, _ = load_model(digits_run)
    s1, s2 = (_certify(model, tmp_path / f"s{i}.tsv", (i, 2)).path for i in (1, 2))
    other = _certify(model, tmp_path / "other.tsv", (2, 2), n=120).path
    whole = _certify(model, tmp_path / "whole.tsv").path
    cases = [
        ([s1, other], "are not shards of one run (other settings: certify.N=100 there, 120 here)"),
        ([s1, s1], "shard 1/2 is given twice"),
        ([s1], "shard 2/2 missing; the 2 shards must all be given"),
        ([s1, whole], "is not a shard (its metadata records no selection.shard)"),
        ([s1, tmp_path / "absent.tsv"], "does not exist"),
    ]
    three = _certify(model, tmp_path / "t3.tsv", (3, 3)).path
    cases.append(([s1, s2, three], "different numbers of parts"))
    for logs, text in cases:
        with pytest.raises(ArgumentError) as e:
            merge_logs(logs, tmp_path / "m.tsv")
        assert e.value.arg == "logs" and text in str(e.value) and "\n" not in str(e.value), (logs, str(e.value))
    # an incomplete shard (a task killed midway): its missing rows are named
    lines = s2.read_text().splitlines()
    s2.write_text("\n".join(lines[:-2]) + "\n")
    with pytest.raises(ArgumentError, match=r"is incomplete: shard 2/2 has 4 of its 6 rows; rerun it"):
        merge_logs([s1, s2], tmp_path / "m.tsv")
    with pytest.raises(ArgumentError, match="is one of the logs to merge"):
        merge_logs([s1, s2], s1)
    (tmp_path / "taken.tsv").write_text("x\n")
    _certify(model, s2, (2, 2))  # completes the shard (it resumes) ...
    with pytest.raises(ArgumentError, match="exists and is not this merge"):
        merge_logs([s1, s2], tmp_path / "taken.tsv")  # ... but the output is another file
    assert not (tmp_path / "m.tsv").exists()


def test_a_shard_log_resumes_only_as_that_shard(digits_run, tmp_path):
    model, _ = load_model(digits_run)
    _certify(model, tmp_path / "s.tsv", (1, 2))
    with pytest.raises(ArgumentError) as e:
        _certify(model, tmp_path / "s.tsv", (2, 2))
    assert e.value.arg == "shard" and "holds rows of shard 1/2, this run is shard 2/2" in str(e.value)
    with pytest.raises(ArgumentError, match="this run is shard none"):
        _certify(model, tmp_path / "s.tsv")
    _certify(model, tmp_path / "w.tsv")
    with pytest.raises(ArgumentError, match="holds rows of shard none .all inputs., this run is shard 1/2"):
        _certify(model, tmp_path / "w.tsv", (1, 2))
    assert _certify(model, tmp_path / "s.tsv", (1, 2)).written == 0  # the same shard resumes


def test_cli_shards_merge_and_analyze(digits_run, runner, tmp_path, monkeypatch):
    base = ["certify", str(digits_run), "--N0", "20", "--N", "100", "--alpha", "0.01", "--batch", "100", "--skip", "3",
            "--max", "8", "--seed", "3", "--quiet"]
    r = runner.invoke(main, [*base, "--out", str(tmp_path / "whole.tsv")])
    assert r.exit_code == 0, r.output
    for task in (0, 1):  # an array --array=0-1: tasks 0 and 1 are shards 1/2 and 2/2
        monkeypatch.setenv("SLURM_ARRAY_TASK_ID", str(task))
        monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "0")
        monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
        r = runner.invoke(main, [*base, "--shard", "slurm", "--out", str(tmp_path / f"part{task}.tsv")])
        assert r.exit_code == 0, r.output
    assert _meta(tmp_path / "part1.tsv")["selection"]["shard"] == "2/2"
    r = runner.invoke(main, ["merge", str(tmp_path / "part0.tsv"), str(tmp_path / "part1.tsv"), "--out",
                             str(tmp_path / "all.tsv")])
    assert r.exit_code == 0 and "merged 2 shards" in r.output, r.output
    assert _rows(tmp_path / "all.tsv") == _rows(tmp_path / "whole.tsv")
    r = runner.invoke(main, ["analyze", str(tmp_path / "all.tsv"), str(tmp_path / "whole.tsv"), "--format", "json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)["logs"]
    assert rows[0]["certified_accuracy"] == rows[1]["certified_accuracy"]
    r = runner.invoke(main, ["plot", str(tmp_path / "all.tsv"), "--out", str(tmp_path / "all.png")])
    assert r.exit_code == 0, r.output
    for spec in ("3/2", "0/0", "a/b"):
        r = runner.invoke(main, [*base, "--shard", spec, "--out", str(tmp_path / "bad.tsv")])
        err = [line for line in r.output.splitlines() if line.startswith("Error")]
        assert r.exit_code == 2 and len(err) == 1 and "--shard" in err[0], r.output
        assert not (tmp_path / "bad.tsv").exists()
    r = runner.invoke(main, ["merge", str(tmp_path / "part0.tsv"), str(tmp_path / "part0.tsv"), "--out",
                             str(tmp_path / "x.tsv")])
    err = [line for line in r.output.splitlines() if line.startswith("Error")]
    assert r.exit_code == 2 and len(err) == 1 and "given twice" in err[0], r.output


def test_a_shard_logs_config_is_its_shard(digits_run, tmp_path):
    from smoothcert.configs import CertifyConfig

    model, _ = load_model(digits_run)
    _certify(model, tmp_path / "s.tsv", (2, 3))
    assert CertifyConfig.from_log(tmp_path / "s.tsv").selection == Selection(3, 11, (2, 3))
