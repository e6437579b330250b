"""Numba CPU kernel of GPAE: one fused backward pass, parallel over blocks of environments.

The math is the reference's (``gpae_ref.reference.gpae``, spec sections 3-5)::

    A^i_t = delta^i_t + gamma lam (1 - d_t) c^i_{t+1} A^i_{t+1},   A^i_T = 0
    v^i_t = E^i_t + min(1, rho^i_t) A^i_t

Layout and why: arrays are time-major ``[T, B, N]`` in C order, so at one step
``t`` a block of environments ``b0:b1`` is one contiguous run of ``(b1-b0)*N``
numbers. Each parallel task owns such a block and walks time backwards; per
step it (1) forms the own log-ratios in one flat loop, (2) per environment,
their sum (the joint log-ratio; the others' is that sum minus the own) and,
in a flat loop over the block's environments, the joint factor of the trace
coefficient, (3) broadcasts the joint factor and r_t to the agents
(``_broadcast``: inner loops of constant width 8 or 4 when N allows, which
become vector stores), then (4) runs one flat, vectorised loop over the
contiguous run: min(1, rho^i) (one exp per element), the coefficient and the
recursion, with the correction chosen outside the loop (a branch inside stops
vectorisation). That loop treats every environment as not done; the few
environments done at ``t`` are then redone in a scalar loop with the cut
(same arithmetic as the reference's select, so results are unchanged). The
carry between steps is c_{t+1} A_{t+1}, one row; E_t and E_{t+1} are read from
``values`` directly (per-agent) or broadcast (shared). A loop over one
agent's column (stride N), or over the N agents of one environment at runtime
N (too short), does not vectorise and is several times slower. The only
``[T, B, N]`` arrays are the outputs; scratch is a few block rows.

Each step is a plain ``@njit`` function: Numba links them into the kernel's LLVM
module, where LLVM inlines them and folds the constant correction code of each
``_recursion`` call. Only ``_gpae_blocks`` is inlined by Numba itself
(``inline="always"``), because its ``prange`` must sit in the parallel driver.
Inlining the steps at Numba's level too made a cold compile about 3.4x slower (59 s
against 17 s for the serial and parallel kernels of one dtype, 2 busy cores) and the
kernel no faster (``benchmarks/bench_estimators.py --numba-against REV``).

There is no vectorised libm here (no SVML): float32 uses ``_exp_nonpos``, a
branch-free Cephes-style expf that LLVM vectorises, wherever the argument is
<= 0 (every truncated coefficient and min(1, rho^i)); ``full`` (untruncated,
may overflow to inf by design) and all of float64 use ``math.exp``.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic, overload

from gpae_ref.dtypes import compute_dtype, host_flags
from gpae_ref.validation import limits
from gpae_ref.kernels._common import CORRECTION_CODES, DT, FULL, IT, NONE, ST
from gpae_ref.reference import GPAEOutput

#: dt with eta < 1: needs a second exp per element (see _gpae_blocks); a code no table row uses.
_DT_SMALL_ETA = max(CORRECTION_CODES.values()) + 1

#: Below this many elements (T*B*N) the kernel runs on the calling thread: waking
#: Numba's threads costs more than it saves there (milliseconds on a busy machine).
PARALLEL_MIN_ELEMENTS = 1 << 18

#: Target size of one block's contiguous run at one step, in elements: the
#: per-block scratch (four to six such rows, 128-192 KB in float32) then stays in
#: L2. Longer runs per step are kinder to the hardware prefetcher (each step jumps
#: a whole [B, N] row back): 8192 ran ~12% faster than 2048 at B = 8192 here.
_BLOCK_ELEMENTS = 8192

# Bound of _exp_nonpos_f32, checked in tests/test_backends.py against float64 exp:
# relative error <= EXP_F32_MAX_ULP units in the last place for x in [_EXP_F32_MIN_X, 0];
# for x < _EXP_F32_MIN_X it returns 0 (absolute error < 1.2e-38: denormals are dropped).
EXP_F32_MAX_ULP = 2
_EXP_F32_MIN_X = -87.33  # exp(-87.33) ~ 1.2e-38, just above the smallest normal float32


def _exp_nonpos(x):
    """exp(x) for x <= 0: float32 vectorisable (error: the module constants), float64 math.exp."""
    return math.exp(x)  # the Python fallback; Numba compiles the overload below


@intrinsic
def _f32_from_bits(typingctx, bits):
    """Reinterpret the low 32 bits of an integer as a float32 (a bitcast, vectorisable)."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        (value,) = args
        if value.type.width > 32:
            value = builder.trunc(value, ir.IntType(32))
        return builder.bitcast(value, ir.FloatType())

    return types.float32(bits), codegen


