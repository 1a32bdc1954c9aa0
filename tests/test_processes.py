"""The one process group (smoothcert.processes): the device of each torchrun process as a pure
function of the requested device, WORLD_SIZE/LOCAL_RANK and the GPUs present (no GPU needed:
torch.cuda is monkeypatched), the backend it starts, and that certify, predict and attack hand
each rank its own GPU (issue 23, item 6)."""
from __future__ import annotations

import pytest
import torch

import smoothcert.processes as processes
from smoothcert.cli import main
from smoothcert.processes import ProcessGroup, choose_device
from smoothcert.validation import ArgumentError


@pytest.fixture
def gpus(monkeypatch):
    """A machine with ``n`` fake GPUs: ``gpus(n)``; 0 = no CUDA."""
    def set_gpus(n: int) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
    return set_gpus


def torchrun(world: int, local_rank: int, rank: int | None = None) -> dict[str, str]:
    return {"WORLD_SIZE": str(world), "LOCAL_RANK": str(local_rank), "RANK": str(local_rank if rank is None else rank)}


CUDA = [  # requested, world, local rank -> device (4 GPUs)
    (None, 1, 0, "cuda:0"), ("cuda", 1, 0, "cuda:0"), ("cuda:3", 1, 0, "cuda:3"), ("cpu", 1, 0, "cpu"),
    (None, 2, 1, "cuda:1"), ("cuda", 2, 1, "cuda:1"), ("cuda", 4, 3, "cuda:3"), ("cpu", 2, 1, "cpu"),
    ("cuda:1", 2, 1, "cuda:1"),  # the rank's own GPU (a device chosen by this rule, handed on)
    ("cuda:0", 2, 0, "cuda:0"),  # one process per node on several nodes: LOCAL_RANK 0 everywhere
    (torch.device("cuda"), 2, 1, "cuda:1"),
]


@pytest.mark.parametrize("requested,world,local_rank,expected", CUDA)
def test_the_device_of_each_process(gpus, requested, world, local_rank, expected):
    gpus(4)
    env = torchrun(world, local_rank)
    dev = choose_device(requested, env)
    assert dev == torch.device(expected)
    assert choose_device(dev, env) == dev  # idempotent: a chosen device can be handed on


@pytest.mark.parametrize("requested,world,local_rank,needle", [
    ("cuda:0", 2, 1, "cuda:0 is one GPU for the 2 processes"),  # an explicit single GPU under torchrun
    ("cuda:2", 4, 1, "cuda:2 is one GPU for the 4 processes"),
    ("cuda:7", 1, 0, "cuda:7 does not exist"),
    ("cuda", 8, 5, "LOCAL_RANK 5"),  # more processes on the node than GPUs
    ("gpu", 1, 0, "unknown device 'gpu'"),
])
def test_conflicting_devices_are_errors_naming_device(gpus, requested, world, local_rank, needle):
    gpus(4)
    with pytest.raises(ArgumentError, match=needle) as e:
        choose_device(requested, torchrun(world, local_rank))
    assert e.value.arg == "device" and str(e.value).startswith("device: ")


def test_without_cuda(gpus):
    gpus(0)
    assert choose_device(None, {}) == torch.device("cpu") == choose_device(None, torchrun(2, 1))
    for requested in ("cuda", "cuda:0"):
        with pytest.raises(ArgumentError, match="CUDA is not available"):
            choose_device(requested, {})


def test_the_environment_is_read_from_os_environ(gpus, monkeypatch):
    gpus(2)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert choose_device("cuda") == torch.device("cuda", 1)
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.delenv("LOCAL_RANK")
    assert choose_device("cuda") == torch.device("cuda", 0) and choose_device("cuda:1") == torch.device("cuda", 1)


@pytest.mark.parametrize("requested,backend,device", [("cuda", "nccl", "cuda:1"), ("cpu", "gloo", "cpu"),
                                                      (None, "nccl", "cuda:1")])
