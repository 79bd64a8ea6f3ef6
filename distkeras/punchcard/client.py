"""Python client for a punchcard server.

>>> from distkeras.punchcard import Client
>>> c = Client("http://cluster-gateway:8765", token)
>>> job = c.submit({"strategy": "adag", "workers": 4, "epochs": 3}, model_path="model.keras")
>>> c.wait(job["id"], timeout=3600)["state"]
'succeeded'
>>> c.download(job["id"], "trained.keras")

Errors are :class:`PunchcardError` naming the HTTP status and the server's detail; an
unreachable server gives a :class:`PunchcardError` naming the URL.

Over HTTPS the server's certificate is checked against the system's CAs, or against the CA in
``ca="ca.pem"`` (host name included), or pinned: ``fingerprint="SHA-256 hex"`` accepts exactly
the certificate with that fingerprint (self-signed is fine; no host-name check) and refuses any
other before the request, token included, is sent. ``httpx`` is imported
when a client is made, not when this module is imported.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import ssl
import sys
import time
from os import PathLike
from pathlib import Path
from typing import Any

FINAL_STATES = ("succeeded", "failed", "cancelled")


class PunchcardError(RuntimeError):
    """A failed request: ``status`` is the HTTP status (``None`` if the server was not reached)."""

    def __init__(self, message: str, status: int | None = None, detail: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


def format_detail(detail: Any) -> str:
    """FastAPI's error ``detail`` (a string, or a list of {loc, msg}) as one readable line."""
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict) and "msg" in item:
                loc = [str(x) for x in item.get("loc", []) if x not in ("body",)]
                parts.append(f"{'.'.join(loc)}: {item['msg']}" if loc else str(item["msg"]))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return str(detail)


class _PinnedSocket(ssl.SSLSocket):
    """Checks the peer certificate's SHA-256 against the context's pin as the handshake ends,
    before the HTTP client can send anything over the connection."""

    def do_handshake(self, block: bool = False) -> None:
        super().do_handshake(block)
        pin = getattr(self.context, "distkeras_pin", None)
        der = self.getpeercert(binary_form=True) or b""
        got = hashlib.sha256(der).hexdigest()
        if pin is not None and not hmac.compare_digest(got, pin):
            self.close()
            raise ssl.SSLCertVerificationError(
                f"the server presented a certificate with SHA-256 fingerprint {got}, expected {pin}: refusing to send it anything"
            )


def tls_context(ca: str | PathLike[str] | None = None, fingerprint: str | None = None) -> ssl.SSLContext | None:
    """The SSLContext for ``ca`` (verify against that CA file) or ``fingerprint`` (pin one
    certificate), or None (the default: system CAs). ValueError naming the problem."""
    if ca is not None and fingerprint is not None:
        raise ValueError("give a CA file or a certificate fingerprint to check the server against, not both")
    if ca is not None:
        if not Path(ca).is_file():
            raise ValueError(f"the CA file {str(ca)!r} does not exist")
        try:
            return ssl.create_default_context(cafile=str(ca))
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(f"cannot load the CA file {str(ca)!r}: {exc}") from None
    if fingerprint is not None:
        text = fingerprint.strip().lower().removeprefix("sha256:").replace(":", "")
        if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
            raise ValueError(f"a certificate fingerprint is 64 hex digits (SHA-256, colons allowed), got {fingerprint!r}")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # the pin replaces the chain: checked in _PinnedSocket
        ctx.sslsocket_class = _PinnedSocket
        ctx.distkeras_pin = text  # type: ignore[attr-defined]
        return ctx
    return None