@overload(_exp_nonpos)
def _exp_nonpos_impl(x):
    if x == types.float64:
        return lambda x: math.exp(x)
    if x != types.float32:
        return None
    f = np.float32
    log2e, ln2_hi, ln2_lo = f(1.44269504088896341), f(0.693359375), f(-2.12194440e-4)
    p0, p1, p2 = f(1.9875691500e-4), f(1.3981999507e-3), f(8.3334519073e-3)
    p3, p4, p5 = f(4.1665795894e-2), f(1.6666665459e-1), f(5.0000001201e-1)
    lo, half, one, zero = f(_EXP_F32_MIN_X), f(0.5), f(1.0), f(0.0)

    def impl(x):
        xc = max(x, lo)
        # Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2, then e^r by Cephes' polynomial.
        n = np.floor(xc * log2e + half)  # a float: math.floor would give int64 and promote to float64
        r = xc - n * ln2_hi - n * ln2_lo
        y = ((((p0 * r + p1) * r + p2) * r + p3) * r + p4) * r + p5
        y = y * r * r + r + one
        scale = _f32_from_bits((np.int32(n) + np.int32(127)) << np.int32(23))  # 2^n
        return y * scale if x >= lo else zero

    return impl


@njit
def _broadcast(src, dst, nb, N):
    """dst[e*N + i] = src[e]: inner loops of a constant width where N allows (vector stores)."""
    if N % 8 == 0:
        for e in range(nb):
            v = src[e]
            for k in range(0, N, 8):
                for i in range(8):
                    dst[e * N + k + i] = v
    elif N % 4 == 0:
        for e in range(nb):
            v = src[e]
            for k in range(0, N, 4):
                for i in range(4):
                    dst[e * N + k + i] = v
    else:
        for e in range(nb):
            v = src[e]
            for i in range(N):
                dst[e * N + i] = v


@njit
def _coefficients(code, li, pv, zero, one, eta, log_eta):
    """(min(1, rho^i), c^i) from the own log-ratio li and the joint factor pv."""
    w = _exp_nonpos(min(zero, li))
    if code == NONE:
        c = one
    elif code == IT:
        c = w
    elif code == ST or code == FULL:
        c = pv
    elif code == DT:
        c = min(eta * w, pv)
    else:
        c = min(_exp_nonpos(min(zero, li + log_eta)), pv)
    return w, c


@njit
def _recursion(code, m, l, pjb, rwb, v_c, v_n, ca, adv_t, vt_t, zero, one, gamma, gamma_lam,
               eta, log_eta):
    """One step over a block's run, every element as if not done (1 - d_t = 1); vectorised.

    ``gamma * one * v_n[j]`` is the reference's gamma (1 - d_t) E_{t+1} with 1 - d_t = 1
    (bitwise gamma * v_n[j]); the done environments are redone by the caller.
    """
    for j in range(m):
        w, c = _coefficients(code, l[j], pjb[j], zero, one, eta, log_eta)
        ec = v_c[j]
        delta = rwb[j] + gamma * one * v_n[j] - ec
        a = delta + gamma_lam * ca[j]
        adv_t[j] = a
        vt_t[j] = ec + w * a
        ca[j] = c * a


