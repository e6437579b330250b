"""Device arrays of other frameworks go to the cuda kernel and come back as their own kind.

Under NUMBA_ENABLE_CUDASIM=1 (CI) a stand-in framework, ``fakegpu``, plays CuPy's
part: its arrays expose ``__cuda_array_interface__`` and wrap Numba's simulated
device arrays; its ``asarray`` wraps an interface object without a copy. The
package never imports it: it finds the module of the input's type in
``sys.modules``. Also here: benchmarks/gpu_check.sh exists, parses, and says
so when there is no GPU.
"""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import gpae_ref
from gpae_ref import api

from test_backends import assert_matches_reference, make_inputs

ROOT = Path(__file__).resolve().parents[1]


def _cuda():
    from numba import cuda

    if not cuda.is_available():
        pytest.skip("no CUDA GPU and NUMBA_ENABLE_CUDASIM is not set (make test sets it)")
    return cuda


@pytest.fixture
def fakegpu(monkeypatch):
    cuda = _cuda()
    mod = types.ModuleType("fakegpu")

    class ndarray:  # noqa: N801 (the framework's own name)
        __module__ = "fakegpu"

        def __init__(self, device_array):
            self._dev = device_array
            self.shape, self.dtype = device_array.shape, device_array.dtype

        @property
        def __cuda_array_interface__(self):
            return {"shape": self.shape, "typestr": np.dtype(self.dtype).str, "version": 3,
                    "data": (0, False)}

    def asarray(x):
        return x if isinstance(x, ndarray) else ndarray(x)

    mod.ndarray, mod.asarray = ndarray, asarray
    monkeypatch.setitem(sys.modules, "fakegpu", mod)
    if os.environ.get("NUMBA_ENABLE_CUDASIM"):
        # The simulator has no as_cuda_array: unwrap the stand-in (on a GPU the real one runs).
        monkeypatch.setattr(cuda, "as_cuda_array", lambda x: x._dev, raising=False)
    return mod


@pytest.mark.parametrize("shared", [False, True])
def test_cuda_interface_arrays_come_back_as_their_kind(fakegpu, shared):
    cuda = _cuda()
    inputs = make_inputs(30, 4, 2, 3, np.float32, shared=shared, masked=True)
    foreign = {k: (fakegpu.asarray(cuda.to_device(v)) if v is not None else None)
               for k, v in inputs.items()}
    assert api.is_device_array(foreign["logp_target"])
    assert api._pick_backend(foreign["logp_target"]) == "cuda"
    kwargs = dict(gamma=0.95, lam=0.9, correction="dt", eta=1.02)
    got = gpae_ref.gpae(**foreign, **kwargs)  # auto -> cuda
    assert all(isinstance(x, fakegpu.ndarray) for x in got)
    assert_matches_reference([x._dev.copy_to_host() for x in got], inputs, **kwargs)


def test_cuda_interface_arrays_get_shape_and_dtype_checks(fakegpu):
    cuda = _cuda()
    inputs = make_inputs(31, 3, 2, 2, np.float32)
    foreign = {k: (fakegpu.asarray(cuda.to_device(v)) if v is not None else None)
               for k, v in inputs.items()}
    with pytest.raises(ValueError, match="^rewards "):
        gpae_ref.gpae(**dict(foreign, rewards=fakegpu.asarray(cuda.to_device(inputs["rewards"][:2]))),
                      gamma=0.9, lam=0.9)
    with pytest.raises(ValueError, match="^values .*real"):
        gpae_ref.gpae(**dict(foreign, values=fakegpu.asarray(
            cuda.to_device(inputs["values"].astype(np.complex64)))), gamma=0.9, lam=0.9)


def test_numba_device_arrays_stay_numba_device_arrays():
    cuda = _cuda()
    inputs = make_inputs(32, 3, 2, 2, np.float32)
    dev = {k: (cuda.to_device(v) if v is not None else None) for k, v in inputs.items()}
    got = gpae_ref.gpae(**dev, gamma=0.9, lam=0.9)
    assert all(type(x).__module__.startswith("numba.cuda") for x in got)


def test_gpu_check_script_parses_and_stops_without_a_gpu():
    script = ROOT / "benchmarks" / "gpu_check.sh"
    if not script.exists():
        pytest.skip("benchmarks/ is not part of an installed package")
    subprocess.run(["bash", "-n", str(script)], check=True)
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    probe = subprocess.run([sys.executable, "-c", "from numba import cuda; print(cuda.is_available())"],
                           capture_output=True, text=True, env=env)
    if probe.stdout.strip() == "True":
        pytest.skip("a GPU is present: the script would run in full")
    env.update(PY=sys.executable, OUT_DIR=str(ROOT / "runs" / "gpu_check_test"))
    run = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "no CUDA GPU" in run.stdout + run.stderr
