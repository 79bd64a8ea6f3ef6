"""``distkeras ps``: run a standalone parameter server.

    distkeras ps secret FILE
    distkeras ps serve --strategy adag --size 1000000 --secret-file FILE [--shards 4]
                       [--ps-host HOST] [--ps-bind ADDR] [--port 0] [--workers 8] [--param window=12]
                       [--checkpoint URL [--checkpoint-every N] [--checkpoint-interval SEC]]
                       [--resume URL] [--codec NAME] [--tls | --no-tls] [--round-timeout SEC]

``--ps-host`` is the address workers connect to (default ``$DISTKERAS_PS_HOST``, else
127.0.0.1) and ``--ps-bind`` (alias ``--host``) the local address to listen on (default:
derived from ``--ps-host``). Beyond loopback, every connection must still answer the HMAC
challenge over the run secret.

``serve`` prints ``listening on HOST:PORT[,HOST:PORT...]`` (the advertised hosts) once every
shard accepts connections, then ``tls sha256 FINGERPRINT`` (the certificate workers pin:
``connect(..., fingerprint=FINGERPRINT)``) or ``tls off``. TLS is on by default when it listens
beyond loopback (a certificate made for this run, shared by all shards). It stops cleanly on
SIGTERM or Ctrl-C (in-flight commits are
drained and a final checkpoint is written when ``--checkpoint`` is set; if that final
checkpoint cannot be written, the error is printed and the exit status is 1).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import Any


def parse_param(text: str) -> tuple[str, Any]:
    """``key=value`` with the value read as int, float, bool or None when it looks like one."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    raw = raw.strip()
    low = raw.lower()
    if low in ("none", "null"):
        value: Any = None
    elif low in ("true", "false"):
        value = low == "true"
    else:
        try:
            value = int(raw)
        except ValueError:
            try:
                value = float(raw)
            except ValueError:
                value = raw
    return key.strip(), value


def read_secret(path: str) -> bytes:
    from distkeras.ps import read_secret_file

    try:
        return read_secret_file(path)
    except ValueError as exc:
        raise SystemExit(f"distkeras ps: {exc}") from None