def test_the_group_backend_and_the_current_gpu(gpus, monkeypatch, requested, backend, device):
    gpus(2)
    calls = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(("set_device", torch.device(d))))
    monkeypatch.setattr(processes.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(processes.dist, "init_process_group", lambda b: calls.append(("init", b)))
    group = ProcessGroup(requested, torchrun(2, 1, rank=3))
    assert (group.world, group.rank, group.local_rank, group.device) == (2, 3, 1, torch.device(device))
    assert group.active and group.started
    expected = ([("set_device", torch.device(device))] if backend == "nccl" else []) + [("init", backend)]
    assert calls == expected


def test_a_single_process_starts_nothing_and_changes_no_state(gpus, monkeypatch):
    gpus(2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: pytest.fail("set_device outside torchrun"))
    monkeypatch.setattr(processes.dist, "init_process_group", lambda b: pytest.fail("a group for one process"))
    with ProcessGroup("cuda", {}) as group:
        assert (group.world, group.rank, group.device, group.active, group.started) == (1, 0, torch.device("cuda", 0),
                                                                                        False, False)
        assert group.broadcast("x") == "x" and group.all_gather(3) == [3]
        t = torch.ones(2)
        assert group.all_reduce(t) is t and torch.equal(t, torch.ones(2))
        group.barrier()
    with pytest.raises(ArgumentError, match="cuda:0 is one GPU"):
        ProcessGroup("cuda:0", torchrun(2, 1))


# -- the CLI: certify, predict and attack put each rank on its own GPU --------------------------
class Loaded(Exception):
    """Raised by the stub loader: the command got as far as loading, on this device."""


@pytest.fixture
def loads(monkeypatch):
    seen = []

    def stub(path=None, *, device, **kw):
        seen.append(device)
        raise Loaded(str(device))

    monkeypatch.setattr("smoothcert.sources.load_classifier", stub)  # the commands import it when they run
    return seen


COMMANDS = [["certify", "--out", "{out}"], ["predict", "--out", "{out}"], ["attack"], ["attack", "--smoothed"],
            ["check-certificates", "{log}"]]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("device", [None, "cuda"])
def test_each_rank_gets_its_own_gpu(digits_run, runner, tmp_path, gpus, monkeypatch, loads, command, device):
    gpus(2)
    for k, v in torchrun(2, 1).items():
        monkeypatch.setenv(k, v)
    log = tmp_path / "c.tsv"
    log.write_text("idx\tlabel\tpredict\tradius\tcorrect\ttime\n")
    args = [a.format(out=tmp_path / "o.tsv", log=log) for a in command]
    r = runner.invoke(main, [args[0], str(digits_run), *args[1:], *(["--device", device] if device else [])])
    assert isinstance(r.exception, Loaded), r.output
    assert loads == [torch.device("cuda", 1)]  # rank 1: cuda:1, not cuda:0


TRAIN = ["train", "--out", "{out}", "--dataset", "synthetic", "--sigma", "0.25", "--epochs", "1"]


@pytest.mark.parametrize("command", COMMANDS + [TRAIN])
def test_an_explicit_single_gpu_under_torchrun_exits_2_naming_device(digits_run, runner, tmp_path, gpus, monkeypatch,
                                                                     loads, command):
    gpus(2)
    for k, v in torchrun(2, 1).items():
        monkeypatch.setenv(k, v)
    log = tmp_path / "c.tsv"
    log.write_text("idx\tlabel\tpredict\tradius\tcorrect\ttime\n")
    args = [a.format(out=tmp_path / "o.tsv", log=log) for a in command]
    r = runner.invoke(main, [args[0], *([] if args[0] == "train" else [str(digits_run)]), *args[1:],
                             "--device", "cuda:0"])
    err = [line for line in r.output.splitlines() if line.startswith("Error")]
    assert r.exit_code == 2 and len(err) == 1 and "--device" in err[0] and "cuda:0 is one GPU" in err[0], r.output
    assert loads == [] and not (tmp_path / "o.tsv").exists()
