"""The parameter server needs neither Spark nor Arrow nor Keras: ``distkeras ps serve`` serves and
these test modules import in an interpreter where pyspark, pyarrow, keras, jax and tensorflow
cannot be imported (blocked on ``sys.meta_path``, as if not installed)."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
from pathlib import Path

import numpy as np

from distkeras.ps import connect
from tests.ps.helpers import SECRET
from tests.support import ROOT, child_env, python_without

NOT_NEEDED = frozenset({"pyspark", "pyarrow", "keras", "jax", "tensorflow", "torch"})
HERE = Path(__file__).parent


def test_the_blocker_blocks():
    code = "import json\ntry:\n    import pyspark\n    print(json.dumps('imported'))\nexcept ModuleNotFoundError as exc:\n    print(json.dumps(str(exc)))\n"
    out = subprocess.run(python_without(NOT_NEEDED, code), capture_output=True, text=True, env=child_env(), cwd=ROOT, timeout=60, check=True)
    assert "made unimportable" in json.loads(out.stdout)


def test_ps_test_modules_import_without_spark():
    """Every module of tests/ps (and the ps package they test) imports: no skip, no error."""
    modules = sorted(f"tests.ps.{p.stem}" for p in HERE.glob("*.py") if p.stem != "__init__")
    code = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in " + repr(sorted(NOT_NEEDED)) + ")))\n"
    )
    out = subprocess.run(python_without(NOT_NEEDED, code), capture_output=True, text=True, env=child_env(), cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout) == []
    assert "tests.ps.test_service" in modules and "tests.ps.test_fuzz" in modules


def test_distkeras_ps_serve_runs_without_spark(tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    code = "import runpy\nrunpy.run_module('distkeras', run_name='__main__', alter_sys=True)\n"
    argv = python_without(NOT_NEEDED, code) + ["ps", "serve", "--strategy", "adag", "--param", "window=2", "--size", "8", "--workers", "2", "--secret-file", str(secret)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(), cwd=ROOT)
    try:
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(60)
        assert line and line[0].startswith("listening on "), (line, proc.poll())
        c = connect(line[0].split()[-1], SECRET, 1)
        assert c.info["strategy"] == "adag"
        center, info = c.commit(np.full(8, 0.5, np.float32))
        assert info["status"] == "applied"
        np.testing.assert_array_equal(center, np.full(8, 0.5, np.float32))  # the server applies what ADAG's worker sends
        c.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        stderr = proc.stderr.read()
        proc.stdout.close(), proc.stderr.close()
    assert "Traceback" not in stderr, stderr