@njit
def _count_beyond(x, vmax):
    """How many of the 1-D ``x`` are NaN or beyond +-vmax (inf included)."""
    bad = 0
    for j in range(x.shape[0]):
        bad += not (abs(x[j]) <= vmax)
    return bad


@njit
def _count_not_binary(x):
    """How many of the 1-D ``x`` are neither 0 nor 1."""
    bad = 0
    for j in range(x.shape[0]):
        v = x[j]
        bad += not ((v == 0) | (v == 1))
    return bad


@njit
def _own_log_ratios(lt_t, lb_t, mask_t, has_mask, l, zero, lt_min, lb_min):
    """Step (1): l = lt - lb (0 where masked), flat; returns how many inputs are out of range.

    A log-prob is valid iff its minimum <= x <= 0 (false for NaN, +-inf); a mask entry
    iff 0 or 1. Row views: indexing the 2-D arrays directly, lt[t, j0 + j], stops LLVM
    from vectorising and runs ~3x slower.
    """
    nbad = 0
    if has_mask:
        for j in range(l.shape[0]):
            a, b, mk = lt_t[j], lb_t[j], mask_t[j]
            l[j] = a - b if mk != 0 else zero
            nbad += not ((a <= zero) & (a >= lt_min) & (b <= zero) & (b >= lb_min)
                         & ((mk == 0) | (mk == 1)))
    else:
        for j in range(l.shape[0]):
            a, b = lt_t[j], lb_t[j]
            l[j] = a - b
            nbad += not ((a <= zero) & (a >= lt_min) & (b <= zero) & (b >= lb_min))
    return nbad


@njit
def _joint_factors(code, l, pj, pjb, nb, N, zero):
    """Step (2): per environment the joint log-ratio (a sequential sum) and its factor
    (min(1, rho_t), or rho_t for full) into ``pj``, broadcast to the agents into ``pjb``."""
    for e in range(nb):
        # float64 even for float32 data: a float32 running sum over many agents with
        # large log-ratios of both signs loses digits (128 agents of |l| ~ 13: 3e-3)
        s = 0.0
        for i in range(N):
            s += l[e * N + i]
        pj[e] = s
    if code == FULL:
        for e in range(nb):
            pj[e] = math.exp(pj[e])
    else:
        for e in range(nb):
            pj[e] = _exp_nonpos(min(zero, pj[e]))
    _broadcast(pj, pjb, nb, N)


@njit
def _recursion_for(code, m, l, pjb, rwb, v_c, v_n, ca, adv_t, vt_t, zero, one, gamma, gamma_lam,
                   eta, log_eta):
    """Step (4): ``_recursion`` with a constant ``code`` in each call, so the correction's
    branch folds away inside the vectorised loop."""
    if code == NONE:
        _recursion(NONE, m, l, pjb, rwb, v_c, v_n, ca, adv_t, vt_t,
                   zero, one, gamma, gamma_lam, eta, log_eta)
    elif code == IT:
        _recursion(IT, m, l, pjb, rwb, v_c, v_n, ca, adv_t, vt_t,
                   zero, one, gamma, gamma_lam, eta, log_eta)
    elif code == ST:
        _recursion(ST, m, l, pjb, rwb, v_c, v_n, ca, adv_t, vt_t,
                   zero, one, gamma, gamma_lam, eta, log_eta)
    elif code == DT:
        _recursion(DT, m, l, pjb, rwb, v_c, v_n, ca, adv_t, vt_t,
                   zero, one, gamma, gamma_lam, eta, log_eta)
    elif code == FULL:
        _recursion(FULL, m, l, pjb, rwb, v_c, v_n, ca, adv_t, vt_t,
                   zero, one, gamma, gamma_lam, eta, log_eta)
    else:
        _recursion(_DT_SMALL_ETA, m, l, pjb, rwb, v_c, v_n, ca, adv_t, vt_t,
                   zero, one, gamma, gamma_lam, eta, log_eta)


