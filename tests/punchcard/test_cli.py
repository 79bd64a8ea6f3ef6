"""``distkeras punchcard token``, ``distkeras submit`` and ``distkeras jobs`` as subprocesses."""

from __future__ import annotations

import json
from pathlib import Path

from .conftest import SAFE_CONFIG, Server, cli, env_with_root, keras_zip


def test_token_submit_jobs_revoke(server: Server, tmp_path: Path) -> None:
    added = cli("punchcard", "token", "add", "cli-user", "--db", str(server.db))
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip()
    assert token.startswith("dkp_") and "shown only now" in added.stderr
    listed = cli("punchcard", "token", "list", "--db", str(server.db))
    assert "cli-user" in listed.stdout and token.split("_", 2)[2] not in listed.stdout

    env = {**env_with_root(), "DISTKERAS_PUNCHCARD_TOKEN": token, "DISTKERAS_PUNCHCARD_URL": server.url}
    sim = cli("submit", "--command", "simulate", "--strategy", "adag", "--workers", "2", "--epochs", "1",
              "--wait", "--quiet", env=env)
    assert sim.returncode == 0, sim.stderr
    assert json.loads(sim.stdout)["state"] == "succeeded"

    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"strategy": "easgd", "workers": 2, "epochs": 3}))
    model = tmp_path / "m.keras"
    model.write_bytes(keras_zip(SAFE_CONFIG))
    train = cli("submit", "--spec", str(spec), "--epochs", "4", "--param", "rho=3.5", "--model", str(model),
                "--wait", env=env)
    assert train.returncode == 0, train.stderr
    job = json.loads(train.stdout)
    assert job["spec"]["epochs"] == 4 and job["spec"]["params"] == {"rho": 3.5} and job["has_model"]
    # the flags overrode the spec file on the job's own command line (the test job echoes it)
    assert {"--strategy=easgd", "--workers=2", "--epochs=4", "--param=rho=3.5"} <= set(job["result"]["argv"])

    listed = cli("jobs", "list", env=env)
    assert job["id"] in listed.stdout and "succeeded" in listed.stdout
    logs = cli("jobs", "logs", job["id"], "--tail", "1", env=env)
    assert logs.stdout.strip() == "epoch 4/4 loss=0.2500"
    out = tmp_path / "trained.keras"
    assert cli("jobs", "download", job["id"], str(out), env=env).returncode == 0
    assert out.read_bytes() == (server.job_dir(job["id"]) / "out" / "model.keras").read_bytes()

    bad = cli("submit", "--workers", "0", env=env)
    assert bad.returncode == 1 and "HTTP 422" in bad.stderr and "workers" in bad.stderr

    assert cli("punchcard", "token", "revoke", "cli-user", "--db", str(server.db)).returncode == 0
    denied = cli("jobs", "status", job["id"], env=env)
    assert denied.returncode == 1 and "HTTP 401" in denied.stderr and "revoked" in denied.stderr
