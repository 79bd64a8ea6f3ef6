"""distkeras: data-parallel training of Keras 3 models on Apache Spark.

Layers (each imports only those above it in this list):
``core`` (pure NumPy), ``backends`` (Keras 3 adapters) and ``ps`` (the parameter server:
protocol, service, client, shards, checkpoints; no Spark, no Keras), ``spark`` (session, feed,
runner, worker task), ``frontends`` (trainers, Estimator, CLI), ``punchcard``.
``tests/test_layers.py`` enforces the rule.
"""

__version__ = "0.1.0"
