"""numba.cuda kernel of GPAE: one thread per (env, agent) sequence, backwards over time.

The math is the reference's (``gpae_ref.reference.gpae``, spec sections 3-5)::

    A^i_t = delta^i_t + gamma lam (1 - d_t) c^i_{t+1} A^i_{t+1},   A^i_T = 0
    v^i_t = E^i_t + min(1, rho^i_t) A^i_t

Thread k handles env b = k // N, agent i = k % N (a grid-stride loop covers
any B*N), so neighbouring threads read neighbouring agents of one
environment: loads are coalesced, and the N log-ratios each thread sums for
the joint ratio are the same few cache lines for the whole warp. Everything
is in log space as in the reference; ``full`` overflows to inf by design.

Importing this module imports numba.cuda: to run without a GPU, set
``NUMBA_ENABLE_CUDASIM=1`` in the environment *before* that import (the test
run does; this module never sets it).
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

from gpae_ref.dtypes import compute_dtype, host_flags
from gpae_ref.kernels._common import CORRECTION_CODES, DT, IT, NONE, ST
from gpae_ref.arrays import is_device_array
from gpae_ref.reference import GPAEOutput

#: Threads per block; the grid is capped at _BLOCKS_PER_SM blocks per multiprocessor
#: and the kernel's grid-stride loop covers the rest.
THREADS_PER_BLOCK = 128
_BLOCKS_PER_SM = 32


@cuda.jit
def _gpae_kernel(rewards, values, dones, lt, lb, mask, has_mask, shared, code,
                 zero, one, gamma, gamma_lam, log_eta, log_max, inf, adv, vt):
    """Out-parameter kernel: fills ``adv`` and ``vt`` [T, B, N].

    ``values`` is [T+1, B, N], or [T+1, B, 1] when ``shared``; ``mask`` is
    [T, B, N] (a dummy unless ``has_mask``). Scalars come in the compute dtype.
    ``log_max``/``inf`` make ``full``'s exp overflow to inf explicitly (the
    simulator's Python exp would raise instead).
    """
    T, B, N = lt.shape
    for k in range(cuda.grid(1), B * N, cuda.gridsize(1)):
        b = k // N
        i = k - b * N
        iv = 0 if shared else i
        a_next = zero  # A_T = 0
        c_next = one  # unused at T: it multiplies A_T = 0
        for t in range(T - 1, -1, -1):
            joint = zero
            lost = zero  # compensated (Kahan) sum: a plain float32 sum over many agents with large
            own = zero   # log-ratios of both signs loses digits; float64 is slow on many GPUs
            for j in range(N):
                lj = lt[t, b, j] - lb[t, b, j]
                if has_mask and mask[t, b, j] == 0:
                    lj = zero  # a dead or masked agent has ratio 1
                y = lj - lost
                total = joint + y
                # A sum past -max (target log-probs near -max) is -inf, and stays so: no
                # compensation then, whose inf - inf would make it NaN.
                lost = (total - joint) - y if total > -inf else zero
                joint = total
                if j == i:
                    own = lj
            if code == NONE:
                c = one
            elif code == IT:  # min(1, rho^i)
                c = math.exp(min(zero, own))
            elif code == ST:  # min(1, rho)
                c = math.exp(min(zero, joint))
            elif code == DT:  # min(1, rho^i min(eta, rho^-i)), rho^-i = exp(joint - own)
                c = math.exp(min(zero, own + min(log_eta, joint - own)))
            else:  # full: rho, untruncated
                c = inf if joint > log_max else math.exp(joint)
            nd = zero if dones[t, b] != 0 else one
            e_cur = values[t, b, iv]
            delta = rewards[t, b] + gamma * nd * values[t + 1, b, iv] - e_cur
            carried = c_next * a_next if nd > zero else zero  # a done cuts; inf*0 never leaks
            a = delta + gamma_lam * carried
            adv[t, b, i] = a
            vt[t, b, i] = e_cur + math.exp(min(zero, own)) * a
            a_next = a
            c_next = c


def launch_config(n_sequences: int) -> tuple[int, int]:
    """(blocks, threads per block) for ``n_sequences`` threads' worth of work.

    Small problems get one block of whole warps (no idle blocks of 128).
    """
    threads = min(THREADS_PER_BLOCK, 32 * -(-n_sequences // 32))
    blocks = -(-n_sequences // threads)
    try:
        sms = cuda.get_current_device().MULTIPROCESSOR_COUNT
    except Exception:  # the simulator's fake device has no attributes
        sms = 1
    return max(1, min(blocks, _BLOCKS_PER_SM * sms)), threads


def _to_device(x, dtype=None):
    """Device array of ``x``: device inputs are used in place, host ones copied in.

    Device inputs: Numba device arrays as they are; anything else exposing
    ``__cuda_array_interface__`` (CuPy, PyTorch, JAX on GPU) through
    ``cuda.as_cuda_array``, zero-copy; a CUDA DLPack object without that
    interface is handed to the kernel launch as it is (numba-cuda reads DLPack).
    Host real inputs are converted to ``dtype`` (the compute dtype, native byte
    order); host flags (dones, mask) of a dtype the kernel cannot read as it is
    (float16, long double, the other byte order) as ``host_flags`` says, exactly.
    """
    if is_device_array(x):
        if type(x).__module__.startswith("numba.cuda"):
            return x
        if hasattr(x, "__cuda_array_interface__"):
            return cuda.as_cuda_array(x)
        return x
    x = np.ascontiguousarray(x, dtype) if dtype is not None else np.ascontiguousarray(host_flags(x))
    return cuda.to_device(x)


def gpae_cuda(rewards, values, dones, logp_target, logp_behaviour, *, gamma: float, lam: float,
              correction: str = "dt", eta: float = 1.02, mask=None, out=None) -> GPAEOutput:
    """GPAE on the GPU; the contract of ``gpae_ref.reference.gpae``, no validation.

    Call it through ``gpae_ref.gpae(..., backend="cuda")``, which validates
    first. Computes in ``gpae_ref.corrections.compute_dtype(logp_target)``
    (float32 or float64). Host inputs are copied to the device, converted to
    that dtype, and the outputs copied back (NumPy arrays, into ``out`` when
    given); device inputs are used in place (their own dtypes) and the outputs
    stay on the device (Numba device arrays; ``gpae_ref.gpae`` returns them as
    the input's kind).
    """
    dt = compute_dtype(logp_target)
    device_out = is_device_array(logp_target)
    lt = _to_device(logp_target, dt)
    T, B, N = lt.shape
    lb = _to_device(logp_behaviour, dt)
    r = _to_device(rewards, dt)
    v = _to_device(values, dt)
    shared = len(v.shape) == 2
    if shared:
        v = v.reshape(T + 1, B, 1)  # one kernel signature for both layouts
    d = _to_device(dones)
    has_mask = mask is not None
    m = _to_device(mask) if has_mask else cuda.to_device(np.ones((1, 1, 1), np.bool_))
    adv = cuda.device_array((T, B, N), dt)
    vt = cuda.device_array((T, B, N), dt)
    f = dt.type
    blocks, threads = launch_config(B * N)
    _gpae_kernel[blocks, threads](
        r, v, d, lt, lb, m, has_mask, shared, CORRECTION_CODES[correction],
        f(0), f(1), f(gamma), f(gamma) * f(lam), f(math.log(eta)),
        f(math.log(np.finfo(dt).max)), f(np.inf), adv, vt,
    )
    if device_out:
        return GPAEOutput(adv, vt)
    if out is not None:
        adv.copy_to_host(out[0])
        vt.copy_to_host(out[1])
        return GPAEOutput(*out)
    return GPAEOutput(adv.copy_to_host(), vt.copy_to_host())
