"""my_gae's tests: gpae-ref's exact checks as test items, plus one property of our own with its strategies."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from gpae_ref import strategies as gst
from gpae_ref.testing import verify_tests
from my_gae import gae

# One test per check of gpae_ref.verify (P1, P2, P3/P4 operator, P6, P7, matches reference), for 'none' only:
# a failure's message is the counterexample.
test_gae_verify = verify_tests(gae, corrections=("none",))


@settings(max_examples=50, deadline=None)
@given(gst.estimator_inputs(dones=False), gst.estimator_settings(corrections_=st.just("none")))
def test_lam_zero_is_the_td_error(x, kw):
    """Our own property on gpae-ref's input strategy: with lam = 0 the advantage is the one-step TD error."""
    adv, _ = gae(**x, **dict(kw, lam=0.0))
    E = x["values"] if x["values"].ndim == 3 else x["values"][:, :, None]
    td = x["rewards"][:, :, None] + kw["gamma"] * E[1:] - E[:-1]
    np.testing.assert_allclose(adv, np.broadcast_to(td, adv.shape), atol=1e-12)
