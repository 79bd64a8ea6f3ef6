"""CLI glue for punchcard (remote jobs): ``distkeras punchcard serve|token``, ``distkeras submit``
and ``distkeras jobs``. Everything heavy (FastAPI, uvicorn, httpx) is imported inside the handlers."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

TOKEN_ENV = "DISTKERAS_PUNCHCARD_TOKEN"
URL_ENV = "DISTKERAS_PUNCHCARD_URL"
CA_ENV = "DISTKERAS_PUNCHCARD_CA"
FINGERPRINT_ENV = "DISTKERAS_PUNCHCARD_FINGERPRINT"


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    _register_server(subparsers)
    _register_submit(subparsers)
    _register_jobs(subparsers)


# --- distkeras punchcard serve | token -----------------------------------------------------


def _register_server(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "punchcard", help="run the remote job server, manage its tokens",
        description="punchcard: an HTTP job server for distkeras (OpenAPI at /docs).",
    )
    sub = p.add_subparsers(dest="punchcard_command", metavar="{serve,token}")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    s = sub.add_parser("serve", help="serve the HTTP API")
    s.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=8765)
    s.add_argument("--db", required=True, help="SQLite database (tokens, jobs)")
    s.add_argument("--workdir", required=True, help="directory for job directories (workdir/jobs/<id>/)")
    s.add_argument("--max-jobs-per-token", type=int, default=2,
                   help="active jobs per token; more are refused with 429 (default 2)")
    s.add_argument("--max-upload-mb", type=float, default=100.0, help="request size limit (default 100 MiB)")
    s.add_argument("--python", default=None,
                   help="interpreter that runs jobs (python -m distkeras ...); default: this one")
    s.add_argument("--allow-data", action="append", metavar="PREFIX",
                   help="allowed data URL prefix (repeatable; replaces the default remote-only list,"
                        " e.g. --allow-data hdfs:// --allow-data /data/)")
    s.add_argument("--allow-master", action="append", metavar="PREFIX",
                   help="allowed Spark master prefix (repeatable; default: local only)")
    s.add_argument("--grace", type=float, default=5.0, help="seconds between SIGTERM and SIGKILL on cancel")
    s.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    s.add_argument("--tls-cert", metavar="FILE", help="PEM certificate (chain): serve HTTPS (with --tls-key)")
    s.add_argument("--tls-key", metavar="FILE", help="PEM private key of --tls-cert")
    s.add_argument("--auth-max-failures", type=int, default=10,
                   help="invalid tokens one client address may present within --auth-window before it gets 429 (0: no limit)")
    s.add_argument("--auth-window", type=float, default=60.0, metavar="SEC", help="the window of --auth-max-failures (default 60 s)")
    s.set_defaults(func=_serve)

    t = sub.add_parser("token", help="add, list or revoke API tokens")
    tsub = t.add_subparsers(dest="token_command", metavar="{add,list,revoke}")
    t.set_defaults(func=lambda args: (t.print_help(), 2)[1])
    ta = tsub.add_parser("add", help="create a token (printed once, stored hashed)")
    ta.add_argument("name")
    ta.add_argument("--db", required=True)
    ta.add_argument("--expires-in", type=parse_duration, metavar="DURATION",
                    help="the token stops working after this long: 90s, 30m, 12h, 7d, 2w (default: never)")
    ta.set_defaults(func=_token_add)
    tl = tsub.add_parser("list", help="list tokens (never their secrets)")
    tl.add_argument("--db", required=True)
    tl.add_argument("--json", action="store_true")
    tl.set_defaults(func=_token_list)
    tr = tsub.add_parser("revoke", help="revoke a token by name or id")
    tr.add_argument("name")
    tr.add_argument("--db", required=True)
    tr.set_defaults(func=_token_revoke)


def _serve(args: argparse.Namespace) -> int:
    from pathlib import Path

    from distkeras.punchcard.server import Settings, serve
    from distkeras.punchcard.spec import DEFAULT_DATA_PREFIXES, DEFAULT_MASTER_PREFIXES, Policy

    policy = Policy(
        data_prefixes=tuple(args.allow_data or DEFAULT_DATA_PREFIXES),
        master_prefixes=tuple(args.allow_master or DEFAULT_MASTER_PREFIXES),
    )
    settings = Settings(
        db=Path(args.db), workdir=Path(args.workdir), max_jobs_per_token=args.max_jobs_per_token,
        max_upload_mb=args.max_upload_mb, python=args.python, policy=policy, grace_s=args.grace,
        auth_max_failures=args.auth_max_failures, auth_window_s=args.auth_window,
    )
    try:
        serve(settings, host=args.host, port=args.port, log_level=args.log_level,
              ssl_certfile=args.tls_cert, ssl_keyfile=args.tls_key)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _token_add(args: argparse.Namespace) -> int:
    from distkeras.punchcard.store import Store, TokenError

    try:
        with Store(args.db) as store:
            token = store.add_token(args.name, expires_in=args.expires_in)
    except TokenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(token)
    until = f", valid until {_fmt_time(time.time() + args.expires_in)}" if args.expires_in else ""
    print(f"token {args.name!r} created{until}; it is shown only now, store it safely", file=sys.stderr)
    return 0


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``12h``, ``7d``, ``2w`` -> seconds (> 0)."""
    raw = text.strip().lower()
    unit = raw[-1:] if raw[-1:] in _UNITS else "s"
    number = raw[:-1] if raw[-1:] in _UNITS else raw
    try:
        seconds = float(number) * _UNITS[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a duration such as 90s, 30m, 12h, 7d or 2w, got {text!r}") from None
    if not seconds > 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"a duration must be positive, got {text!r}")
    return seconds


