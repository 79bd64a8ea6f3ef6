"""The trainers, at dist-keras's module path: ``from distkeras.trainers import ADAG``.

The classes are implemented in :mod:`distkeras.frontends.trainers` (the ``frontends`` layer);
this module re-exports them, so ``distkeras.trainers.ADAG is distkeras.frontends.trainers.ADAG``.
Importing it imports neither Keras nor Spark (they load when a trainer is built).

=====================  ==============  ==============================================
class                  strategy        exchange
=====================  ==============  ==============================================
``SingleTrainer``      single          none: one worker, the baseline
``AveragingTrainer``   averaging       synchronous model averaging
``EnsembleTrainer``    ensemble        none: K independent models, mean prediction
``DOWNPOUR``           downpour        asynchronous, c += Δ
``ADAG``               adag            asynchronous, c += Δ/λ (recommended)
``DynSGD``             dynsgd          asynchronous, c += Δ/(τ+1)
``AEASGD``             aeasgd          asynchronous elastic averaging
``EAMSGD``             eamsgd          AEASGD with local Nesterov momentum
``EASGD``              easgd           synchronous elastic averaging
``Experimental``       experimental    asynchronous distance-scaled ADAG
``LocalSGD``           localsgd        synchronous, c = mean of w_k every λ steps
``DiLoCo``             diloco          synchronous, outer Nesterov step
=====================  ==============  ==============================================
"""

from distkeras.frontends.trainers import (
    ADAG,
    AEASGD,
    DOWNPOUR,
    EAMSGD,
    EASGD,
    DiLoCo,
    DynSGD,
    EnsembleTrainer,
    Experimental,
    LocalSGD,
    SingleTrainer,
    AveragingTrainer,
    Trainer,
)

__all__ = [
    "Trainer",
    "SingleTrainer",
    "AveragingTrainer",
    "EnsembleTrainer",
    "DOWNPOUR",
    "ADAG",
    "DynSGD",
    "AEASGD",
    "EAMSGD",
    "EASGD",
    "Experimental",
    "LocalSGD",
    "DiLoCo",
]
