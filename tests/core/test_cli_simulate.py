import json
import subprocess
import sys

import pytest

from distkeras.core.strategies import STRATEGIES
from distkeras.frontends.cli import main
from tests.support import ROOT, child_env


def cli(*args):
    return subprocess.run([sys.executable, "-m", "distkeras", *args], capture_output=True, env=child_env(), cwd=ROOT, timeout=120)


def test_same_seed_gives_identical_json_bytes():
    args = ["simulate", "--strategy", "dynsgd", "--workers", "3", "--epochs", "2", "--delay", "lognormal:0.5",
            "--codec", "int8", "--seed", "7", "--json"]
    a, b = cli(*args), cli(*args)
    assert a.returncode == 0, a.stderr.decode()
    assert a.stdout == b.stdout
    s = json.loads(a.stdout)
    assert (s["strategy"], s["workers"], s["seed"], s["codec"], s["delay"]) == ("dynsgd", 3, 7, "int8", "lognormal:0.5")


def test_unknown_strategy_exits_2_listing_known_ones_without_traceback():
    r = cli("simulate", "--strategy", "hogwild")
    err = r.stderr.decode()
    assert r.returncode == 2
    assert "unknown strategy 'hogwild'" in err and "Traceback" not in err
    for name in STRATEGIES:
        assert name in err
    assert r.stdout == b""


@pytest.mark.parametrize("args, match", [
    (["--window", "0"], "window must be an integer >= 1, got 0"),
    (["--strategy", "aeasgd", "--param", "rho=-2"], "rho must be a finite number > 0, got -2"),
    (["--strategy", "eamsgd", "--param", "momentum=1"], "momentum must be in [0, 1), got 1"),
    (["--param", "rho"], "--param expects K=V"),
    (["--param", "rho=2"], "has no parameter 'rho'"),
    (["--codec", "zip"], "unknown codec"),
    (["--delay", "uniform:2"], "uniform delay jitter"),
    (["--workers", "0"], "workers must be"),
])
def test_bad_arguments_exit_2_with_a_clear_message(args, match, capsys):
    assert main(["simulate", *args]) == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "--window", "soon"])
    assert exc.value.code == 2
    assert "window must be an integer" in capsys.readouterr().err


def test_json_output_keys(capsys):
    assert main(["simulate", "--strategy", "aeasgd", "--workers", "2", "--epochs", "1", "--window", "4",
                 "--param", "rho=2", "--json", "--quiet"]) == 0
    s = json.loads(capsys.readouterr().out)
    for key in ("strategy", "workers", "window", "codec", "seed", "test_accuracy", "final_loss", "commits",
                "bytes_sent", "params", "staleness", "rejected"):
        assert key in s
    assert s["window"] == 4 and s["params"] == {"window": 4, "rho": 2.0, "learning_rate": 0.1}
    assert set(s["staleness"]) == {"mean", "max"}


def test_table_output_and_window_pass(capsys):
    assert main(["simulate", "--strategy", "localsgd", "--workers", "2", "--epochs", "1", "--window", "pass", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and "bytes sent" in out and "localsgd (window=None)" in out


def test_progress_on_request(capsys):
    assert main(["simulate", "--workers", "2", "--epochs", "1", "--progress", "--json"]) == 0
    err = capsys.readouterr().err
    assert "samples (100%)" in err


def warnings_of(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("warning:")]


def test_stability_warning_on_stderr(capsys):
    """Synchronous EASGD (α = 0.05) warns once β = p·α passes 1, with a rho that brings β to the
    paper's 0.9, and that rho silences it; asynchronous AEASGD (α = 0.5) never warns."""
    from distkeras.core.simulate import stability_note
    from distkeras.core.strategies import get_strategy

    easgd = get_strategy("easgd")
    assert stability_note(easgd, 20) is None and stability_note(easgd, 21) is not None  # β = 1.0 vs 1.05
    assert main(["simulate", "--strategy", "easgd", "--workers", "40", "--epochs", "1", "--quiet", "--json"]) == 0
    (warning,) = warnings_of(capsys.readouterr().err)
    assert "beta=p*alpha=2 > 1" in warning and "--param rho=2.25" in warning  # 0.9 / 40 / 0.01
    assert main(["simulate", "--strategy", "easgd", "--workers", "40", "--epochs", "1", "--param", "rho=2.25", "--quiet", "--json"]) == 0
    assert warnings_of(capsys.readouterr().err) == []
    assert main(["simulate", "--strategy", "aeasgd", "--workers", "8", "--epochs", "1", "--quiet", "--json"]) == 0
    assert warnings_of(capsys.readouterr().err) == []  # asynchronous: each commit moves the center α <= 1 of one distance
    assert all(stability_note(get_strategy(name), 1000) is None for name in ("aeasgd", "eamsgd"))


def test_all_prints_the_comparison(capsys):
    assert main(["simulate", "--all", "--workers", "2", "--epochs", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    for name in STRATEGIES:
        assert name in out
    assert "adag topk:0.01" in out and "vs single" in out


def test_a_run_whose_commit_is_rejected_exits_1_naming_worker_and_reason(capsys):
    """A learning rate that overflows float32 makes the first commit Inf: the server rejects it,
    the run stops (as a Spark run fails) and the command says so and exits 1."""
    assert main(["simulate", "--strategy", "downpour", "--workers", "2", "--epochs", "1", "--lr", "1e38", "--quiet", "--json"]) == 1
    out, err = capsys.readouterr()
    s = json.loads(out)
    assert s["failed"]["reason"] == "non_finite" and s["rejected"] == 1 and s["samples"] == 0
    assert "the run failed at simulated time 5: worker 0: commit 0 of worker 0 rejected: the update contains NaN or Inf values" in err
