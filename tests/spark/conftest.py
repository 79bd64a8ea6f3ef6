"""The Spark fixtures (``spark``, ``standalone_cluster``) live in ``tests/conftest.py``, shared with
``tests/frontends``; this folder needs pyspark and pyarrow."""

from __future__ import annotations

import pytest

pytest.importorskip("pyspark")
pytest.importorskip("pyarrow")
