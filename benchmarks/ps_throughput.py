"""Parameter-server throughput: commit-and-pull round trips of a 1M-float32 center.

Measured side by side in one run, every server and every client in its own process:

* raw echo: a plain TCP echo server on loopback; each client sends 4 MB and reads the
  same 4 MB back (the bytes of one commit and one center) -- the ceiling for one round trip;
* ours: ``distkeras ps`` with 1 or 4 shards; each client calls
  ``commit(update, pull=True, out=buffer)`` (one round trip: 4 MB up, the new center
  back into a reused buffer).

Clients: 1, 4 and 8. Targets: 1 client on 1 shard moves at least 0.6 of the raw echo's
MB/s; with 8 clients, 4 shards move at least 0.9 of the aggregate of 1 shard (the
sharding overhead: splitting the vector costs at most 10%). Sharding *scales* only with
more cores than server and client processes compete for; on a 2-core machine it cannot,
so what is checked here is that it costs little. Each target's two sides are measured
alternately, ``--repeats`` pairs, and the ratio is the median of the per-pair ratios, so a
noisy neighbour on the machine hits both sides alike. The load average at the start and
at the end is written with the results. With TLS (a per-run certificate, pinned), 1 client
on 1 shard moves at least 0.8 of the same server in plaintext (``--tls-only`` measures just
that pair, plus the raw speed of the primitives a per-frame MAC or TLS would use, and writes
``ps_throughput_tls.json``).

    python benchmarks/ps_throughput.py [--quick]
"""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks._common import parser, result, write_results  # noqa: E402

SECRET = b"ps-throughput-benchmark-secret!!"


# -- raw echo ---------------------------------------------------------------------------------
def _recv_exact(sock: socket.socket, view: memoryview) -> None:
    got = 0
    while got < view.nbytes:
        n = sock.recv_into(view[got:])
        if not n:
            raise EOFError
        got += n


def _echo_server(nbytes: int, q) -> None:
    listener = socket.create_server(("127.0.0.1", 0), backlog=64)
    q.put(listener.getsockname())

    def serve(conn):
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = memoryview(bytearray(nbytes))
        try:
            while True:
                _recv_exact(conn, buf)
                conn.sendall(buf)
        except (EOFError, OSError):
            conn.close()

    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


# -- clients: a pool of persistent processes, so a measurement costs no process start-up -------------
def _client_loop(conn) -> None:
    while True:
        cmd = conn.recv()
        if cmd is None:
            return
        kind, target, worker, size, duration = cmd
        payload = np.full(size, 1e-6, dtype=np.float32)
        if kind == "echo":
            sock = socket.create_connection(target)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            back = memoryview(bytearray(payload.nbytes))
            raw = memoryview(payload).cast("B")

            def step():
                sock.sendall(raw)
                _recv_exact(sock, back)

            close = sock.close
        else:
            from distkeras.ps import connect

            address, fingerprint = target if kind == "ps-tls" else (target, None)  # ps-tls: (addresses, pin)
            client = connect(address, SECRET, worker, fingerprint=fingerprint)
            center = np.empty(size, dtype=np.float32)  # the center lands here: nothing allocated per call

            def step():
                client.commit(payload, samples=1, pull=True, out=center)

            close = client.close
        step()  # warm up (buffers grown, connection open)
        conn.send("ready")
        conn.recv()  # go
        count, t0 = 0, time.perf_counter()
        end = t0 + duration
        while time.perf_counter() < end:
            step()
            count += 1
        elapsed = time.perf_counter() - t0
        close()
        conn.send((count, elapsed))


class ClientPool:
    def __init__(self, n: int):
        ctx = mp.get_context("spawn")
        self.pipes, self.procs = [], []
        for _ in range(n):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_client_loop, args=(child,), daemon=True)
            proc.start()
            self.pipes.append(parent)
            self.procs.append(proc)

    def run(self, kind: str, target, clients: int, size: int, duration: float) -> dict:
        """Aggregate round trips/s and MB/s of ``clients`` clients for ``duration`` s."""
        pipes = self.pipes[:clients]
        for w, pipe in enumerate(pipes):
            pipe.send((kind, target, w, size, duration))
        for pipe in pipes:
            assert pipe.recv() == "ready"
        for pipe in pipes:
            pipe.send("go")
        rates = [count / elapsed for count, elapsed in (pipe.recv() for pipe in pipes)]
        rts = sum(rates)
        return {"round_trips_per_s": rts, "mb_per_s": rts * 2 * 4 * size / 1e6}

    def close(self) -> None:
        for pipe in self.pipes:
            pipe.send(None)
        for proc in self.procs:
            proc.join(10)


