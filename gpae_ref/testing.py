"""``verify`` inside another project's pytest suite: one test per check and correction.

Two ways, both installed with ``gpae-ref[test]``:

* the plugin (registered through the ``pytest11`` entry point, so nothing to
  import): ``pytest --gpae-verify mypkg.adv:gae --gpae-corrections none``
  adds one item per (check, correction) to the run (``pytest --help`` lists
  every ``--gpae-*`` option);
* in a test file, ``verify_tests(estimator, corrections=("none",))`` returns a
  parametrized test function to assign at module level::

      from gpae_ref.testing import verify_tests
      from mypkg.adv import gae
      test_gae = verify_tests(gae, corrections=("none", "dt"))

A failing cell fails its test with the counterexample in the message; an
``n/a`` cell (outside the output dtype's range) is skipped.
"""

from __future__ import annotations

import functools
from typing import Callable


class VerifyFailure(AssertionError):
    """A (check, correction) cell of ``verify`` failed; the message holds its counterexamples."""


def cell_outcome(report, check: str, correction: str) -> tuple[str, str]:
    """(status, message) of one cell: status 'pass', 'FAIL' or 'n/a'; the message explains a non-pass."""
    cell = report.cell(check, correction)
    if cell.status == "FAIL":
        examples = [x for x in report.counterexamples if x.check == check and x.correction == correction]
        examples = examples or [x for x in report.counterexamples if x.check == check]
        text = "\n\n".join(f"{x.title}\n{x.summary()}" for x in examples) or "(no counterexample kept)"
        return "FAIL", (f"verify({report.estimator}): {check} / {correction} failed {cell.failing} of {cell.cases} "
                        f"cases (worst |error| / tolerance {cell.worst_ratio:.3g}; atol={report.atol:g} "
                        f"rtol={report.rtol:g})\n{text}")
    if cell.status == "n/a":
        return "n/a", f"{check} / {correction}: every case lies outside the {report.output_dtype} range"
    return cell.status, ""


def verify_tests(estimator: Callable, **verify_options) -> Callable:
    """A pytest test function parametrized over (check, correction); verify runs once, on first use."""
    import pytest

    from gpae_ref.corrections import CORRECTIONS
    from gpae_ref.verify import CHECKS, verify
    from gpae_ref.verify.options import names as _names

    checks = _names(verify_options.get("checks"), CHECKS, "checks")
    corrections = _names(verify_options.get("corrections"), CORRECTIONS, "corrections")

    @functools.lru_cache(maxsize=1)
    def report():
        return verify(estimator, **verify_options)

    @pytest.mark.parametrize("correction", corrections)
    @pytest.mark.parametrize("check", checks)
    def test_verify(check, correction):
        status, message = cell_outcome(report(), check, correction)
        if status == "n/a":
            pytest.skip(message)
        if status != "pass":
            raise VerifyFailure(message)

    return test_verify
