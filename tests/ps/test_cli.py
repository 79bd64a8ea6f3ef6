"""``distkeras ps serve`` as a real process: address line, SIGTERM, SIGKILL and --resume."""

from __future__ import annotations

import signal

import numpy as np
import pytest

from distkeras.frontends import cli
from distkeras.frontends.commands import ps as ps_command
from distkeras.ps.checkpoint import load_checkpoint
from distkeras.ps import PSRemoteError, connect
from tests.ps.helpers import SECRET, start_cli
from tests.support import wait_for

F32 = np.float32


@pytest.fixture
def secret_file(tmp_path):
    path = tmp_path / "secret"
    path.write_bytes(SECRET + b"\n")
    return str(path)


def test_distkeras_ps_serve_reaches_the_ps_command():
    """``distkeras ps serve ...`` through the CLI's own parser (the one ``python -m distkeras`` uses)."""
    args = cli.build_parser().parse_args(["ps", "serve", "--strategy", "adag", "--size", "5", "--secret-file", "f", "--param", "window=3", "--param", "x=none"])
    assert args.func is ps_command._serve and args.param == [("window", 3), ("x", None)]


def test_serve_prints_its_address_serves_and_stops_on_sigterm(secret_file, tmp_path):
    url = str(tmp_path / "ckpt")
    proc, addresses = start_cli("serve", "--strategy", "adag", "--param", "window=4", "--size", "100", "--workers", "2", "--secret-file", secret_file, "--checkpoint", url)
    try:
        host, port = addresses.split(":")
        assert host == "127.0.0.1" and int(port) > 0
        c = connect(addresses, SECRET, 1)
        assert c.info["strategy"] == "adag"
        for _ in range(3):
            center, info = c.commit(np.ones(100, F32))
        np.testing.assert_array_equal(center, np.full(100, 3, F32))
        c.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        proc.kill()
    snap, meta = load_checkpoint(url)  # the final checkpoint
    assert meta["clock"] == 3 and meta["params"]["window"] == 4
    np.testing.assert_array_equal(snap["state"]["center"], np.full(100, 3, F32))


def test_serve_with_a_round_timeout_and_a_final_checkpoint_that_fails(secret_file, tmp_path):
    """--round-timeout reaches the server (a lone commit of a 2-worker round times out naming the
    other worker); a final checkpoint that cannot be written exits 1 with the error, no traceback."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    url = str(blocker / "ckpt")
    proc, addresses = start_cli(
        "serve", "--strategy", "localsgd", "--size", "10", "--workers", "2", "--secret-file", secret_file, "--checkpoint", url, "--round-timeout", "0.5"
    )
    try:
        c = connect(addresses, SECRET, 0)
        with pytest.raises(PSRemoteError, match=r"still waiting for worker 1 \(attempt 0\)"):
            c.commit(np.ones(10, F32))
        c.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 1
        err = proc.stderr.read()
        assert f"distkeras ps serve: the final checkpoint of parameter-server shard 0 ({addresses}) failed: cannot write checkpoint to '{url}/shard-00.npz'" in err
        assert "Traceback" not in err
    finally:
        proc.kill()


def test_sharded_serve_prints_every_address_and_stops_on_sigterm(secret_file):
    proc, addresses = start_cli("serve", "--strategy", "downpour", "--size", "10", "--shards", "2", "--secret-file", secret_file)
    try:
        assert len(addresses.split(",")) == 2
        c = connect(addresses, SECRET, 0)
        center, _ = c.commit(np.arange(10, dtype=F32))
        np.testing.assert_array_equal(center, np.arange(10, dtype=F32))
        c.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        proc.kill()


def test_killed_server_resumes_from_its_last_checkpoint(secret_file, tmp_path):
    url = str(tmp_path / "ckpt")
    common = ["--strategy", "downpour", "--size", "50", "--secret-file", secret_file, "--checkpoint", url, "--checkpoint-every", "5"]
    proc, addresses = start_cli("serve", *common)
    try:
        c = connect(addresses, SECRET, 0)
        for i in range(12):
            c.commit(np.full(50, i + 1, F32), pull=False)
        c.close()
        wait_for(lambda: _clock(url) >= 10)  # at least two checkpoints have been written
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        proc.kill()
    snap, meta = load_checkpoint(url)
    clock = meta["clock"]
    assert 10 <= clock <= 12
    expected = np.full(50, sum(range(1, clock + 1)), F32)
    np.testing.assert_array_equal(snap["state"]["center"], expected)

    proc, addresses = start_cli("serve", "--resume", url, *common)
    try:
        c = connect(addresses, SECRET, 0)
        center, server_clock = c.pull()
        assert server_clock == clock
        assert center.tobytes() == snap["state"]["center"].tobytes()
        c.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        proc.kill()


def _clock(url):
    try:
        return load_checkpoint(url)[1]["clock"]
    except Exception:
        return -1


def test_bad_arguments_are_clear_errors(secret_file, tmp_path, capsys):
    def run(*args):
        try:
            return ps_command.main(list(args)), capsys.readouterr().err
        except SystemExit as exc:  # argparse and the secret reader exit with a message
            return exc.code, str(exc.code) + capsys.readouterr().err

    code, err = run("serve", "--strategy", "adag", "--secret-file", secret_file)
    assert code == 2 and "--size" in err
    code, err = run("serve", "--strategy", "nope", "--size", "3", "--secret-file", secret_file)
    assert code == 2 and "unknown strategy 'nope'" in err
    code, err = run("serve", "--strategy", "adag", "--size", "3", "--secret-file", str(tmp_path / "missing"))
    assert code != 0 and "cannot read the secret file" in err
    code, err = run("serve", "--strategy", "adag", "--resume", str(tmp_path / "none"), "--secret-file", secret_file)
    assert code == 2 and "no checkpoint at" in err
    (tmp_path / "short").write_bytes(b"abc")
    code, err = run("serve", "--strategy", "adag", "--size", "3", "--secret-file", str(tmp_path / "short"))
    assert code != 0 and "too short" in err
