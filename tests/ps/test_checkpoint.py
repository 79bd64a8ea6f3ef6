"""Parameter-server checkpoints: format, atomic writes, resume."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from distkeras.core.server import ParameterServerState
from distkeras.core.strategies import get_strategy
from distkeras.ps.checkpoint import CheckpointError, load_checkpoint, shard_path, write_checkpoint
from distkeras.ps import ParameterServerService, PSClient, PSRemoteError
from tests.ps.helpers import SECRET
from tests.support import wait_for

F32 = np.float32


def _state(strategy="diloco", size=50, workers=2):
    server = ParameterServerState(get_strategy(strategy), np.arange(size, dtype=F32), workers)
    return server


@pytest.mark.parametrize("url", ["memory://ps-ckpt/run1", "LOCAL"])
def test_write_and_load_round_trip(url, tmp_path):
    if url == "LOCAL":
        url = str(tmp_path / "ckpt")
    server = _state()
    for w in range(2):
        server.register(w, attempt=w)
        server.pull(w, w)
        server.commit(w, w, 0, np.full(50, 0.5 + w, F32), 3)
    snap = server.snapshot()
    path = write_checkpoint(url, snap, {"offset": 0, "size": 50, "total_size": 50, "shards": 1})
    assert path == shard_path(url, 0) and path.endswith("/shard-00.npz")
    loaded, meta = load_checkpoint(url)
    assert meta["clock"] == snap["clock"] == 1 and meta["strategy"] == "diloco" and meta["shards"] == 1
    assert loaded["attempts"] == {"0": 0, "1": 1} and loaded["last_seq"] == {"0": 0, "1": 0}
    for k in ("center", "momentum"):
        assert loaded["state"][k].tobytes() == snap["state"][k].tobytes()
    back = ParameterServerState.from_snapshot(get_strategy("diloco"), loaded, 2)
    assert back.clock == 1 and back.state.momentum.tobytes() == server.state.momentum.tobytes()


def test_checkpoint_file_is_a_plain_npz_without_pickle(tmp_path):
    write_checkpoint(str(tmp_path), _state("adag").snapshot())
    path = tmp_path / "shard-00.npz"
    with np.load(path, allow_pickle=False) as z:
        assert sorted(z.files) == ["meta", "state.center"]
        assert all(z[k].dtype != object for k in z.files)
    assert zipfile.is_zipfile(path)
    # no temporary files are left behind
    assert [p.name for p in tmp_path.iterdir()] == ["shard-00.npz"]


def test_overwrite_is_atomic_and_old_file_survives_a_failed_write(tmp_path, monkeypatch):
    url = str(tmp_path)
    server = _state("adag")
    write_checkpoint(url, server.snapshot())
    before = (tmp_path / "shard-00.npz").read_bytes()

    def broken(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken)
    server.register(0)
    server.commit(0, 0, 0, np.ones(50, F32))
    with pytest.raises(CheckpointError, match="disk full"):
        write_checkpoint(url, server.snapshot())
    assert (tmp_path / "shard-00.npz").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["shard-00.npz"]


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at .*shard-00.npz"):
        load_checkpoint(str(tmp_path))
    (tmp_path / "shard-00.npz").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(str(tmp_path))
    np.savez(tmp_path / "shard-01.npz", meta=np.frombuffer(b'{"format": "other"}', np.uint8))
    with pytest.raises(CheckpointError, match="not a distkeras parameter-server checkpoint"):
        load_checkpoint(str(tmp_path), 1)
    with pytest.raises(CheckpointError, match="cannot open checkpoint location"):
        load_checkpoint("nosuchprotocol://x")


def test_service_checkpoints_every_n_commits_and_at_stop_then_resumes(tmp_path):
    url = str(tmp_path / "run")
    svc = ParameterServerService("downpour", np.zeros(100, F32), 2, SECRET, checkpoint=url, checkpoint_every=5)
    svc.start()
    c = PSClient(*svc.address, SECRET, 0)
    for _ in range(12):
        c.commit(np.ones(100, F32), pull=False)
    # written in the background once 5 commits have piled up since the last one
    wait_for(lambda: (_clock_or_none(url) or 0) >= 5)
    c.close()
    svc.stop()
    snap, meta = load_checkpoint(url)
    assert meta["clock"] == 12 and meta["last_seq"]["0"] == 11 and meta["commits_applied"] == 12
    np.testing.assert_array_equal(snap["state"]["center"], np.full(100, 12, F32))

    with ParameterServerService("downpour", None, 2, SECRET, resume=url) as again:
        assert again.stats()["clock"] == 12
        c = PSClient(*again.address, SECRET, 0)
        assert c.seq == 12  # a new client continues after the server's last seq for it
        center, clock = c.pull()
        np.testing.assert_array_equal(center, np.full(100, 12, F32))
        # a replay of an old commit is still recognized after the resume
        from tests.ps.helpers import authenticate, request

        sock, reader, _ = authenticate(again.address, worker=0)
        reply = request(sock, reader, "commit", seq=11, samples=1, pull=False, update={"codec": "none", "values": np.ones(100, F32)})
        assert reply["status"] == "duplicate"
        sock.close()


def test_service_checkpoints_on_a_timer(tmp_path):
    url = f"memory://ps-timer-{tmp_path.name}"
    with ParameterServerService("adag", np.zeros(10, F32), 1, SECRET, checkpoint=url, checkpoint_interval=0.05) as svc:
        c = PSClient(*svc.address, SECRET, 0)
        c.commit(np.ones(10, F32))
        wait_for(lambda: _clock_or_none(url) == 1)
        c.commit(np.ones(10, F32))
        wait_for(lambda: _clock_or_none(url) == 2)


def _clock_or_none(url):
    try:
        return load_checkpoint(url)[1]["clock"]
    except CheckpointError:
        return None


def test_resume_refuses_another_strategy_or_size(tmp_path):
    url = str(tmp_path)
    with ParameterServerService("adag", np.zeros(10, F32), 1, SECRET, checkpoint=url):
        pass
    with pytest.raises(ValueError, match="strategy 'adag', not 'downpour'"):
        ParameterServerService("downpour", None, 1, SECRET, resume=url)
    with pytest.raises(ValueError, match="shape"):
        ParameterServerService("adag", np.zeros(11, F32), 1, SECRET, resume=url)


def test_sync_commit_pending_at_checkpoint_is_applied_when_resent_after_resume(tmp_path):
    url = str(tmp_path)
    svc = ParameterServerService("localsgd", np.zeros(4, F32), 2, SECRET, checkpoint=url)
    svc.start()
    a = PSClient(*svc.address, SECRET, 0)
    _, info = a.commit(np.full(4, 2, F32), pull=False)
    assert info["status"] == "pending"
    svc.stop()  # checkpoint with worker 0's commit still waiting for the round
    a.close()
    with ParameterServerService("localsgd", None, 2, SECRET, resume=url) as again:
        from tests.ps.helpers import authenticate, request

        sock, reader, _ = authenticate(again.address, worker=0)
        reply = request(sock, reader, "commit", seq=0, samples=1, pull=False, update={"codec": "none", "values": np.full(4, 2, F32)})
        assert reply["status"] == "pending"  # the resend is buffered again, not dropped as a duplicate
        b = PSClient(*again.address, SECRET, 1)
        center, info = b.commit(np.full(4, 4, F32))
        assert info["status"] == "applied"
        np.testing.assert_array_equal(center, np.full(4, 3, F32))
        sock.close()


def test_resume_as_a_new_run_drops_the_old_runs_attempts(tmp_path):
    """A restarted server (``resume_workers=True``, the default) keeps the worker attempts, so a
    task of the run that wrote the checkpoint stays fenced; a new run that goes on from the
    checkpoint (``resume_workers=False``, what ``resume=`` on a trainer does) starts with no
    attempts: its tasks, numbered from 0 again in a new application, are not refused."""
    url = str(tmp_path / "ck")
    center = np.arange(4, dtype=np.float32)
    with ParameterServerService("downpour", center, 1, SECRET, checkpoint=url) as svc:
        with PSClient(*svc.address, SECRET, 0, attempt=7) as c:
            c.commit(np.ones(4, np.float32))
    with ParameterServerService("downpour", center, 1, SECRET, resume=url) as restarted:
        with pytest.raises(PSRemoteError, match="fenced off by attempt 7"):
            PSClient(*restarted.address, SECRET, 0, attempt=0, retry_timeout=2)
    with ParameterServerService("downpour", center, 1, SECRET, resume=url, resume_workers=False) as new_run:
        assert new_run.state.clock == 1
        with PSClient(*new_run.address, SECRET, 0, attempt=0) as c:
            pulled, clock = c.pull()
    np.testing.assert_array_equal(pulled, center + 1)
    assert clock == 1
