"""The punchcard HTTP API over real HTTP: a server subprocess on 127.0.0.1 whose jobs run the
test double (``fake_job.py``) through the server's real job code path."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import httpx
import pytest

from distkeras.punchcard import Client, PunchcardError
from distkeras.punchcard.runner import process_alive

from .conftest import SAFE_CONFIG, Server, free_port, keras_zip, wait_for

LAMBDA_CONFIG = {
    "module": "keras",
    "class_name": "Sequential",
    "config": {
        "name": "sequential",
        "layers": [
            {"module": "keras.layers", "class_name": "InputLayer", "config": {"batch_shape": [None, 4], "name": "in"}},
            {"module": "keras.layers", "class_name": "Lambda", "registered_name": None, "config": {
                "name": "evil_lambda",
                "function": {"module": "builtins", "class_name": "__lambda__", "config": {
                    "value": "4wEAAAAAAAAAAAAAAAEAAAACAAAAQwAAAHMIAAAAdABqAXwAgwFTACkBTikC2gJvc9oGc3lzdGVtKQHaAXipAHIE",
                    "bytecode": True}}}},
        ],
    },
}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def submit_raw(server: Server, token: str, spec: dict | str, model: tuple[str, bytes] | None = None) -> httpx.Response:
    files: dict = {"spec": (None, spec if isinstance(spec, str) else json.dumps(spec), "application/json")}
    if model is not None:
        files["model"] = (model[0], model[1], "application/octet-stream")
    return httpx.post(f"{server.url}/v1/jobs", files=files, headers=bearer(token), timeout=30)


def pids(server: Server, job_id: str) -> tuple[int, int]:
    job_dir = server.job_dir(job_id)
    wait_for(lambda: (job_dir / "child.pid").exists() and (job_dir / "child.pid").read_text())
    return int((job_dir / "self.pid").read_text()), int((job_dir / "child.pid").read_text())


def test_health_openapi_and_docs(server: Server) -> None:
    assert httpx.get(f"{server.url}/v1/health").json() == {"status": "ok", "version": "0.1.0"}
    schema = httpx.get(f"{server.url}/openapi.json").json()
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/logs", "/v1/jobs/{job_id}/cancel",
            "/v1/jobs/{job_id}/model", "/v1/health"} <= set(schema["paths"])
    assert "multipart/form-data" in schema["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]
    docs = httpx.get(f"{server.url}/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_every_endpoint_needs_a_valid_token(server: Server, token: str) -> None:
    token_id = token.split("_")[1]
    wrong = [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        bearer("dkp_000000000000_" + "A" * 43),  # unknown id
        bearer(f"dkp_{token_id}_" + "A" * 43),  # right id, wrong secret
    ]
    schema = httpx.get(f"{server.url}/openapi.json").json()
    checked = 0
    for path, methods in schema["paths"].items():
        if path == "/v1/health":
            continue
        url = server.url + path.replace("{job_id}", "0" * 32).replace("{name}", "model.keras")
        for method in methods:
            for headers in wrong:
                response = httpx.request(method.upper(), url, headers=headers)
                assert response.status_code == 401, (method, path, headers, response.text)
                assert response.headers.get("www-authenticate") == "Bearer"
                checked += 1
    assert checked >= 6 * len(wrong)
    # With the right token the same requests get past authentication.
    assert httpx.get(f"{server.url}/v1/jobs", headers=bearer(token)).status_code == 200
    assert httpx.get(f"{server.url}/v1/jobs/{'0' * 32}", headers=bearer(token)).status_code == 404


def test_lifecycle_with_model_upload(server: Server, token: str, tmp_path: Path) -> None:
    """What the server reports and serves is what this job got and wrote: its command line is the
    spec's, its result is the job's last stdout line, its logs are the job's log files, its
    downloads are the job's files byte for byte (the job writes a random nonce into each)."""
    model = tmp_path / "my model.keras"
    model.write_bytes(keras_zip(SAFE_CONFIG))
    client = Client(server.url, token)
    job = client.submit({"strategy": "easgd", "params": {"rho": 2.5}, "workers": 2, "epochs": 20, "window": 4,
                         "conf": {"spark.executor.memory": "1g"}}, model_path=model)
    assert job["state"] == "running" and job["has_model"] and job["command"] == "train"
    job_dir = server.job_dir(job["id"])
    leader, child = pids(server, job["id"])
    final = client.wait(job["id"], timeout=30, progress=False, poll_s=0.1)
    assert final["state"] == "succeeded", final
    assert final["exit_code"] == 0 and final["reason"] is None
    # the spec became this command line (the job echoes the options it got)
    expected_argv = [f"--out={job_dir / 'out'}", "--json", "--strategy=easgd", "--workers=2", "--epochs=20", "--window=4",
                     f"--model={job_dir / 'input' / 'model.keras'}", "--param=rho=2.5", "--conf=spark.executor.memory=1g"]
    argv = json.loads((job_dir / "argv.json").read_text())
    assert argv[1:4] == ["-m", "distkeras", "train"] and argv[4:] == expected_argv
    assert final["result"]["argv"] == expected_argv
    # the uploaded model was stored where the command line says, byte for byte
    assert (job_dir / "input" / "model.keras").read_bytes() == model.read_bytes()
    # the result is the job's last stdout line; the logs are its log files
    stdout = (job_dir / "stdout.log").read_text().splitlines()
    stderr = (job_dir / "stderr.log").read_text().splitlines()
    assert final["result"] == json.loads(stdout[-1])
    nonce = final["result"]["nonce"]
    assert final["log_tail"] == stderr[-1] == "epoch 20/20 loss=0.0500"
    assert client.logs(job["id"], tail=3) == stderr[-3:]
    assert client.logs(job["id"], stream="stdout") == stdout
    # The whole process group is gone, including the child the job left behind.
    wait_for(lambda: not process_alive(leader) and not process_alive(child), timeout=5)
    # the files are the ones in the job's out/, served as they are
    assert final["files"] == ["model.keras", "history.json", "curves.png"]
    assert sorted(final["files"]) == sorted(p.name for p in (job_dir / "out").iterdir())
    target = client.download(job["id"], tmp_path / "trained.keras")
    assert target.read_bytes() == (job_dir / "out" / "model.keras").read_bytes()
    with zipfile.ZipFile(target) as zf:
        assert json.loads(zf.read("config.json"))["config"]["name"] == f"trained-{nonce}"
    client.download(job["id"], tmp_path, name="history.json")
    assert (tmp_path / "history.json").read_bytes() == (job_dir / "out" / "history.json").read_bytes()
    assert json.loads((tmp_path / "history.json").read_text())["nonce"] == nonce
    assert [j["id"] for j in client.list()] == [job["id"]]
    assert client.status(job["id"])["state"] == "succeeded"
    with pytest.raises(PunchcardError, match="HTTP 409: job .* already succeeded"):
        client.cancel(job["id"])
    client.close()