class Client:
    """``ca``: a PEM CA file to verify an HTTPS server against; ``fingerprint``: the SHA-256
    of the server's certificate, pinned (see the module doc)."""

    def __init__(
        self,
        url: str,
        token: str,
        timeout: float = 60.0,
        *,
        ca: str | PathLike[str] | None = None,
        fingerprint: str | None = None,
    ) -> None:
        import httpx

        self.url = url.rstrip("/")
        self._httpx = httpx
        ctx = tls_context(ca, fingerprint)
        if ctx is not None and not self.url.lower().startswith("https://"):
            raise ValueError(f"a CA file or fingerprint checks an HTTPS server; {self.url!r} is not https://")
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}", "User-Agent": "distkeras-punchcard-client"},
            timeout=timeout,
            **({"verify": ctx} if ctx is not None else {}),
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing -------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        httpx = self._httpx
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise PunchcardError(f"punchcard server at {self.url} did not answer in time ({exc})") from None
        except httpx.TransportError as exc:
            raise PunchcardError(f"cannot reach punchcard server at {self.url}: {exc}") from None
        return self._check(response, method, path)

    def _check(self, response: Any, method: str, path: str) -> Any:
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text.strip() or response.reason_phrase
            raise PunchcardError(
                f"{method} {self.url}{path} failed: HTTP {response.status_code}: {format_detail(detail)}",
                status=response.status_code,
                detail=detail,
            )
        return response

    # --- API ------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return self._request("GET", "/v1/health").json()

    def submit(self, spec: dict[str, Any], model_path: str | PathLike[str] | None = None) -> dict[str, Any]:
        """Submit a job; returns the job (``id``, ``state``, ...). ``spec`` is a JobSpec dict."""
        files: dict[str, Any] = {"spec": (None, json.dumps(spec), "application/json")}
        if model_path is None:
            return self._request("POST", "/v1/jobs", files=files).json()
        path = Path(model_path)
        if not path.is_file():
            raise PunchcardError(f"model file {path} does not exist")
        with open(path, "rb") as fh:
            files["model"] = (path.name, fh, "application/octet-stream")
            return self._request("POST", "/v1/jobs", files=files).json()

    def status(self, job_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/jobs/{_job_id(job_id)}").json()

    def list(self, state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        if state:
            params["state"] = state
        return self._request("GET", "/v1/jobs", params=params).json()["jobs"]

    def logs(self, job_id: str, tail: int = 100, stream: str = "stderr") -> list[str]:
        """The last ``tail`` lines of the job's ``stderr`` (default) or ``stdout``."""
        return self._request(
            "GET", f"/v1/jobs/{_job_id(job_id)}/logs", params={"tail": tail, "stream": stream}
        ).json()["lines"]

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._request("POST", f"/v1/jobs/{_job_id(job_id)}/cancel").json()

    def download(self, job_id: str, path: str | PathLike[str], name: str = "model.keras") -> Path:
        """Save one output file of a finished job (default the trained ``model.keras``) to ``path``."""
        httpx = self._httpx
        target = Path(path)
        if target.is_dir():
            target = target / name
        url = f"/v1/jobs/{_job_id(job_id)}/model" if name == "model.keras" else f"/v1/jobs/{_job_id(job_id)}/files/{name}"
        tmp = target.with_name(target.name + ".part")
        try:
            with self._http.stream("GET", url) as response:
                if response.status_code >= 400:
                    response.read()
                    self._check(response, "GET", url)
                with open(tmp, "wb") as fh:
                    for chunk in response.iter_bytes():
                        fh.write(chunk)
        except httpx.TransportError as exc:
            tmp.unlink(missing_ok=True)
            raise PunchcardError(f"cannot reach punchcard server at {self.url}: {exc}") from None
        tmp.replace(target)
        return target

    def wait(
        self, job_id: str, timeout: float | None = None, progress: bool = True, poll_s: float = 1.0
    ) -> dict[str, Any]:
        """Poll until the job is finished; returns the final job (check its ``state``).

        Shows progress on stderr (a tqdm bar if tqdm is installed, else a line per change).
        Raises :class:`TimeoutError` if the job is still active after ``timeout`` seconds.
        """
        start = time.monotonic()
        bar = None
        last_line: tuple[str, str | None] | None = None
        if progress:
            try:
                from tqdm.auto import tqdm

                bar = tqdm(desc=f"job {job_id[:8]}", bar_format="[{elapsed}] {desc}", file=sys.stderr)
            except ImportError:
                bar = None
        try:
            while True:
                job = self.status(job_id)
                shown = (job["state"], job.get("log_tail"))
                if progress and shown != last_line:
                    text = job["state"] + (f" | {job['log_tail']}" if job.get("log_tail") else "")
                    if bar is not None:
                        bar.set_description_str(f"job {job_id[:8]} {text}"[:150])
                    else:
                        print(f"job {job_id[:8]} [{time.monotonic() - start:6.0f}s] {text}", file=sys.stderr)
                    last_line = shown
                if job["state"] in FINAL_STATES:
                    return job
                if timeout is not None and time.monotonic() - start > timeout:
                    raise TimeoutError(f"job {job_id} is still {job['state']} after {timeout:g} s")
                if bar is not None:
                    bar.refresh()
                time.sleep(poll_s)
        finally:
            if bar is not None:
                bar.close()


def _job_id(job_id: str) -> str:
    job_id = str(job_id).strip()
    if not job_id or not all(c in "0123456789abcdef" for c in job_id) or len(job_id) != 32:
        raise PunchcardError(f"invalid job id {job_id!r} (expected 32 hex digits)")
    return job_id