def _fmt_time(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def _token_list(args: argparse.Namespace) -> int:
    from distkeras.punchcard.store import Store

    with Store(args.db) as store:
        rows = store.list_tokens()
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'ID':<14}{'NAME':<24}{'CREATED':<21}{'EXPIRES':<21}{'REVOKED':<21}JOBS")
    for r in rows:
        print(f"{r['id']:<14}{r['name']:<24}{_fmt_time(r['created_at']):<21}{_fmt_time(r['expires_at']):<21}"
              f"{_fmt_time(r['revoked_at']):<21}{r['jobs']}")
    return 0


def _token_revoke(args: argparse.Namespace) -> int:
    from distkeras.punchcard.store import Store, TokenError

    try:
        with Store(args.db) as store:
            row = store.revoke_token(args.name)
    except TokenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"revoked token {row['name']!r} ({row['id']})")
    return 0


# --- distkeras submit / jobs ----------------------------------------------------------------


def _connection_options() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--url", default=os.environ.get(URL_ENV), help=f"server URL (default: ${URL_ENV})")
    p.add_argument("--token", default=None, help=f"API token (default: ${TOKEN_ENV})")
    trust = p.add_mutually_exclusive_group()
    trust.add_argument("--ca", metavar="FILE", default=os.environ.get(CA_ENV),
                       help=f"verify an https:// server against this CA (PEM) (default: ${CA_ENV})")
    trust.add_argument("--fingerprint", metavar="SHA256", default=os.environ.get(FINGERPRINT_ENV),
                       help=f"accept only the server certificate with this SHA-256 fingerprint (default: ${FINGERPRINT_ENV})")
    return p


def _client(args: argparse.Namespace) -> Any:
    from distkeras.punchcard.client import Client, PunchcardError

    token = args.token or os.environ.get(TOKEN_ENV)
    if not args.url:
        raise PunchcardError(f"no server URL: pass --url or set {URL_ENV}")
    if not token:
        raise PunchcardError(f"no token: pass --token or set {TOKEN_ENV}")
    try:
        return Client(args.url, token, ca=args.ca, fingerprint=args.fingerprint)
    except ValueError as exc:
        raise PunchcardError(str(exc)) from None


def _kv(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    for conv in (int, float):
        try:
            return key, conv(value)
        except ValueError:
            pass
    if value.lower() in ("true", "false"):
        return key, value.lower() == "true"
    return key, value


SPEC_OPTIONS = [
    # (flag, spec field, type)
    ("--strategy", "strategy", str),
    ("--workers", "workers", int),
    ("--epochs", "epochs", int),
    ("--batch-size", "batch_size", int),
    ("--window", "window", int),
    ("--backend", "backend", str),
    ("--codec", "codec", str),
    ("--seed", "seed", int),
    ("--master", "master", str),
    ("--data", "data", str),
    ("--features-col", "features_col", str),
    ("--label-col", "label_col", str),
]


def _register_submit(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "submit", parents=[_connection_options()], help="submit a job to a punchcard server",
        description="Submit a train (default) or simulate job. Options override fields of --spec.",
    )
    p.add_argument("--spec", metavar="FILE.json", help="job spec as JSON (fields as in the server's JobSpec)")
    p.add_argument("--command", dest="job_command", choices=["train", "simulate"], help="job kind (default train)")
    for flag, dest, typ in SPEC_OPTIONS:
        p.add_argument(flag, dest=f"spec_{dest}", type=typ, default=None)
    p.add_argument("--feature-cols", dest="spec_feature_cols", default=None, help="comma-separated column names")
    p.add_argument("--param", dest="spec_params", type=_kv, action="append", metavar="K=V",
                   help="strategy hyperparameter (repeatable)")
    p.add_argument("--conf", dest="spec_conf", type=_kv, action="append", metavar="K=V",
                   help="Spark conf (repeatable)")
    p.add_argument("--model", help="a .keras model to train (uploaded)")
    p.add_argument("--wait", action="store_true", help="wait for the job to finish")
    p.add_argument("--timeout", type=float, default=None, help="with --wait: give up after this many seconds")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_submit)


