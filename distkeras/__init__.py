"""distkeras: data-parallel training of Keras 3 models on Apache Spark.

Layers (each imports only those above it in this list):
``core`` (pure NumPy), ``backends`` (Keras 3 adapters), ``spark`` (runner and
parameter-server service), ``frontends`` (trainers, Estimator, CLI), ``punchcard``.
"""

__version__ = "0.1.0"