def paired(run_a, run_b, repeats: int) -> dict:
    """Run a and b alternately ``repeats`` times. The ratio b/a is the median of the
    per-pair ratios: a noisy neighbour slows the runs next to each other alike."""
    a_runs, b_runs = [], []
    for _ in range(repeats):
        a_runs.append(run_a())
        b_runs.append(run_b())
    ratios = [b["mb_per_s"] / a["mb_per_s"] for a, b in zip(a_runs, b_runs)]
    return {"a": _median(a_runs), "b": _median(b_runs), "ratio": statistics.median(ratios), "ratios": ratios}


def _median(runs: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]} | {"runs": runs}


def _loadavg() -> list[float] | None:
    """1, 5 and 15 minute load averages (Linux), to judge how noisy the run was."""
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except (OSError, ValueError):
        return None


def loadavg() -> str:
    avg = _loadavg()
    return " ".join(f"{x:.2f}" for x in avg) if avg else "n/a"


def crypto_speeds(nbytes: int = 4_000_000, repeats: int = 5) -> dict:
    """MB/s of one core for what a per-frame MAC (HMAC-SHA256, BLAKE2b) or TLS (AES-GCM) does
    to one 4 MB commit: the cost of integrity alone vs integrity and confidentiality."""
    import hashlib
    import hmac

    data = os.urandom(nbytes)
    key = os.urandom(32)
    fns = {
        "hmac_sha256": lambda: hmac.new(key, data, hashlib.sha256).digest(),
        "blake2b_keyed": lambda: hashlib.blake2b(data, key=key).digest(),
    }
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        for bits in (128, 256):
            aead = AESGCM(os.urandom(bits // 8))
            fns[f"aes_{bits}_gcm"] = lambda aead=aead: aead.encrypt(os.urandom(12), data, None)
    except ImportError:
        pass
    out = {}
    for name, fn in fns.items():
        best = min(_timed(fn) for _ in range(repeats))
        out[name] = nbytes / best / 1e6
    return out


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def tls_vs_plaintext(pool: ClientPool, size: int, duration: float, repeats: int) -> tuple[dict, dict]:
    """1 client, 1 shard, commit-and-pull: the same server with TLS and in plaintext, measured in
    alternating pairs. Returns (the result row, measurements)."""
    from distkeras.ps import ShardedParameterServer

    plain = ShardedParameterServer("downpour", np.zeros(size, np.float32), 1, SECRET, shards=1, tls=False)
    tls = ShardedParameterServer("downpour", np.zeros(size, np.float32), 1, SECRET, shards=1, tls=True)
    load_before = loadavg()
    try:
        plain.start()
        tls.start()
        pair = paired(
            lambda: pool.run("ps", plain.addresses, 1, size, duration),
            lambda: pool.run("ps-tls", (tls.addresses, tls.tls_fingerprint), 1, size, duration),
            repeats,
        )
    finally:
        plain.stop()
        tls.stop()
    row = result(
        "TLS vs plaintext, 1 client, 1 shard",
        "MB/s",
        pair["b"]["mb_per_s"],
        pair["a"]["mb_per_s"],
        "the same server in plaintext, 1 client, 1 shard",
        0.8,
        True,
        ratio=pair["ratio"],
    )
    measurements = {
        "ps 1 shard, 1 client, plaintext": pair["a"],
        "ps 1 shard, 1 client, tls": pair["b"],
        "pair_ratios tls/plaintext": pair["ratios"],
        "loadavg before": load_before,
        "loadavg after": loadavg(),
    }
    return row, measurements


def main_tls_only(args, size: int, duration: float, repeats: int) -> None:
    pool = ClientPool(1)
    t_start = time.perf_counter()
    try:
        row, measurements = tls_vs_plaintext(pool, size, duration, repeats)
    finally:
        pool.close()
    speeds = crypto_speeds()
    print(f"\nTLS vs plaintext (1 client, 1 shard): {row['ours']:.1f} vs {row['baseline']:.1f} MB/s, median pair ratio {row['ratio']:.3f}")
    print(f"load average: {measurements['loadavg before']} (before), {measurements['loadavg after']} (after)")
    print("one core, 4 MB: " + ", ".join(f"{k} {v:.0f} MB/s" for k, v in speeds.items()) + "\n")
    write_results(
        "ps_throughput_tls",
        [row],
        extra={
            "config": {"center_floats": size, "duration_s": duration, "pairs_per_ratio": repeats, "quick": args.quick,
                       "cpus": os.cpu_count(), "wall_s": round(time.perf_counter() - t_start, 1)},
            "measurements": measurements,
            "crypto_mb_per_s_one_core": speeds,
        },
    )


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=1_000_000, help="center length in float32 values")
    p.add_argument("--duration", type=float, default=None, help="seconds per measurement")
    p.add_argument("--repeats", type=int, default=None, help="alternating pairs for each ratio")
    p.add_argument("--tls-only", action="store_true", help="only TLS vs plaintext (writes ps_throughput_tls.json)")
    args = p.parse_args()
    duration = args.duration or (0.75 if args.quick else 2.0)
    repeats = args.repeats or (5 if args.quick else 9)
    size = args.size
    if args.tls_only:
        return main_tls_only(args, size, duration, repeats)
    client_counts = (1, 4, 8)

    from distkeras.ps import ShardedParameterServer

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    echo = ctx.Process(target=_echo_server, args=(4 * size, q), daemon=True)
    echo.start()
    echo_addr = q.get(timeout=60)
    servers = {}
    measurements: dict[str, dict] = {}
    t_start = time.perf_counter()
    load_start = _loadavg()
    pool = ClientPool(max(client_counts))
    try:
        for shards in (1, 4):
            srv = ShardedParameterServer("downpour", np.zeros(size, np.float32), max(client_counts), SECRET, shards=shards)
            srv.start()
            servers[shards] = srv

        def run(kind: str, clients: int, shards: int = 1):
            target = echo_addr if kind == "echo" else servers[shards].addresses
            return lambda: pool.run(kind, target, clients, size, duration)

        one = paired(run("echo", 1), run("ps", 1, 1), repeats)
        measurements["echo, 1 client"] = one["a"]
        measurements["ps 1 shard, 1 client"] = one["b"]
        eight = paired(run("ps", 8, 1), run("ps", 8, 4), repeats)
        measurements["ps 1 shard, 8 clients"] = eight["a"]
        measurements["ps 4 shards, 8 clients"] = eight["b"]
        for clients in (4, 8):
            measurements[f"echo, {clients} clients"] = run("echo", clients)()
        for shards, clients in ((4, 1), (1, 4), (4, 4)):
            key = f"ps {shards} shard{'s' if shards > 1 else ''}, {clients} client{'s' if clients > 1 else ''}"
            measurements[key] = run("ps", clients, shards)()
        tls_row, tls_measurements = tls_vs_plaintext(pool, size, duration, repeats)
        measurements.update({k: v for k, v in tls_measurements.items() if k.startswith("ps ")})
    finally:
        pool.close()
        for srv in servers.values():
            srv.stop()
        echo.terminate()

    print(f"\n{'configuration':<28} {'round trips/s':>14} {'MB/s':>10}")
    for name in sorted(measurements, key=lambda k: (k.startswith("ps"), "4 shards" in k, int(k.split(", ")[1].split()[0]))):
        m = measurements[name]
        print(f"{name:<28} {m['round_trips_per_s']:>14.1f} {m['mb_per_s']:>10.1f}")
    print()
    rows = [
        result(
            "1 client, 1 shard vs raw echo",
            "MB/s",
            measurements["ps 1 shard, 1 client"]["mb_per_s"],
            measurements["echo, 1 client"]["mb_per_s"],
            "raw TCP echo of the same bytes, 1 client",
            0.6,
            True,
            ratio=one["ratio"],
        ),
        result(
            "8 clients, 4 shards vs 1 shard: sharding overhead (scaling needs more cores)",
            "MB/s",
            measurements["ps 4 shards, 8 clients"]["mb_per_s"],
            measurements["ps 1 shard, 8 clients"]["mb_per_s"],
            f"same service with 1 shard, 8 clients ({os.cpu_count()} cores: shards cannot scale here)",
            0.9,
            True,
            ratio=eight["ratio"],
        ),
        tls_row,
    ]
    write_results(
        "ps_throughput",
        rows,
        extra={
            "config": {
                "center_floats": size,
                "bytes_per_round_trip": 8 * size,
                "duration_s": duration,
                "pairs_per_ratio": repeats,
                "ratio": "median of per-pair ratios, pairs measured alternately",
                "quick": args.quick,
                "cpus": os.cpu_count(),
                "strategy": "downpour",
                "codec": "none",
                "wall_s": round(time.perf_counter() - t_start, 1),
                "loadavg_start": load_start,
                "loadavg_end": _loadavg(),
            },
            "pair_ratios": {"1 client: ps/echo": one["ratios"], "8 clients: 4 shards/1 shard": eight["ratios"],
                            "1 client: tls/plaintext": tls_measurements["pair_ratios tls/plaintext"]},
            "loadavg": {"before tls pair": tls_measurements["loadavg before"], "after": loadavg()},
            "measurements": measurements,
        },
    )


if __name__ == "__main__":
    main()