@njit
def _redo_done(code, d_t, nb, N, l, pjb, rwb, v_c, v_n, ca, adv_t, vt_t, zero, one, gamma, gamma_lam,
               eta, log_eta):
    """Step (5): the environments done at t again, with the cut (1 - d_t = 0: no bootstrap,
    no trace; never inf * 0). The same expressions as ``_recursion`` with 1 - d_t in them,
    so results equal the reference's per-element select."""
    for e in range(nb):
        if d_t[e] != 0:
            for j in range(e * N, e * N + N):
                w, c = _coefficients(code, l[j], pjb[j], zero, one, eta, log_eta)
                ec = v_c[j]
                delta = rwb[j] + gamma * zero * v_n[j] - ec
                a = delta + gamma_lam * zero
                adv_t[j] = a
                vt_t[j] = ec + w * a
                ca[j] = c * a


@njit(inline="always")
def _gpae_blocks(rewards, values, dones, lt, lb, mask, has_mask, shared, code,
                 zero, one, gamma, gamma_lam, eta, log_eta, lt_min, lb_min, vmax, envs_per_block,
                 adv, vt, bad):
    """Fill ``adv`` and ``vt`` ([T, B*N], flattened) in place; see the module docstring.

    The content checks of ``gpae_ref.corrections.check_values`` are fused into the
    same pass: ``bad[blk]`` receives the number of elements of block ``blk`` that
    are not finite or outside their usable range (``gpae_ref.corrections.limits``:
    |rewards|, |values| <= vmax, logp_target in [lt_min, 0], logp_behaviour in
    [lb_min, 0]) or not 0/1 (dones, mask), at no extra memory traffic. The caller,
    on a nonzero count, runs ``check_values`` to name the argument and index.

    ``values`` is [T+1, B*N] or, when ``shared``, [T+1, B]; ``mask`` is [T, B*N]
    (a [T, 1] dummy unless ``has_mask``); ``code`` is CORRECTION_CODES[correction], or
    _DT_SMALL_ETA for dt with eta < 1. Scalars come in the compute dtype so no
    float64 literal promotes the float32 path.

    Trace coefficients use one exp per element (w = min(1, rho^i), needed for
    the value target anyway) plus one per environment (of the joint log-ratio):
    st = min(1, rho); full = rho; it = w; and, because
    rho^i min(eta, rho^-i) = min(eta rho^i, rho),
    dt = min(1, eta rho^i, rho) = min(eta w, min(1, rho)) when eta >= 1
    (for eta < 1, eta rho^i can be < 1 with rho^i > 1: one more exp).
    """
    T, BN = lt.shape
    B = rewards.shape[1]
    N = BN // B
    n_blocks = (B + envs_per_block - 1) // envs_per_block
    for blk in prange(n_blocks):
        b0 = blk * envs_per_block
        nb = min(B, b0 + envs_per_block) - b0
        m = nb * N
        j0 = b0 * N
        dt = adv.dtype
        l = np.empty(m, dt)  # own log-ratio l^i_t
        pjb = np.empty(m, dt)  # min(1, rho_t) (rho_t for full), broadcast to the agents
        rwb = np.empty(m, dt)  # r_t, broadcast to the agents
        evb = np.empty(m, dt)  # shared values only: E_t, broadcast
        enb = np.empty(m, dt)  # shared values only: E_{t+1}, broadcast
        ca = np.zeros(m, dt)  # c_{t+1} A_{t+1}; A_T = 0
        pj = np.empty(nb, dt)  # per environment: joint log-ratio, then its factor
        if shared:
            _broadcast(values[T, b0:b0 + nb], enb, nb, N)
            nbad = _count_beyond(values[T, b0:b0 + nb], vmax)
        else:
            nbad = _count_beyond(values[T, j0:j0 + m], vmax)
        for t in range(T - 1, -1, -1):
            d_t = dones[t, b0:b0 + nb]
            adv_t = adv[t, j0:j0 + m]
            vt_t = vt[t, j0:j0 + m]
            nbad += _own_log_ratios(lt[t, j0:j0 + m], lb[t, j0:j0 + m], mask[t, j0:j0 + m], has_mask, l,
                                    zero, lt_min, lb_min)
            nbad += _count_beyond(rewards[t, b0:b0 + nb], vmax) + _count_not_binary(d_t)
            if code != NONE and code != IT:  # (2) the joint log-ratio is needed
                _joint_factors(code, l, pj, pjb, nb, N, zero)
            # (3) per-environment numbers to per-element rows.
            _broadcast(rewards[t, b0:b0 + nb], rwb, nb, N)
            if shared:
                _broadcast(values[t, b0:b0 + nb], evb, nb, N)
                nbad += _count_beyond(values[t, b0:b0 + nb], vmax)
                v_c = evb
                v_n = enb
            else:
                v_c = values[t, j0:j0 + m]
                v_n = values[t + 1, j0:j0 + m]
            # (4) every element as if not done, then (5) the done environments again.
            _recursion_for(code, m, l, pjb, rwb, v_c, v_n, ca, adv_t, vt_t,
                           zero, one, gamma, gamma_lam, eta, log_eta)
            # The values row is checked in a loop of its own, while it is in cache: a
            # count inside the recursion loop stops LLVM from vectorising it.
            if not shared:
                nbad += _count_beyond(v_c, vmax)
            _redo_done(code, d_t, nb, N, l, pjb, rwb, v_c, v_n, ca, adv_t, vt_t,
                       zero, one, gamma, gamma_lam, eta, log_eta)
            if shared:
                evb, enb = enb, evb
        bad[blk] = nbad


