"""Full lifecycles running the real ``distkeras simulate`` / ``distkeras train`` (no test double).

Both commands are part of the CLI: a missing or broken command module fails these tests (the
CLI refuses to start, naming the module), it is never a reason to skip them."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from distkeras.punchcard import Client, PunchcardError

from .conftest import Server, cli


def test_simulate_lifecycle(tmp_path: Path) -> None:
    srv = Server(tmp_path).start()
    try:
        client = Client(srv.url, srv.token("sim"))
        job = client.submit({"command": "simulate", "strategy": "adag", "workers": 2, "epochs": 1, "seed": 0})
        assert job["state"] in ("running", "succeeded", "failed")
        final = client.wait(job["id"], timeout=120, progress=False, poll_s=0.2)
        assert final["state"] == "succeeded", (final, client.logs(job["id"]))
        # the result is what `distkeras simulate` prints for the same options (same seed: same bytes)
        local = cli("simulate", "--strategy", "adag", "--workers", "2", "--epochs", "1", "--seed", "0", "--json")
        assert local.returncode == 0, local.stderr
        assert final["result"] == json.loads(local.stdout)
        assert final["result"]["strategy"] == "adag" and final["result"]["workers"] == 2 and final["result"]["commits"] > 0
        with pytest.raises(PunchcardError, match="HTTP 404"):
            client.download(job["id"], tmp_path / "none.keras")
    finally:
        srv.stop()


@pytest.mark.slow
def test_train_lifecycle_on_bundled_data(tmp_path: Path) -> None:
    srv = Server(tmp_path).start()
    try:
        client = Client(srv.url, srv.token("train"))
        job = client.submit({"strategy": "adag", "workers": 2, "epochs": 1})
        assert client.status(job["id"])["state"] in ("running", "succeeded")
        final = client.wait(job["id"], timeout=600, progress=False, poll_s=0.5)
        assert final["state"] == "succeeded", (final, client.logs(job["id"], tail=40))
        result = final["result"]
        assert (result["strategy"], result["workers"], result["epochs"]) == ("adag", 2, 1) and result["commits"] > 0
        assert "model.keras" in final["files"] and "history.json" in final["files"]
        assert client.logs(job["id"], tail=5)
        model = client.download(job["id"], tmp_path / "trained.keras")
        with zipfile.ZipFile(model) as zf:
            assert "class_name" in json.loads(zf.read("config.json"))
    finally:
        srv.stop()
