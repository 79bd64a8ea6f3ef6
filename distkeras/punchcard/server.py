"""The punchcard HTTP API (FastAPI + uvicorn). Build with :func:`create_app`, run with :func:`serve`.

Endpoints (all under ``/v1``; every one but ``/v1/health`` needs ``Authorization: Bearer <token>``):

- ``POST /v1/jobs`` (multipart: ``spec`` = JSON :class:`~distkeras.punchcard.spec.JobSpec`,
  optional ``model`` = a ``.keras`` file) → 201 and the job; 413 over the upload limit
  (enforced while streaming), 422 for a bad spec or an unsafe model, 429 when the token already
  has ``max_jobs_per_token`` active jobs (jobs are not queued: submit again later).
- ``GET /v1/jobs`` → the caller's jobs; ``GET /v1/jobs/{id}`` → one job;
  ``GET /v1/jobs/{id}/logs?tail=N&stream=stderr|stdout``; ``POST /v1/jobs/{id}/cancel``;
  ``GET /v1/jobs/{id}/model`` (the trained ``model.keras``) and
  ``GET /v1/jobs/{id}/files/{name}`` (``model.keras``, ``history.json``, ``curves.png``).
- Another token's job is answered 404, exactly like a job that does not exist.
- A token that expired is answered 401 naming when; an address that presented
  ``auth_max_failures`` invalid tokens within ``auth_window_s`` seconds is answered 429 with
  ``Retry-After`` (whatever it sends) until the window has moved on.
- Over TLS with ``serve(..., ssl_certfile=, ssl_keyfile=)`` (``distkeras punchcard serve
  --tls-cert F --tls-key F``); clients verify against a CA or pin the certificate's SHA-256.

With curl::

    curl -H "Authorization: Bearer $TOKEN" -F 'spec={"strategy": "adag", "workers": 4}' \
         -F model=@model.keras http://127.0.0.1:8765/v1/jobs
"""

# No "from __future__ import annotations": FastAPI reads the endpoint annotations at runtime,
# and some of them (Who) are local to create_app.

import contextlib
import fcntl
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ValidationError

from distkeras import __version__

from . import auth
from .modelcheck import UnsafeModel, inspect_keras_file
from .runner import JOB_ID_RE, JobRunner, tail_lines
from .spec import JobSpec, Policy, build_argv
from .store import ACTIVE_STATES, FINAL_STATES, LimitExceeded, Store

OUTPUT_FILES = ("model.keras", "history.json", "curves.png")
MEDIA_TYPES = {"model.keras": "application/octet-stream", "history.json": "application/json", "curves.png": "image/png"}
MAX_SPEC_BYTES = 256 * 1024
MODEL_NAME = "model.keras"  # the server-chosen name of an uploaded model
JobId = Annotated[str, PathParam(pattern=JOB_ID_RE.pattern, description="a job id (32 hex digits)")]


@dataclass
class Settings:
    db: Path
    workdir: Path
    max_jobs_per_token: int = 2
    max_upload_mb: float = 100.0
    python: str | None = None
    policy: Policy = field(default_factory=Policy)
    grace_s: float = 5.0
    auth_max_failures: int = 10  # invalid tokens per client address within auth_window_s; 0: no limit
    auth_window_s: float = 60.0

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


class JobOut(BaseModel):
    id: str
    command: str
    state: Literal["starting", "running", "succeeded", "failed", "cancelled"]
    spec: dict[str, Any]
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    reason: str | None = None
    result: dict[str, Any] | None = None
    has_model: bool = False
    files: list[str] = []
    log_tail: str | None = None


class JobList(BaseModel):
    jobs: list[JobOut]


class Logs(BaseModel):
    job_id: str
    stream: Literal["stderr", "stdout"]
    lines: list[str]


class Health(BaseModel):
    status: str
    version: str


@dataclass
class Caller:
    token_id: str
    name: str


class _Reject(Exception):
    def __init__(self, status: int, detail: Any) -> None:
        self.status, self.detail = status, detail


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


def _spec_error(msg: str, loc: tuple[Any, ...] = ()) -> _Reject:
    return _Reject(422, [{"loc": ["body", "spec", *loc], "msg": msg, "type": "value_error"}])