def test_failed_job_reports_exit_code_and_last_error(server: Server, token: str) -> None:
    with Client(server.url, token) as client:
        job = client.submit({"command": "simulate", "strategy": "adag", "workers": 13, "epochs": 1})
        final = client.wait(job["id"], timeout=30, progress=False, poll_s=0.1)
        assert final["state"] == "failed" and final["exit_code"] == 3
        assert "exited with code 3" in final["reason"] and "fake failure requested" in final["reason"]
        with pytest.raises(PunchcardError, match="HTTP 404: .*produced no model.keras"):
            client.download(job["id"], "unused.keras")


def test_other_tokens_jobs_are_invisible(server: Server, token: str, tmp_path: Path) -> None:
    other = server.token("intruder")
    job = Client(server.url, token).submit({"command": "simulate", "strategy": "adag", "workers": 2, "epochs": 1})
    jid = job["id"]
    h = bearer(other)
    for method, suffix in [("GET", ""), ("GET", "/logs"), ("POST", "/cancel"), ("GET", "/model"),
                           ("GET", "/files/history.json")]:
        response = httpx.request(method, f"{server.url}/v1/jobs/{jid}{suffix}", headers=h)
        assert response.status_code == 404, (method, suffix, response.text)
        assert response.json() == {"detail": f"no job {jid}"}
    assert httpx.get(f"{server.url}/v1/jobs", headers=h).json() == {"jobs": []}
    # ... and it is still there, untouched, for its owner.
    assert Client(server.url, token).wait(jid, timeout=30, progress=False, poll_s=0.1)["state"] == "succeeded"


