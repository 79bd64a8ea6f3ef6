"""In-process checks of the punchcard building blocks (no server)."""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from distkeras.punchcard import auth
from distkeras.punchcard.modelcheck import UnsafeModel, inspect_keras_file, safe_member_name
from distkeras.punchcard.runner import last_json_object, tail_lines
from distkeras.punchcard.spec import JobSpec, Policy, build_argv
from distkeras.punchcard.store import Store, TokenError

from .conftest import SAFE_CONFIG, keras_zip


def test_store_closes_at_the_end_of_a_with_block(tmp_path: Path) -> None:
    import sqlite3

    with Store(tmp_path / "db.sqlite") as store:
        store.add_token("alice")
    with pytest.raises(sqlite3.ProgrammingError):
        store.list_tokens()


def test_tokens_are_hashed_salted_and_found_by_id(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite")
    token = store.add_token("alice")
    other = store.add_token("bob")
    token_id, _ = auth.parse(token)
    row = store.token_row(token_id)
    assert token.encode() not in row["hash"] and len(row["salt"]) == 16
    assert row["salt"] != store.token_row(auth.parse(other)[0])["salt"]
    raw = (tmp_path / "db.sqlite").read_bytes() + (tmp_path / "db.sqlite-wal").read_bytes()
    assert token.split("_", 2)[2].encode() not in raw  # the secret is never written
    v = auth.Verifier()
    assert v.check(token, row["id"], row["salt"], row["hash"], row["kdf"])
    assert v.check(token, row["id"], row["salt"], row["hash"], row["kdf"])  # cached path
    assert not v.check(other, row["id"], row["salt"], row["hash"], row["kdf"])
    assert not v.check(token[:-1] + ("A" if token[-1] != "A" else "B"), row["id"], row["salt"], row["hash"], row["kdf"])
    assert auth.parse("dkp_../../x_" + "a" * 40) is None and auth.parse("Bearer x") is None
    with pytest.raises(TokenError, match="already exists"):
        store.add_token("alice")
    with pytest.raises(TokenError, match="invalid token name"):
        store.add_token("a b/c")
    store.revoke_token("alice")
    assert store.token_row(token_id)["revoked_at"] is not None
    assert [t["name"] for t in store.list_tokens()] == ["alice", "bob"]
    store.close()


def _zip_file(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "m.keras"
    path.write_bytes(data)
    return path


def test_modelcheck_accepts_plain_model(tmp_path: Path) -> None:
    info = inspect_keras_file(_zip_file(tmp_path, keras_zip(SAFE_CONFIG)))
    assert info["class_name"] == "Sequential" and "config.json" in info["members"]


@pytest.mark.parametrize(
    "config, match",
    [
        ({"class_name": "Sequential", "config": {"layers": [{"class_name": "Lambda", "config": {"name": "evil",
          "function": {"class_name": "__lambda__", "config": {"value": "4wEAAAAA"}}}}]}}, "Lambda layer.*evil"),
        ({"class_name": "Functional", "config": {"layers": [{"class_name": "Dense", "config": {"name": "d",
          "activation": {"class_name": "__lambda__", "config": {"value": "4wEAAAAA"}}}}]}}, "__lambda__"),
        ({"class_name": "Sequential", "config": {"layers": [{"class_name": "keras.layers.Lambda",
          "config": {"name": "x"}}]}}, "Lambda"),
        ({"class_name": "Sequential", "config": {"layers": [{"class_name": "MyLayer", "config": {"name": "x",
          "function": ["4wEAAAAA", None, None], "function_type": "lambda"}}]}}, "serialized Python code"),
        ([1, 2], "does not describe a Keras model"),
    ],
)
def test_modelcheck_refuses_code(tmp_path: Path, config: object, match: str) -> None:
    with pytest.raises(UnsafeModel, match=match):
        inspect_keras_file(_zip_file(tmp_path, keras_zip(config)))  # type: ignore[arg-type]


def test_modelcheck_refuses_bad_archives(tmp_path: Path) -> None:
    with pytest.raises(UnsafeModel, match="not a .keras file"):
        inspect_keras_file(_zip_file(tmp_path, b"\x80\x04pickle-ish bytes"))
    with pytest.raises(UnsafeModel, match="unsafe member"):
        inspect_keras_file(_zip_file(tmp_path, keras_zip(SAFE_CONFIG, {"../../etc/cron.d/x": b"x"})))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("model.weights.h5", b"x")
    with pytest.raises(UnsafeModel, match="no config.json"):
        inspect_keras_file(_zip_file(tmp_path, buf.getvalue()))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("config.json", "{not json")
    with pytest.raises(UnsafeModel, match="not valid JSON"):
        inspect_keras_file(_zip_file(tmp_path, buf.getvalue()))
    for name in ("/abs", "a/../../b", "..", "C:/x", "a\\b", "ok/\x00"):
        assert not safe_member_name(name), name
    assert safe_member_name("assets/vocab.txt")


def test_spec_validation_and_argv(tmp_path: Path) -> None:
    spec = JobSpec.model_validate({
        "strategy": "EASGD", "params": {"rho": 2.5, "learning_rate": 0.05}, "workers": 3, "epochs": 2,
        "batch_size": 64, "window": 8, "backend": "jax", "codec": "topk:0.01", "master": "local[2]",
        "data": "hdfs://nn/data.parquet", "features_col": "features", "label_col": "label",
        "conf": {"spark.executor.memory": "2g"},
    })
    argv = build_argv(spec, "/py", tmp_path, tmp_path / "input" / "model.keras")
    assert argv[:5] == ["/py", "-m", "distkeras", "train", f"--out={tmp_path / 'out'}"]
    for item in ("--json", "--strategy=easgd", "--workers=3", "--batch-size=64", "--window=8", "--backend=jax",
                 "--codec=topk:0.01", "--master=local[2]", "--data=hdfs://nn/data.parquet", "--param=rho=2.5",
                 "--param=learning_rate=0.05", "--conf=spark.executor.memory=2g",
                 f"--model={tmp_path / 'input' / 'model.keras'}"):
        assert item in argv, item
    sim = JobSpec.model_validate({"command": "simulate", "strategy": "adag", "workers": 4, "seed": 1})
    assert build_argv(sim, "/py", tmp_path, None)[3:] == [
        "simulate", "--json", "--strategy=adag", "--workers=4", "--seed=1"]

    def error(data: dict, policy: Policy | None = None) -> str:
        from pydantic import ValidationError

        with pytest.raises(ValidationError) as info:
            JobSpec.model_validate(data, context={"policy": policy or Policy()})
        return str(info.value)

    assert "epochz" in error({"epochz": 3})
    assert "unknown strategy" in error({"strategy": "nope"})
    assert "has no parameter 'momentum'" in error({"strategy": "easgd", "params": {"momentum": 0.9}})
    assert "not allowed" in error({"data": "/etc/passwd"})
    assert "not allowed" in error({"data": "file:///etc/passwd"})
    assert "not allowed" in error({"master": "spark://attacker:7077"})
    assert "can load code" in error({"conf": {"spark.driver.extraJavaOptions": "-javaagent:x"}})
    assert "can load code" in error({"conf": {"spark.jars": "http://x/evil.jar"}})
    assert "not supported by simulate" in error({"command": "simulate", "strategy": "adag", "workers": 2,
                                                 "data": "hdfs://x"})
    assert "control characters" in error({"data": "hdfs://x\n--model=/etc/passwd"})
    JobSpec.model_validate({"data": "/data/x.parquet"}, context={"policy": Policy(data_prefixes=("/data/",))})


def test_log_tail_and_result(tmp_path: Path) -> None:
    log = tmp_path / "stderr.log"
    log.write_bytes(b"a\n 10%\r 50%\r100%\nlast\n")
    assert tail_lines(log, 2) == ["100%", "last"]
    out = tmp_path / "stdout.log"
    out.write_text('noise\n{"loss": 0.5}\n')
    assert last_json_object(out) == {"loss": 0.5}


def test_cli_modules_are_cheap_to_import() -> None:
    code = (
        "import sys; import distkeras.frontends.cli as c; c.build_parser(); import distkeras.punchcard; "
        "heavy = [m for m in ('fastapi', 'uvicorn', 'httpx', 'pydantic', 'keras', 'pyspark') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "", out.stdout