def _check_upload_name(filename: str) -> None:
    if (
        not filename
        or len(filename) > 255
        or any(c in filename for c in "/\\\x00")
        or filename in (".", "..")
        or ".." in filename
        or any(ord(c) < 32 for c in filename)
    ):
        raise _Reject(422, f"refused model file name {filename!r}: it must be a plain file name ending in .keras")
    if not filename.lower().endswith(".keras"):
        raise _Reject(422, f"refused model file name {filename!r}: a model upload must be a .keras file")


async def _drain(stream: AsyncIterator[bytes], budget: int) -> None:
    """Read and discard up to ``budget`` more bytes so that the client gets our error response
    instead of a reset connection; beyond that the connection is simply closed."""
    with contextlib.suppress(Exception):
        async for chunk in stream:
            budget -= len(chunk)
            if budget < 0:
                return


async def _read_multipart(request: Request, model_path: Path, limit: int) -> tuple[bytes | None, bool]:
    """Stream the multipart body: the ``spec`` field into memory, the ``model`` file straight to
    ``model_path``; counts bytes as they arrive and stops at ``limit`` (413)."""
    try:
        from python_multipart.exceptions import FormParserError
        from python_multipart.multipart import MultipartParser, parse_options_header
    except ModuleNotFoundError:  # python-multipart < 0.0.13 ships the package as `multipart`
        from multipart.exceptions import FormParserError  # type: ignore[no-redef]
        from multipart.multipart import MultipartParser, parse_options_header  # type: ignore[no-redef]

    ctype, options = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data" or b"boundary" not in options:
        raise _Reject(415, "send the job as multipart/form-data: a 'spec' field (JSON) and an optional 'model' file")

    state: dict[str, Any] = {"headers": {}, "hname": b"", "hval": b"", "part": None, "seen": set()}
    spec_buf = bytearray()
    pending: list[bytes] = []
    model_fh = None
    has_model = False

    def on_part_begin() -> None:
        state["headers"], state["part"] = {}, None

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["hname"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["hval"] += data[start:end]

    def on_header_end() -> None:
        state["headers"][state["hname"].lower()] = state["hval"]
        state["hname"], state["hval"] = b"", b""

    def on_headers_finished() -> None:
        nonlocal model_fh, has_model
        _, opts = parse_options_header(state["headers"].get(b"content-disposition", b""))
        name = opts.get(b"name", b"").decode("utf-8", "replace")
        if name not in ("spec", "model"):
            raise _Reject(422, f"unexpected form field {name!r}: send 'spec' (JSON) and optionally 'model' (.keras)")
        if name in state["seen"]:
            raise _Reject(422, f"form field {name!r} given twice")
        state["seen"].add(name)
        state["part"] = name
        if name == "model":
            if b"filename" in opts:
                _check_upload_name(opts[b"filename"].decode("utf-8", "replace"))
            model_path.parent.mkdir(parents=True, exist_ok=True)
            model_fh = open(model_path, "wb")  # noqa: SIM115 - closed below
            has_model = True

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if state["part"] == "spec":
            spec_buf.extend(data[start:end])
            if len(spec_buf) > MAX_SPEC_BYTES:
                raise _Reject(413, f"the spec field is larger than {MAX_SPEC_BYTES // 1024} KiB")
        elif state["part"] == "model":
            pending.append(bytes(data[start:end]))

    callbacks = {
        "on_part_begin": on_part_begin,
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished,
        "on_part_data": on_part_data,
    }
    parser = MultipartParser(options[b"boundary"], callbacks)  # type: ignore[arg-type]
    stream = request.stream()
    total = 0
    try:
        async for chunk in stream:
            total += len(chunk)
            if total > limit:
                await _drain(stream, 2 * limit + (1 << 20))
                raise _Reject(413, f"the upload is larger than the server's limit of {limit / 1048576:g} MiB")
            try:
                parser.write(chunk)
            except FormParserError as exc:
                raise _Reject(422, f"malformed multipart body: {exc}") from None
            if pending and model_fh is not None:
                data, pending[:] = b"".join(pending), []
                await anyio.to_thread.run_sync(model_fh.write, data)
        try:
            parser.finalize()
        except FormParserError as exc:
            raise _Reject(422, f"malformed multipart body: {exc}") from None
        if pending and model_fh is not None:
            await anyio.to_thread.run_sync(model_fh.write, b"".join(pending))
    except _Reject as exc:
        if exc.status != 413 or total <= limit:
            await _drain(stream, 2 * limit + (1 << 20))
        raise
    finally:
        if model_fh is not None:
            model_fh.close()
    return (bytes(spec_buf) if "spec" in state["seen"] else None), has_model


def create_app(settings: Settings) -> FastAPI:
    settings.workdir = Path(settings.workdir)
    settings.workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
    store = Store(settings.db)
    runner = JobRunner(store, settings.workdir, python=settings.python, grace_s=settings.grace_s)
    verifier = auth.Verifier()
    limiter = auth.FailureLimiter(settings.auth_max_failures, settings.auth_window_s)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        failed = await run_in_threadpool(runner.recover)
        if failed:
            print(f"punchcard: marked {len(failed)} interrupted job(s) failed", file=sys.stderr)
        yield
        await run_in_threadpool(runner.shutdown)
        store.close()

    app = FastAPI(
        title="distkeras punchcard",
        version=__version__,
        description="Submit distkeras training jobs over HTTP. Authenticate with `Authorization: Bearer <token>`"
        " (tokens come from `distkeras punchcard token add NAME --db PATH`).",
        lifespan=lifespan,
        redirect_slashes=False,
    )
    app.state.settings, app.state.store, app.state.runner = settings, store, runner
    bearer = HTTPBearer(auto_error=False, description="a punchcard token: dkp_<id>_<secret>")

    def caller(request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Caller:
        address = request.client.host if request.client else "unknown"
        wait = limiter.retry_after(address)
        if wait > 0:
            seconds = max(1, int(wait + 0.999))
            raise HTTPException(
                429,
                f"too many invalid tokens from {address} ({limiter.max_failures} within {limiter.window_s:g} s); retry after {seconds} s",
                headers={"Retry-After": str(seconds)},
            )
        if creds is None:
            raise _unauthorized("missing bearer token (send 'Authorization: Bearer <token>')")
        parsed = auth.parse(creds.credentials)
        row = store.token_row(parsed[0]) if parsed is not None else None
        if row is None or not verifier.check(creds.credentials, row["id"], row["salt"], row["hash"], row["kdf"]):
            limiter.failed(address)  # only guesses count: a revoked or expired token was a real one
            raise _unauthorized("invalid token")
        if row["revoked_at"] is not None:
            verifier.forget(row["id"])
            raise _unauthorized("this token has been revoked")
        if row["expires_at"] is not None and time.time() >= row["expires_at"]:
            verifier.forget(row["id"])
            when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(row["expires_at"]))
            raise _unauthorized(f"this token expired at {when}; ask for a new one (distkeras punchcard token add NAME --expires-in ...)")
        return Caller(token_id=row["id"], name=row["name"])

    Who = Annotated[Caller, Depends(caller)]

    @app.exception_handler(_Reject)
    async def _on_reject(request: Request, exc: _Reject) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)

    def view(job: dict[str, Any]) -> dict[str, Any]:
        job_dir = runner.job_dir(job["id"])
        out = job_dir / "out"
        job = {k: v for k, v in job.items() if k not in ("token_id", "pid")}
        job["files"] = [n for n in OUTPUT_FILES if (out / n).is_file()]
        last = [line for line in tail_lines(job_dir / "stderr.log", 5, max_bytes=64 * 1024) if line.strip()]
        job["log_tail"] = last[-1].strip()[:500] if last else None
        return job

    def owned(job_id: str, who: Caller) -> dict[str, Any]:
        job = store.get_job(job_id, token_id=who.token_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id}")
        return job

    @app.get("/v1/health", response_model=Health, tags=["server"])
    def health() -> dict[str, Any]:
        """Liveness check; needs no token."""
        return {"status": "ok", "version": __version__}

    submit_body = {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["spec"],
                        "properties": {
                            "spec": {
                                "type": "string",
                                "contentMediaType": "application/json",
                                "description": "the job spec as JSON (schema JobSpec)",
                                "contentSchema": JobSpec.model_json_schema(),
                            },
                            "model": {"type": "string", "format": "binary", "description": "a .keras model"},
                        },
                    }
                }
            },
        }
    }

    @app.post("/v1/jobs", status_code=201, response_model=JobOut, tags=["jobs"], openapi_extra=submit_body,
              responses={413: {"description": "upload too large"}, 422: {"description": "bad spec or unsafe model"},
                         429: {"description": "too many active jobs for this token"}})
    async def submit(request: Request, who: Who) -> dict[str, Any]:
        """Submit a job: multipart with a JSON `spec` field and an optional `.keras` `model` file."""
        limit = settings.max_upload_bytes
        length = request.headers.get("content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                raise _Reject(400, "invalid Content-Length") from None
            if declared > limit:
                await _drain(request.stream(), min(declared, 2 * limit + (1 << 20)))
                raise _Reject(413, f"the upload ({declared / 1048576:.1f} MiB) is larger than the server's limit"
                                   f" of {limit / 1048576:g} MiB")
        job_id = uuid.uuid4().hex
        job_dir = runner.job_dir(job_id)
        job_dir.mkdir(mode=0o700)
        model_path = job_dir / "input" / MODEL_NAME
        try:
            raw, has_model = await _read_multipart(request, model_path, limit)
            if raw is None:
                raise _Reject(422, [{"loc": ["body", "spec"], "msg": "missing form field 'spec' (the job spec as JSON)",
                                     "type": "missing"}])
            try:
                data = json.loads(raw)
            except ValueError as exc:
                raise _spec_error(f"spec is not valid JSON: {exc}") from None
            if not isinstance(data, dict):
                raise _spec_error("spec must be a JSON object")
            try:
                spec = JobSpec.model_validate(data, context={"policy": settings.policy})
            except ValidationError as exc:
                errors = exc.errors(include_url=False, include_context=False, include_input=False)
                raise _Reject(422, [{**e, "loc": ["body", "spec", *e["loc"]]} for e in errors]) from None
            if has_model:
                if spec.command != "train":
                    raise _Reject(422, f"a model upload is only used by train jobs, not {spec.command}")
                if model_path.stat().st_size == 0:
                    raise _Reject(422, "the uploaded model file is empty")
                try:
                    await run_in_threadpool(inspect_keras_file, model_path)
                except UnsafeModel as exc:
                    raise _Reject(422, f"refused model: {exc}") from None
            try:
                job = await run_in_threadpool(
                    store.create_job, job_id, who.token_id, spec.command, spec.model_dump(exclude_none=True),
                    has_model, settings.max_jobs_per_token,
                )
            except LimitExceeded as exc:
                raise _Reject(429, f"{exc}; wait for one to finish or cancel one") from None
        except BaseException:
            shutil.rmtree(job_dir, ignore_errors=True)
            raise
        try:
            (job_dir / "spec.json").write_text(json.dumps(job["spec"], indent=1))
            argv = build_argv(spec, runner.python, job_dir.resolve(), model_path.resolve() if has_model else None)
            await run_in_threadpool(runner.start, job_id, argv)
        except Exception as exc:  # noqa: BLE001 - recorded on the job
            store.finish(job_id, "failed", reason=f"could not start the job: {exc}")
        return view(store.get_job(job_id) or job)

    @app.get("/v1/jobs", response_model=JobList, tags=["jobs"])
    def list_jobs(
        who: Who,
        state: Annotated[Literal["starting", "running", "succeeded", "failed", "cancelled"] | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        """The caller's jobs, newest first."""
        return {"jobs": [view(j) for j in store.list_jobs(who.token_id, state=state, limit=limit)]}

    @app.get("/v1/jobs/{job_id}", response_model=JobOut, tags=["jobs"])
    def job_status(job_id: JobId, who: Who) -> dict[str, Any]:
        """One job's state, result (the command's final JSON metrics) and available files."""
        return view(owned(job_id, who))

    @app.get("/v1/jobs/{job_id}/logs", response_model=Logs, tags=["jobs"])
    def job_logs(
        job_id: JobId,
        who: Who,
        tail: Annotated[int, Query(ge=0, le=10_000)] = 100,
        stream: Literal["stderr", "stdout"] = "stderr",
    ) -> dict[str, Any]:
        """The last `tail` lines of the job's stderr (progress, errors) or stdout."""
        owned(job_id, who)
        path = runner.job_dir(job_id) / f"{stream}.log"
        return {"job_id": job_id, "stream": stream, "lines": tail_lines(path, tail)}

    @app.post("/v1/jobs/{job_id}/cancel", response_model=JobOut, tags=["jobs"])
    def cancel(job_id: JobId, who: Who) -> dict[str, Any]:
        """Stop a running job and its whole process tree."""
        job = owned(job_id, who)
        if job["state"] in FINAL_STATES:
            raise HTTPException(409, f"job {job_id} already {job['state']}")
        if not runner.cancel(job_id):
            job = owned(job_id, who)
            if job["state"] in ACTIVE_STATES:
                raise HTTPException(409, f"job {job_id} is {job['state']}; try again")
        return view(owned(job_id, who))

    def send_file(job_id: str, name: str, who: Caller) -> FileResponse:
        job = owned(job_id, who)
        if job["state"] in ACTIVE_STATES:
            raise HTTPException(409, f"job {job_id} is still {job['state']}")
        path = runner.job_dir(job_id) / "out" / name
        if not path.is_file():
            raise HTTPException(404, f"job {job_id} ({job['state']}) produced no {name}")
        return FileResponse(path, media_type=MEDIA_TYPES[name], filename=name)

    @app.get("/v1/jobs/{job_id}/model", tags=["jobs"], response_class=FileResponse)
    def download_model(job_id: JobId, who: Who) -> FileResponse:
        """The trained model (`model.keras`) of a finished job."""
        return send_file(job_id, "model.keras", who)

    @app.get("/v1/jobs/{job_id}/files/{name}", tags=["jobs"], response_class=FileResponse)
    def download_file(
        job_id: JobId, name: Annotated[Literal["model.keras", "history.json", "curves.png"], PathParam()], who: Who
    ) -> FileResponse:
        """One output file of a finished job: `model.keras`, `history.json` or `curves.png`."""
        return send_file(job_id, name, who)

    return app


@contextlib.contextmanager
def workdir_lock(workdir: Path):  # type: ignore[no-untyped-def]
    """One server per work directory (it owns the jobs' processes)."""
    workdir.mkdir(parents=True, exist_ok=True)
    fd = os.open(workdir / ".server.lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another punchcard server is using {workdir}") from None
        yield
    finally:
        os.close(fd)


def check_tls_files(certfile: str | os.PathLike[str] | None, keyfile: str | os.PathLike[str] | None) -> None:
    """Both or neither, readable and loadable as a pair; RuntimeError naming the file otherwise."""
    import ssl

    if (certfile is None) != (keyfile is None):
        raise RuntimeError("TLS needs both a certificate (--tls-cert) and its private key (--tls-key)")
    if certfile is None:
        return
    for what, path in (("certificate", certfile), ("private key", keyfile)):
        if not os.path.isfile(path) or not os.access(path, os.R_OK):
            raise RuntimeError(f"the TLS {what} file {str(path)!r} does not exist or is not readable")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(certfile, keyfile)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise RuntimeError(f"cannot use the TLS certificate {str(certfile)!r} with the key {str(keyfile)!r}: {exc}") from None


def serve(
    settings: Settings,
    host: str = "127.0.0.1",
    port: int = 8765,
    log_level: str = "info",
    ssl_certfile: str | os.PathLike[str] | None = None,
    ssl_keyfile: str | os.PathLike[str] | None = None,
) -> None:
    """Run the server (blocks). With ``ssl_certfile`` and ``ssl_keyfile`` (PEM) it speaks HTTPS."""
    import uvicorn

    check_tls_files(ssl_certfile, ssl_keyfile)
    if ssl_certfile is None and host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"punchcard: listening on {host}: tokens travel in clear over plain HTTP; serve TLS"
            " (--tls-cert F --tls-key F) or put the server behind a TLS-terminating proxy",
            file=sys.stderr,
        )
    with workdir_lock(Path(settings.workdir)):
        app = create_app(settings)
        uvicorn.run(
            app, host=host, port=port, log_level=log_level, server_header=False,
            ssl_certfile=None if ssl_certfile is None else str(ssl_certfile),
            ssl_keyfile=None if ssl_keyfile is None else str(ssl_keyfile),
        )