@pytest.mark.parametrize(
    "spec, field, message",
    [
        ({"epochz": 3}, "epochz", "Extra inputs are not permitted"),
        ({"workers": 0}, "workers", "greater than or equal to 1"),
        ({"epochs": "many"}, "epochs", "valid integer"),
        ({"strategy": "nope"}, "strategy", "unknown strategy"),
        ({"backend": "torch"}, "backend", "'tensorflow' or 'jax'"),
        ({"data": "/etc/passwd"}, "data", "not allowed on this server"),
        ({"command": "simulate", "strategy": "adag"}, "spec", "simulate needs workers"),
        ("{not json", "spec", "not valid JSON"),
        ("[1, 2]", "spec", "must be a JSON object"),
    ],
)
def test_malformed_spec_is_422_naming_the_field(server: Server, token: str, spec, field: str, message: str) -> None:
    response = submit_raw(server, token, spec)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert any(e["loc"][-1] == field and message in e["msg"] for e in detail), detail
    if isinstance(spec, dict):
        with pytest.raises(PunchcardError) as info:
            Client(server.url, token).submit(spec)
        assert "HTTP 422" in str(info.value) and field in str(info.value) and message in str(info.value)


def test_request_shape_errors(server: Server, token: str) -> None:
    h = bearer(token)
    response = httpx.post(f"{server.url}/v1/jobs", json={"strategy": "adag"}, headers=h)
    assert response.status_code == 415 and "multipart/form-data" in response.json()["detail"]
    response = httpx.post(f"{server.url}/v1/jobs", files={"model": ("m.keras", b"x")}, headers=h)
    assert response.status_code == 422 and "missing form field 'spec'" in response.text
    response = httpx.post(f"{server.url}/v1/jobs", files={"spec": (None, "{}"), "evil": (None, "1")}, headers=h)
    assert response.status_code == 422 and "unexpected form field 'evil'" in response.text
    response = submit_raw(server, token, {"command": "simulate", "strategy": "adag", "workers": 2},
                          model=("m.keras", keras_zip(SAFE_CONFIG)))
    assert response.status_code == 422 and "only used by train jobs" in response.text


