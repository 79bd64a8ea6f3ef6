"""A fast interpreter exit for the ``distkeras`` command.

When a Python process ends, CPython clears its modules and runs full garbage collections over
every object still alive. With TensorFlow imported a full collection takes 0.4 s here (414k
objects), and a process that trained a small Keras model spent 2.2 s exiting after its last line
on TensorFlow and about 1 s on JAX (the test machine, 2 cores): on the bundled digits that is a
fifth of what the training call takes.

:func:`freeze_for_exit` moves every object alive to the collector's permanent generation
(:func:`gc.freeze`), which the exit's collections skip: the same exit took 0.25 s. The
``distkeras`` command calls it after its command returned, just before the process exits
(:func:`distkeras.frontends.cli.run`), where every file it wrote is closed.

It is deliberately not done for a user's process (a script, a notebook): an object that the
exit's collections would free never is, and its finalizer never runs. That includes a file a
user's function opened into a module global and never closed: measured here, its buffered data
never reached the disk. CPython does not promise ``__del__`` at exit, but such scripts are common.
``DISTKERAS_FAST_EXIT=0`` (also ``off``/``false``) keeps CPython's usual exit for the command too.
"""

from __future__ import annotations

import gc

from distkeras.core.cache_dirs import switched_on

ENV_FAST_EXIT = "DISTKERAS_FAST_EXIT"


def enabled() -> bool:
    """False when ``DISTKERAS_FAST_EXIT`` turns the fast exit off."""
    return switched_on(ENV_FAST_EXIT)


def freeze_for_exit() -> bool:
    """Freeze every object alive now, so that the process's exit does not collect them; True when
    done, False when ``DISTKERAS_FAST_EXIT`` turns it off. Call it only when the process is about
    to exit and holds no open file it still needs flushed (see the module's text)."""
    if not enabled():
        return False
    gc.freeze()
    return True
