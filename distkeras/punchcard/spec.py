"""The job spec: what a client may ask the server to run, validated with pydantic.

Unknown fields are rejected. A valid spec becomes the argument vector of
``python -m distkeras train|simulate``; every option is passed as one ``--name=value``
element (never through a shell), so a value can never be read as another option.

Server policy (checked with the validation context ``{"policy": Policy}``):

- ``data``: only URLs starting with an allowed prefix (default: remote file systems and
  HTTP(S); local paths and ``file://`` are refused unless the operator allows them), so a
  token holder cannot make the server read its own files.
- ``master``: only masters starting with an allowed prefix (default ``local``); the operator
  adds the cluster's master (``--allow-master spark://cluster:7077``).
- ``conf``: ``spark.*`` keys only, and never keys that load code or change what the driver
  runs (``spark.jars``, ``*.extraJavaOptions``, ``*.extraClassPath``, ``spark.pyspark.*``,
  ``spark.plugins``, ...).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

DEFAULT_DATA_PREFIXES = (
    "hdfs://", "s3://", "s3a://", "gs://", "abfs://", "abfss://", "wasbs://", "http://", "https://",
)
DEFAULT_MASTER_PREFIXES = ("local",)

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]{0,127}$")
PARAM_KEY_RE = re.compile(r"^[a-z_][a-z0-9_]{0,63}$")
CONF_KEY_RE = re.compile(r"^spark\.[A-Za-z0-9_.\-]{1,200}$")
# Keys through which a Spark conf can load or run code on the server or change the interpreter.
CONF_DENY_RE = re.compile(
    r"(^spark\.(jars|files|archives|submit\.pyFiles|plugins|extraListeners|sql\.extensions"
    r"|sql\.queryExecutionListeners|pyspark\.|executorEnv\.|yarn\.dist\.|kubernetes\.(driver|executor)\.podTemplate"
    r"|driver\.resource\.|executor\.resource\.|redaction\.)"
    r"|(extraJavaOptions|defaultJavaOptions|extraClassPath|extraLibraryPath|userClassPathFirst)$)"
)
MAX_TEXT = 2048

Scalar = str | int | float | bool


@dataclass(frozen=True)
class Policy:
    data_prefixes: tuple[str, ...] = DEFAULT_DATA_PREFIXES
    master_prefixes: tuple[str, ...] = DEFAULT_MASTER_PREFIXES
    extra: dict[str, Any] = field(default_factory=dict)


def _policy(info: ValidationInfo) -> Policy:
    ctx = info.context or {}
    return ctx.get("policy") or Policy()


def _plain_text(value: str, what: str) -> str:
    if len(value) > MAX_TEXT:
        raise ValueError(f"{what} is longer than {MAX_TEXT} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(f"{what} contains control characters")
    return value


def _scalar_text(value: Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class JobSpec(BaseModel):
    """A training (``train``) or simulation (``simulate``) job."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    command: Literal["train", "simulate"] = "train"
    strategy: str | None = Field(None, description="strategy registry name, e.g. adag, easgd, diloco")
    params: dict[str, Scalar] = Field(default_factory=dict, description="the strategy's hyperparameters")
    workers: int | None = Field(None, ge=1, le=1024)
    epochs: int | None = Field(None, ge=1, le=100_000)
    batch_size: int | None = Field(None, ge=1, le=1_000_000)
    window: int | None = Field(None, ge=1, le=1_000_000, description="communication window (local steps)")
    backend: Literal["tensorflow", "jax"] | None = None
    codec: str | None = Field(None, description="update codec: none, fp16, int8[:CHUNK], topk[:FRACTION]")
    seed: int | None = Field(None, ge=0, le=2**32 - 1, description="simulate only")
    master: str | None = Field(None, description="Spark master URL")
    data: str | None = Field(None, description="data URL (default: the bundled data set)")
    features_col: str | None = None
    label_col: str | None = None
    feature_cols: list[str] | None = Field(None, max_length=10_000)
    conf: dict[str, Scalar] = Field(default_factory=dict, description="Spark conf (spark.* keys)")

    @field_validator("strategy")
    @classmethod
    def _strategy(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from distkeras.core.strategies import STRATEGIES

        key = v.lower()
        if key not in STRATEGIES:
            raise ValueError(f"unknown strategy {v!r}; known strategies: {', '.join(STRATEGIES)}")
        return key

    @field_validator("codec")
    @classmethod
    def _codec(cls, v: str | None) -> str | None:
        if v is None:
            return v
        _plain_text(v, "codec")
        from distkeras.core.codecs import get_codec

        get_codec(v)  # raises ValueError naming the problem
        return v

    @field_validator("features_col", "label_col")
    @classmethod
    def _col(cls, v: str | None) -> str | None:
        if v is not None and not NAME_RE.match(v):
            raise ValueError(f"invalid column name {v!r}")
        return v

    @field_validator("feature_cols")
    @classmethod
    def _cols(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            if not v:
                raise ValueError("feature_cols must not be empty")
            bad = [c for c in v if not NAME_RE.match(c)]
            if bad:
                raise ValueError(f"invalid column name(s): {', '.join(map(repr, bad[:5]))}")
        return v

    @field_validator("params")
    @classmethod
    def _params(cls, v: dict[str, Scalar]) -> dict[str, Scalar]:
        for key, value in v.items():
            if not PARAM_KEY_RE.match(key):
                raise ValueError(f"invalid parameter name {key!r}")
            if isinstance(value, str):
                _plain_text(value, f"parameter {key!r}")
        return v

    @field_validator("conf")
    @classmethod
    def _conf(cls, v: dict[str, Scalar]) -> dict[str, Scalar]:
        for key, value in v.items():
            if not CONF_KEY_RE.match(key):
                raise ValueError(f"invalid Spark conf key {key!r}: keys look like spark.executor.memory")
            if CONF_DENY_RE.search(key):
                raise ValueError(f"Spark conf key {key!r} is not allowed on this server (it can load code)")
            if isinstance(value, str):
                _plain_text(value, f"conf {key!r}")
        return v

    @field_validator("master")
    @classmethod
    def _master(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is None:
            return v
        _plain_text(v, "master")
        allowed = _policy(info).master_prefixes
        if not any(v.startswith(p) for p in allowed):
            raise ValueError(f"master {v!r} is not allowed on this server; allowed: {', '.join(allowed)}")
        return v

    @field_validator("data")
    @classmethod
    def _data(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is None:
            return v
        _plain_text(v, "data")
        allowed = _policy(info).data_prefixes
        if not any(v.startswith(p) for p in allowed):
            raise ValueError(f"data URL {v!r} is not allowed on this server; allowed prefixes: {', '.join(allowed)}")
        if ".." in v.replace("\\", "/").split("/"):
            raise ValueError("data URL must not contain '..' path segments")
        return v

    @model_validator(mode="after")
    def _by_command(self) -> JobSpec:
        if self.command == "simulate":
            if self.strategy is None:
                raise ValueError("simulate needs a strategy")
            if self.workers is None:
                raise ValueError("simulate needs workers")
            not_for_simulate = [
                name for name in SIMULATE_UNSUPPORTED if getattr(self, name) not in (None, {}, [])
            ]
            if not_for_simulate:
                raise ValueError(f"field(s) not supported by simulate: {', '.join(not_for_simulate)}")
        elif self.seed is not None:
            raise ValueError("seed is only supported by simulate")
        if self.params:
            if self.strategy is None:
                raise ValueError("params need a strategy")
            from distkeras.core.strategies import strategy_defaults

            known = set(strategy_defaults(self.strategy)) - {"window"}
            if "window" in self.params:
                raise ValueError("pass the communication window as the window field, not in params")
            unknown = sorted(set(self.params) - known)
            if unknown:
                raise ValueError(
                    f"strategy {self.strategy!r} has no parameter {', '.join(map(repr, unknown))};"
                    f" its parameters: {', '.join(sorted(known)) or '(none)'}"
                )
        return self


SIMULATE_UNSUPPORTED = (
    "params", "batch_size", "backend", "master", "data", "features_col", "label_col", "feature_cols", "conf",
)


def build_argv(spec: JobSpec, python: str, job_dir: Path, model_path: Path | None) -> list[str]:
    """The job's command line: ``python -m distkeras <command> --json ...``."""
    argv = [python, "-m", "distkeras", spec.command]

    def opt(name: str, value: Any) -> None:
        if value is not None:
            argv.append(f"--{name}={_scalar_text(value)}")

    if spec.command == "train":
        opt("out", str(job_dir / "out"))
    argv.append("--json")
    opt("strategy", spec.strategy)
    opt("workers", spec.workers)
    opt("epochs", spec.epochs)
    opt("window", spec.window)
    opt("codec", spec.codec)
    if spec.command == "simulate":
        opt("seed", spec.seed)
        return argv
    opt("batch-size", spec.batch_size)
    opt("backend", spec.backend)
    opt("master", spec.master)
    opt("data", spec.data)
    opt("features-col", spec.features_col)
    opt("label-col", spec.label_col)
    if spec.feature_cols:
        opt("feature-cols", ",".join(spec.feature_cols))
    if model_path is not None:
        opt("model", str(model_path))
    for key, value in spec.params.items():
        argv.append(f"--param={key}={_scalar_text(value)}")
    for key, value in spec.conf.items():
        argv.append(f"--conf={key}={_scalar_text(value)}")
    return argv