def test_oversized_upload_is_413(server: Server, token: str) -> None:
    before = set(os.listdir(server.workdir / "jobs"))
    big = keras_zip(SAFE_CONFIG, {"assets/blob.bin": os.urandom(1_300_000)})
    response = submit_raw(server, token, {"epochs": 1}, model=("big.keras", big))  # Content-Length path
    assert response.status_code == 413 and "limit of 1 MiB" in response.json()["detail"]

    boundary = "xBOUNDARYx"

    def body():  # no Content-Length: the limit is enforced while streaming
        yield (f'--{boundary}\r\nContent-Disposition: form-data; name="spec"\r\n\r\n{{"epochs": 1}}\r\n'
               f'--{boundary}\r\nContent-Disposition: form-data; name="model"; filename="big.keras"\r\n'
               f"Content-Type: application/octet-stream\r\n\r\n").encode()
        for _ in range(20):
            yield os.urandom(100_000)
        yield f"\r\n--{boundary}--\r\n".encode()

    response = httpx.post(f"{server.url}/v1/jobs", content=body(),
                          headers={**bearer(token), "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert response.status_code == 413, response.text
    assert set(os.listdir(server.workdir / "jobs")) == before  # nothing kept
    with pytest.raises(PunchcardError, match="HTTP 413"):
        Client(server.url, token).submit({"epochs": 1}, model_path=_write(server.tmp / "big.keras", big))


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_unsafe_models_are_refused(server: Server, token: str) -> None:
    before = set(os.listdir(server.workdir / "jobs"))
    response = submit_raw(server, token, {"epochs": 1}, model=("evil.keras", keras_zip(LAMBDA_CONFIG)))
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "Lambda layer" in detail and "evil_lambda" in detail and "refused" in detail
    response = submit_raw(server, token, {"epochs": 1},
                          model=("m.keras", keras_zip(SAFE_CONFIG, {"../../../tmp/owned": b"x"})))
    assert response.status_code == 422 and "unsafe member name" in response.json()["detail"]
    response = submit_raw(server, token, {"epochs": 1}, model=("m.keras", b"\x80\x04\x95pickle"))
    assert response.status_code == 422 and "not a .keras file" in response.json()["detail"]
    assert set(os.listdir(server.workdir / "jobs")) == before


def test_path_traversal_is_refused(server: Server, token: str) -> None:
    h = bearer(token)
    for name in ("../../evil.keras", "..\\evil.keras", "/etc/evil.keras", "ok.keras\x00.txt", "model.pkl"):
        response = submit_raw(server, token, {"epochs": 1}, model=(name, keras_zip(SAFE_CONFIG)))
        assert response.status_code == 422 and "refused model file name" in response.text, (name, response.text)
    assert not (server.workdir / "evil.keras").exists() and not (server.tmp / "evil.keras").exists()
    for job_id in ("..", "..%2F..%2Fpunchcard.sqlite", "%2e%2e", "0" * 31 + "/", "0" * 31 + "g", "." * 32):
        for suffix in ("", "/logs", "/model"):
            response = httpx.get(f"{server.url}/v1/jobs/{job_id}{suffix}", headers=h)
            assert response.status_code in (404, 405, 422), (job_id, suffix, response.status_code)
            assert "SQLite" not in response.text
    job = Client(server.url, token).submit({"command": "simulate", "strategy": "adag", "workers": 2, "epochs": 1})
    Client(server.url, token).wait(job["id"], timeout=30, progress=False, poll_s=0.1)
    for name in ("..%2Fspec.json", "spec.json", "..%2F..%2F..%2Fpunchcard.sqlite", "stderr.log"):
        response = httpx.get(f"{server.url}/v1/jobs/{job['id']}/files/{name}", headers=h)
        assert response.status_code in (404, 422), (name, response.status_code)
    with pytest.raises(PunchcardError, match="invalid job id"):
        Client(server.url, token).status("../../etc")


def test_per_token_limit_is_429(server: Server, token: str) -> None:
    client = Client(server.url, token)
    long_job = {"command": "simulate", "strategy": "adag", "workers": 2, "epochs": 100_000}
    first, second = client.submit(long_job), client.submit(long_job)
    with pytest.raises(PunchcardError, match="HTTP 429: .*2 active job.*limit is 2") as info:
        client.submit(long_job)
    assert info.value.status == 429
    # Another token is not affected by this one's limit.
    other = Client(server.url, server.token("limit-neighbour"))
    neighbour = other.submit({"command": "simulate", "strategy": "adag", "workers": 2, "epochs": 1})
    assert other.wait(neighbour["id"], timeout=30, progress=False, poll_s=0.1)["state"] == "succeeded"
    assert client.cancel(first["id"])["state"] == "cancelled"
    third = client.submit(long_job)  # a slot is free again
    for job in (second, third):
        assert client.cancel(job["id"])["state"] == "cancelled"


def test_cancel_kills_the_process_tree(server: Server, token: str) -> None:
    client = Client(server.url, token)
    job = client.submit({"strategy": "adag", "workers": 2, "epochs": 100_000})
    leader, child = pids(server, job["id"])
    assert process_alive(leader) and process_alive(child)
    wait_for(lambda: (client.status(job["id"])["log_tail"] or "").startswith("epoch "), timeout=10)
    cancelled = client.cancel(job["id"])
    assert cancelled["state"] == "cancelled" and cancelled["reason"] == "cancelled by its owner"
    wait_for(lambda: not process_alive(leader) and not process_alive(child), timeout=5)
    assert client.wait(job["id"], timeout=5, progress=False)["state"] == "cancelled"
    assert any(line.startswith("epoch ") for line in client.logs(job["id"]))


def test_client_errors_name_the_problem(server: Server, token: str) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(PunchcardError, match=f"cannot reach punchcard server at {url}"):
        Client(url, token).list()
    with pytest.raises(PunchcardError, match=r"HTTP 401: invalid token") as info:
        Client(server.url, "dkp_000000000000_" + "A" * 43).list()
    assert info.value.status == 401
    with pytest.raises(PunchcardError, match=f"HTTP 404: no job {'a' * 32}"):
        Client(server.url, token).status("a" * 32)
    with pytest.raises(PunchcardError, match="does not exist"):
        Client(server.url, token).submit({}, model_path="/nonexistent/model.keras")
