"""The pytest plugin of gpae-ref: ``pytest --gpae-verify package.module:function [--gpae-*]``.

Registered through the ``pytest11`` entry point; it does nothing unless
``--gpae-verify`` is given. Then it adds one test item per (check,
correction) of ``gpae_ref.verify`` for each estimator named (the option can be
repeated). Its ``--gpae-*`` options are made from ``VerifyOptions``, so adding
them imports gpae_ref (NumPy and SciPy, never JAX or Numba).
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser):
    from gpae_ref.verify.options import add_arguments  # light: numpy and the case tables, no JAX

    group = parser.getgroup("gpae-ref", "verify an advantage estimator against gpae-ref's exact oracle")
    group.addoption("--gpae-verify", action="append", default=[], metavar="MODULE:FUNCTION",
                    help="estimator to verify (signature of gpae_ref.gpae); may be repeated")
    add_arguments(group.addoption, prefix="gpae-")  # --gpae-<option> for each field of VerifyOptions


def _options(config) -> dict:
    from gpae_ref.verify.options import from_namespace

    return from_namespace(config.getoption, prefix="gpae-")


class VerifyCollector(pytest.Collector):
    """All cells of one estimator's verify; the report is computed when the first item runs."""

    def __init__(self, *, spec: str, **kwargs):
        super().__init__(**kwargs)
        self.spec = spec
        self._report = None

    def report(self):
        if self._report is None:
            from gpae_ref.__main__ import load_estimator
            from gpae_ref.verify import verify

            self._report = verify(load_estimator(self.spec), **_options(self.config))
        return self._report

    def collect(self):
        from gpae_ref.corrections import CORRECTIONS
        from gpae_ref.verify import CHECKS
        from gpae_ref.verify.options import names as _names

        opts = _options(self.config)
        checks = _names(opts["checks"], CHECKS, "--gpae-checks")
        corrections = _names(opts["corrections"], CORRECTIONS, "--gpae-corrections")
        for check in checks:
            for correction in corrections:
                yield VerifyItem.from_parent(self, name=f"{check}[{correction}]", check=check, correction=correction)


class VerifyItem(pytest.Item):
    def __init__(self, *, check: str, correction: str, **kwargs):
        super().__init__(**kwargs)
        self.check, self.correction = check, correction

    def runtest(self):
        from gpae_ref.testing import VerifyFailure, cell_outcome

        status, message = cell_outcome(self.parent.report(), self.check, self.correction)
        if status == "n/a":
            pytest.skip(message)
        if status != "pass":
            raise VerifyFailure(message)

    def repr_failure(self, excinfo):
        from gpae_ref.testing import VerifyFailure

        if isinstance(excinfo.value, VerifyFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.parent.spec, None, f"gpae-verify {self.parent.spec} {self.check} [{self.correction}]"


def pytest_collection_modifyitems(session, config, items):
    for spec in config.getoption("gpae_verify"):
        try:
            collector = VerifyCollector.from_parent(session, name=f"gpae-verify[{spec}]", spec=spec)
            items.extend(collector.collect())
        except ValueError as exc:  # a bad --gpae-* option or estimator spec
            raise pytest.UsageError(f"--gpae-verify {spec}: {exc}") from None
