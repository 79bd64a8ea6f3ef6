"""A task attempt that Spark gave up on but that still runs (started by _runner_workers.py).

Reads one JSON line (PS addresses, secret, worker, attempt) on stdin, connects as that worker
and attempt, prints ``connected``, waits until a newer attempt of the worker has registered with
the server, then sends a late commit (values 1e3, which would wreck the model if applied) and
exits. The server must refuse it (fenced). Exits after 120 s or when the server goes away."""

from __future__ import annotations

import base64
import json
import sys
import time

import numpy as np


def main() -> None:
    hello = json.loads(sys.stdin.readline())
    from distkeras.ps.client import connect

    client = connect(hello["addresses"], base64.b64decode(hello["secret"]), hello["worker"], hello["attempt"], retry_timeout=5.0)
    print("connected", flush=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if client.stats()["workers"][str(hello["worker"])]["attempt"] > hello["attempt"]:
                break
            time.sleep(0.05)
        client.commit(np.full(client.size, 1e3, np.float32), samples=1, pull=False)
    except Exception as exc:  # expected: fenced off by the newer attempt
        print(f"refused: {type(exc).__name__}: {exc}", file=sys.stderr)
    finally:
        client.close()


if __name__ == "__main__":
    main()
