"""``verify(estimator)``: check any GPAE, GAE or V-trace implementation against exact expectations.

The estimator has the signature of ``gpae_ref.gpae``::

    estimator(rewards, values, dones, logp_target, logp_behaviour, *,
              gamma, lam, correction, eta, [mask])
        -> (advantages [T, B, N], value_targets [T, B, N])

or, with ``agents=1``, the same on single-agent arrays ``[T, B]`` (values
``[T+1, B]``): then verify is an exact oracle for ordinary GAE and V-trace-style
estimators. ``mask`` is passed only in the cases that use it (``masks=False``
leaves those out for an estimator without masks). Outputs are read with
``numpy.asarray`` (JAX, CuPy on host, ... work). For another layout or
signature, write a few-line adapter (docs/oracle.md shows rlax's).

Expectations are exact: game-based checks enumerate every trajectory of tiny
games (``gpae_ref.oracle``), never sample. Checks (the spec, section 7), each
run for every correction asked for (``corrections=``, default all five):

=====================  ========================================================
``P1``                 on-policy, E = EQ^{pi,i}: E[A^i_0|s,a] = A^{pi,i}(s,a)
``P2``                 mu = pi, lam = 1, any E (horizon-T game): E[A^i_0|s,a] = Q_0(s,a) - E_0(s,a^-i)
``P3/P4 operator``     on/off-policy, any E: E[A^i_0|s,a] equals the linear-algebra
                       G_0 = sum_{k<T} (gamma lam M_c)^k d that defines T^i (section 6)
``P6 reductions``      none = GAE per agent; lam = 0 = delta; N = 1 = GAE with traces;
                       on-policy data: every correction gives the same outputs
``P7 symmetries``      permuting agents; scaling rewards and values by c > 0;
                       splitting the batch (columns, or time at a done) into separate calls
``matches reference``  equals ``gpae_ref.reference.gpae`` on random inputs with dones,
                       masks, state values [T+1, B] and a 128-agent wide-ratio case
=====================  ========================================================

Speed: the cases of one group and correction are stacked into one call
(``cases.py`` lists the five groups), so a full verify makes 23 estimator calls
of 23 distinct signatures (4 or 5 per correction) when everything passes;
a jitted estimator compiles that many programs, and the same ones again in a
later verify (same shapes, same options). Failing cases are rerun alone (and
shrunk) to make their counterexamples, which costs more calls.

Tolerances: |got - expected| <= atol + rtol |expected| per element. By default
(``atol=None``, ``rtol=None``) they follow the estimator's output dtype:
``TOLERANCES`` (float64 1e-9, float32 1e-4). Cases whose exact values lie
outside the output dtype's range are ``n/a`` for it, never passed.

An estimator that raises, returns the wrong thing, or returns NaN/inf fails
the cases it was called in, with a message saying what verify expected and
what it got; ``verify`` itself raises only ``ValueError`` for bad options.
"""

from gpae_ref.verify.check import CHECKS, verify
from gpae_ref.verify.options import LAYOUTS, VALUE_TARGETS, VerifyOptions
from gpae_ref.verify.cases import random_inputs, wide_ratio_inputs
from gpae_ref.verify.report import Cell, CheckSummary, Counterexample, VerifyReport
from gpae_ref.verify.runner import TOLERANCES, EstimatorError

__all__ = ["CHECKS", "LAYOUTS", "TOLERANCES", "VALUE_TARGETS", "Cell", "CheckSummary", "Counterexample",
           "EstimatorError", "VerifyOptions", "VerifyReport", "random_inputs", "verify", "wide_ratio_inputs"]