def build_spec(args: argparse.Namespace) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if args.spec:
        with open(args.spec) as fh:
            spec = json.load(fh)
        if not isinstance(spec, dict):
            raise ValueError(f"{args.spec}: a job spec must be a JSON object")
    if args.job_command:
        spec["command"] = args.job_command
    for _, dest, _ in SPEC_OPTIONS:
        value = getattr(args, f"spec_{dest}")
        if value is not None:
            spec[dest] = value
    if args.spec_feature_cols:
        spec["feature_cols"] = [c.strip() for c in args.spec_feature_cols.split(",") if c.strip()]
    if args.spec_params:
        spec.setdefault("params", {}).update(dict(args.spec_params))
    if args.spec_conf:
        spec.setdefault("conf", {}).update(dict(args.spec_conf))
    return spec


def _submit(args: argparse.Namespace) -> int:
    from distkeras.punchcard.client import PunchcardError

    try:
        spec = build_spec(args)
        with _client(args) as client:
            job = client.submit(spec, model_path=args.model)
            print(f"submitted job {job['id']} ({job['state']})", file=sys.stderr)
            if not args.wait:
                print(json.dumps(job, indent=1))
                return 0
            job = client.wait(job["id"], timeout=args.timeout, progress=not args.quiet)
    except (PunchcardError, OSError, ValueError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(job, indent=1))
    if job["state"] != "succeeded":
        print(f"job {job['id']} {job['state']}: {job.get('reason') or ''}", file=sys.stderr)
        return 1
    return 0


def _register_jobs(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    conn = _connection_options()
    p = subparsers.add_parser("jobs", help="list, inspect, cancel jobs on a punchcard server; download models")
    sub = p.add_subparsers(dest="jobs_command", metavar="{list,status,logs,cancel,download}")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    pl = sub.add_parser("list", parents=[conn], help="your jobs, newest first")
    pl.add_argument("--state", default=None)
    pl.add_argument("--json", action="store_true")
    pl.set_defaults(func=_jobs_list)
    ps = sub.add_parser("status", parents=[conn], help="one job as JSON")
    ps.add_argument("job_id")
    ps.set_defaults(func=_jobs_status)
    pg = sub.add_parser("logs", parents=[conn], help="the tail of a job's log")
    pg.add_argument("job_id")
    pg.add_argument("--tail", type=int, default=100)
    pg.add_argument("--stream", choices=["stderr", "stdout"], default="stderr")
    pg.set_defaults(func=_jobs_logs)
    pc = sub.add_parser("cancel", parents=[conn], help="cancel a running job (its whole process tree)")
    pc.add_argument("job_id")
    pc.set_defaults(func=_jobs_cancel)
    pd = sub.add_parser("download", parents=[conn], help="download a finished job's model.keras (or --file)")
    pd.add_argument("job_id")
    pd.add_argument("path")
    pd.add_argument("--file", default="model.keras", choices=["model.keras", "history.json", "curves.png"])
    pd.set_defaults(func=_jobs_download)


def _run_client(args: argparse.Namespace, action: Any) -> int:
    from distkeras.punchcard.client import PunchcardError

    try:
        with _client(args) as client:
            return int(action(client) or 0)
    except (PunchcardError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _jobs_list(args: argparse.Namespace) -> int:
    def action(client: Any) -> None:
        jobs = client.list(state=args.state)
        if args.json:
            print(json.dumps(jobs, indent=1))
            return
        print(f"{'ID':<34}{'COMMAND':<10}{'STATE':<11}{'CREATED':<21}REASON")
        for j in jobs:
            print(f"{j['id']:<34}{j['command']:<10}{j['state']:<11}{_fmt_time(j['created_at']):<21}{j.get('reason') or ''}")

    return _run_client(args, action)


def _jobs_status(args: argparse.Namespace) -> int:
    return _run_client(args, lambda c: print(json.dumps(c.status(args.job_id), indent=1)))


def _jobs_logs(args: argparse.Namespace) -> int:
    return _run_client(args, lambda c: print("\n".join(c.logs(args.job_id, tail=args.tail, stream=args.stream))))


def _jobs_cancel(args: argparse.Namespace) -> int:
    def action(client: Any) -> None:
        job = client.cancel(args.job_id)
        print(f"job {job['id']} {job['state']}")

    return _run_client(args, action)


def _jobs_download(args: argparse.Namespace) -> int:
    def action(client: Any) -> None:
        path = client.download(args.job_id, args.path, name=args.file)
        print(path)

    return _run_client(args, action)
