"""gpae-ref: the reference implementation of GPAE and DT-ISR.

GPAE (Generalized Per-Agent Advantage Estimation) with its double-truncated
importance-sampling ratio (DT-ISR), from Kim et al., AAMAS 2026
(arXiv 2603.02654), in three uses: a readable NumPy reference with an exact
tabular oracle, a property-based test suite, and fast kernels for training.

Convention, said once: every array is **time-major** ``[T, B, N]`` = (time,
environment, agent); per-step team quantities (rewards, dones) are ``[T, B]``
and values carry one extra bootstrap row, ``[T+1, B, N]`` (or ``[T+1, B]`` for
a state value shared by all agents).

Public API::

    gpae_ref.gpae(rewards, values, dones, logp_target, logp_behaviour, *,
                  gamma, lam, correction="dt", eta=1.02, mask=None,
                  backend="auto") -> GPAEOutput(advantages, value_targets)
    gpae_ref.trace_coefficients(logp_target, logp_behaviour, *, correction, eta, mask)
    gpae_ref.verify(estimator) -> report of properties P1-P7 (see ``gpae_ref.verify``)

The core imports without jax; the ``jax`` backend and the learner need the
``smax`` extra.
"""

from gpae_ref.corrections import CORRECTION_TABLE, CORRECTIONS
from gpae_ref.tolerances import FLOAT32_TOL, FLOAT64_TOL
from gpae_ref.api import BACKENDS, gpae
from gpae_ref.reference import GPAEOutput, trace_coefficients
from gpae_ref.validation import FullOverflowWarning
# Bound after the submodule import, so the name is the function, not the module.
from gpae_ref.verify import VerifyReport, verify

__all__ = ["BACKENDS", "CORRECTION_TABLE", "CORRECTIONS", "FLOAT32_TOL", "FLOAT64_TOL", "FullOverflowWarning", "GPAEOutput", "gpae", "VerifyReport", "trace_coefficients", "verify"]
__version__ = "0.1.0"