def register(subparsers: Any) -> None:
    ps = subparsers.add_parser("ps", help="run a standalone parameter server", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ps.add_subparsers(dest="ps_command", metavar="SUBCOMMAND")

    sec = sub.add_parser("secret", help="write a fresh random run secret (hex) to a file readable only by you")
    sec.add_argument("file")
    sec.set_defaults(func=_secret)

    s = sub.add_parser("serve", help="serve a center to workers over TCP")
    s.add_argument("--strategy", required=True, help="strategy name (adag, downpour, dynsgd, easgd, localsgd, diloco, ...)")
    s.add_argument("--size", type=int, help="length of the flat center (zeros to start); optional with --resume")
    s.add_argument("--secret-file", required=True, help="file holding the run secret (see `distkeras ps secret`)")
    s.add_argument(
        "--ps-bind",
        "--host",
        dest="ps_bind",
        default=None,
        help="local address to listen on (default: derived from --ps-host; 0.0.0.0 for every interface)",
    )
    s.add_argument(
        "--ps-host",
        default=None,
        help="address workers connect to, printed in the 'listening on' line (default: $DISTKERAS_PS_HOST, else 127.0.0.1)",
    )
    s.add_argument("--port", type=int, default=0, help="port (shard i listens on PORT+i); 0 picks free ports")
    s.add_argument("--shards", type=int, default=1, help="split the center over this many server processes")
    s.add_argument("--workers", type=int, default=1, help="number of workers (ids 0..K-1; the size of a synchronous round)")
    s.add_argument("--param", action="append", default=[], type=parse_param, metavar="KEY=VALUE", help="strategy hyperparameter (repeatable)")
    s.add_argument("--codec", default=None, help="accept only updates with this codec (default: any)")
    s.add_argument("--checkpoint", metavar="URL", help="fsspec URL (folder) to write checkpoints to")
    s.add_argument("--checkpoint-every", type=int, metavar="N", help="checkpoint every N applied commits")
    s.add_argument("--checkpoint-interval", type=float, metavar="SEC", help="checkpoint every SEC seconds (if anything changed)")
    s.add_argument("--resume", metavar="URL", help="start from the checkpoint at URL")
    s.add_argument("--idle-timeout", type=float, default=300.0, help="close connections silent this long (s)")
    s.add_argument(
        "--tls",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="TLS with a certificate made for this run (its fingerprint is printed for the workers to pin); "
        "default: on when --host is beyond loopback, off on loopback",
    )
    s.add_argument(
        "--round-timeout",
        type=float,
        metavar="SEC",
        help="synchronous strategies: a worker waits at most SEC for the others to commit to its round, then gets an error naming them (default: no limit)",
    )
    s.set_defaults(func=_serve)
    ps.set_defaults(func=lambda args: (ps.print_help(), 2)[1])


def _secret(args: argparse.Namespace) -> int:
    from distkeras.ps import protocol as wire

    fd = os.open(args.file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(wire.new_secret().hex() + "\n")
    print(f"wrote a new run secret to {args.file}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    import numpy as np

    from distkeras.core.strategies import get_strategy
    from distkeras.ps.checkpoint import CheckpointError, load_checkpoint
    from distkeras.ps import addresses_of, serve

    def fail(msg: str) -> int:
        print(f"distkeras ps serve: {msg}", file=sys.stderr)
        return 2

    secret = read_secret(args.secret_file)
    try:
        strategy = get_strategy(args.strategy, **dict(args.param))
    except ValueError as exc:
        return fail(str(exc))
    if args.shards < 1 or args.workers < 1:
        return fail("--shards and --workers must be >= 1")
    center = None
    if args.resume:
        try:
            _, meta = load_checkpoint(args.resume, 0)
        except CheckpointError as exc:
            return fail(str(exc))
        total = int(meta.get("total_size", meta.get("size", 0)))
        if args.size is not None and args.size != total:
            return fail(f"--size {args.size} does not match the checkpoint's {total} values")
    elif args.size is None or args.size < 1:
        return fail("give --size N (the length of the center) or --resume URL")
    else:
        center = np.zeros(args.size, dtype=np.float32)
    from distkeras.ps.endpoint import resolve_endpoint

    try:
        endpoint = resolve_endpoint(args.ps_host, args.ps_bind)
    except ValueError as exc:
        return fail(str(exc))
    kwargs = dict(
        host=endpoint.bind,
        advertise=endpoint.advertise,
        port=args.port,
        codec=args.codec,
        checkpoint=args.checkpoint,
        checkpoint_every=args.checkpoint_every,
        checkpoint_interval=args.checkpoint_interval,
        resume=args.resume,
        idle_timeout=args.idle_timeout,
        tls=args.tls,
        round_timeout=args.round_timeout,
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        server = serve(strategy, center, args.workers, secret, shards=args.shards, **kwargs)
        server.start()
    except (ValueError, OSError, RuntimeError, CheckpointError) as exc:
        return fail(str(exc))
    print(f"listening on {addresses_of(server)}", flush=True)
    print(f"tls sha256 {server.tls_fingerprint}" if server.tls_fingerprint else "tls off", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        stopped_cleanly = _stop(server)
    return 0 if stopped_cleanly else 1


def _stop(server) -> bool:
    """Stop the server; a final checkpoint that cannot be written is reported, not a traceback."""
    from distkeras.ps.checkpoint import CheckpointError

    try:
        server.stop()
    except CheckpointError as exc:
        print(f"distkeras ps serve: {exc}", file=sys.stderr)
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    """``python -m distkeras.frontends.commands.ps serve ...`` (same as ``distkeras ps ...``)."""
    parser = argparse.ArgumentParser(prog="distkeras")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["ps", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