@njit(parallel=True, cache=True)
def _gpae_parallel(rewards, values, dones, lt, lb, mask, has_mask, shared, code,
                   zero, one, gamma, gamma_lam, eta, log_eta, lt_min, lb_min, vmax, envs_per_block,
                 adv, vt, bad):
    """_gpae_blocks with its prange run on Numba's threads."""
    _gpae_blocks(rewards, values, dones, lt, lb, mask, has_mask, shared, code,
                 zero, one, gamma, gamma_lam, eta, log_eta, lt_min, lb_min, vmax, envs_per_block,
                 adv, vt, bad)


@njit(cache=True)
def _gpae_serial(rewards, values, dones, lt, lb, mask, has_mask, shared, code,
                 zero, one, gamma, gamma_lam, eta, log_eta, lt_min, lb_min, vmax, envs_per_block,
                 adv, vt, bad):
    """_gpae_blocks on the calling thread (its prange is a plain range here)."""
    _gpae_blocks(rewards, values, dones, lt, lb, mask, has_mask, shared, code,
                 zero, one, gamma, gamma_lam, eta, log_eta, lt_min, lb_min, vmax, envs_per_block,
                 adv, vt, bad)


def envs_per_block(B: int, N: int, threads: int) -> int:
    """Environments per parallel task: about _BLOCK_ELEMENTS per step, >= 2 tasks per thread."""
    per = max(1, _BLOCK_ELEMENTS // N)
    fair = max(1, -(-B // (2 * threads)))  # ceil(B / (2 threads))
    return min(per, fair)


def _flags(x):
    """``dones`` or ``mask`` for the kernel in one of three dtypes (uint8, float32, float64), so
    Numba compiles three flag variants, not one per integer width. One-byte arrays (bool,
    int8) are viewed as uint8: the same bits, so 0 and 1 stay 0 and 1 and nothing else
    becomes either. Wider integers become float64: no integer other than 0 or 1 converts to
    0.0 or 1.0, so the kernel's 0/1 check counts exactly the entries it did."""
    x = np.ascontiguousarray(host_flags(x))
    if x.dtype.itemsize == 1:
        return x.view(np.uint8)
    return x.astype(np.float64) if x.dtype.kind in "iu" else x


def run_numba(rewards, values, dones, logp_target, logp_behaviour, *, gamma: float, lam: float,
              correction: str = "dt", eta: float = 1.02, mask=None, out=None
              ) -> tuple[GPAEOutput, int]:
    """The kernel and its fused content check: (outputs, number of bad input elements).

    A nonzero count means some input is not finite or outside its usable range
    (``gpae_ref.corrections.limits``), a log-prob is > 0, or a done / mask entry is
    not 0/1 (counted after conversion to the compute dtype); the outputs are then
    meaningless. ``out`` is used as given (see
    ``gpae_ref.corrections.check_out`` for the checks the public call makes).
    """
    import numba

    dt = compute_dtype(logp_target)
    lt = np.ascontiguousarray(logp_target, dt)
    T, B, N = lt.shape
    lb = np.ascontiguousarray(logp_behaviour, dt).reshape(T, B * N)
    r = np.ascontiguousarray(rewards, dt)
    v = np.ascontiguousarray(values, dt)
    shared = v.ndim == 2
    v = v if shared else v.reshape(T + 1, B * N)
    d = _flags(dones)
    has_mask = mask is not None
    m = _flags(mask).reshape(T, B * N) if has_mask else np.ones((T, 1), np.uint8)
    if out is None:
        out = (np.empty((T, B, N), dt), np.empty((T, B, N), dt))
    adv, vt = (x.reshape(T, B * N) for x in out)
    f = dt.type
    code = CORRECTION_CODES[correction]
    code = _DT_SMALL_ETA if code == DT and eta < 1.0 else code
    per_block = envs_per_block(B, N, numba.get_num_threads())
    bad = np.zeros(-(-B // per_block), np.int64)
    kernel = _gpae_parallel if T * B * N >= PARALLEL_MIN_ELEMENTS else _gpae_serial
    lim = limits(dt, T)  # the usable ranges check_values applies, in the compute dtype
    kernel(r, v, d, lt.reshape(T, B * N), lb, m, has_mask, shared, code,
           f(0), f(1), f(gamma), f(gamma) * f(lam), f(eta), f(math.log(eta)),
           lim.target_min, lim.behaviour_min, lim.value_max,
           per_block, adv, vt, bad)
    return GPAEOutput(*out), int(bad.sum())


def gpae_numba(rewards, values, dones, logp_target, logp_behaviour, *, gamma: float, lam: float,
               correction: str = "dt", eta: float = 1.02, mask=None, out=None) -> GPAEOutput:
    """GPAE on the CPU with Numba; the contract of ``gpae_ref.reference.gpae``, no validation.

    Call it through ``gpae_ref.gpae(..., backend="numba")``, which validates
    (in this kernel's own pass) and reports bad input. Computes and returns in
    ``gpae_ref.corrections.compute_dtype(logp_target)`` (float32 or float64);
    other inputs are converted to it (a copy only when their dtype differs or
    they are not C-contiguous). ``dones`` and ``mask`` are read as they are when
    bool, one-byte, float32 or float64 (0 / nonzero), wider integers as float64. ``out``: optional (advantages, value_targets),
    C-contiguous ``[T, B, N]`` arrays of the compute dtype to write into (reuse
    buffers across calls instead of allocating, and page-faulting, new ones);
    checked here for shape, dtype and layout only.
    """
    if out is not None:
        dt = compute_dtype(logp_target)
        shape = tuple(logp_target.shape)
        for name, x in zip(("advantages", "value_targets"), out):
            if not (isinstance(x, np.ndarray) and x.shape == shape and x.dtype == dt
                    and x.flags.c_contiguous and x.flags.writeable):
                raise ValueError(f"out {name} must be a writeable C-contiguous {dt} array of "
                                 f"shape {shape}; got {type(x).__name__} "
                                 f"{getattr(x, 'dtype', '')} {getattr(x, 'shape', '')}.")
    return run_numba(rewards, values, dones, logp_target, logp_behaviour, gamma=gamma, lam=lam,
                     correction=correction, eta=eta, mask=mask, out=out)[0]
