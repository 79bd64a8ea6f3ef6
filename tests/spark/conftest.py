"""The Spark fixtures (``spark``, ``standalone_cluster``) live in ``tests/conftest.py``, shared with
``tests/frontends``; they skip when pyspark, pyarrow or Java 17+ is missing. The folder is not
skipped as a whole: the worker's own parts (exchanges against the real parameter server, the
adapter cache) and the session's pure functions need no Spark."""
