"""Several devices and hosts through JAX's own sharding (GSPMD): no transport of our own.

Two ways to spread a run, both by placing the state on a one-axis mesh and
letting ``jax.jit`` partition the unchanged program:

- **seeds** (the experiment runner): the vmapped state's leading seed axis is
  split over the devices; every seed's program runs on one device, nothing
  crosses devices but the gather at a checkpoint.
- **envs** (``train --devices N``): every leaf with an environment axis (env
  states, observations, GRU carries, the rollout buffer) is split along it;
  networks, optimiser states, keys and counters are replicated. The update is
  the one-device update: XLA inserts the all-reduces for the losses' means, so
  gradients and the advantage normalisation statistics are over all envs, up
  to float summation order.

Results equal the one-device run up to float rounding, not bit for bit: XLA
compiles each device's share (a batch of S/D seeds, or B/D envs) as its own
program, and a program of another batch size rounds differently; on one
device seed 0 alone and seed 0 beside three others already differ in the last
bits (docs/learner.md, "Several devices").

Several hosts: ``initialize_distributed`` calls ``jax.distributed.initialize``
(flags or JAX's environment variables); ``jax.devices()`` then lists every
host's devices, each process feeds and runs its own, and only process 0
writes files (``is_writer``). Checkpoints are gathered to the host
(``host_state``) and loaded onto whatever mesh the resuming run has, so a
state saved on 4 devices resumes on 1 and the reverse.
"""

from __future__ import annotations

import numpy as np

AXIS = "d"


def visible_devices() -> list:
    import jax

    return list(jax.devices())


def pick_devices(requested: int | None, divides: int, what: str, flag: str = "--devices") -> list:
    """The first ``requested`` devices (default: as many as divide ``divides`` evenly, at most all).

    ``ValueError`` naming ``flag`` for 0, more than visible, or a count that does not divide
    ``divides`` (the number of ``what``: seeds or envs per rollout).
    """
    devices = visible_devices()
    if requested is None:
        n = max(d for d in range(1, len(devices) + 1) if divides % d == 0)
        return devices[:n]
    if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
        raise ValueError(f"{flag}: must be an integer >= 1; got {requested!r}.")
    if requested > len(devices):
        raise ValueError(f"{flag}: {requested} devices asked for, {len(devices)} visible "
                         f"({devices[0].platform}); pass at most {len(devices)}.")
    if divides % requested:
        fits = [d for d in range(1, len(devices) + 1) if divides % d == 0]
        raise ValueError(f"{flag}: {divides} {what} do not split evenly over {requested} devices; pass one of "
                         f"{fits} (a divisor of {divides}), or change the number of {what}.")
    return devices[:requested]


def make_mesh(devices):
    """A one-axis mesh (axis ``d``) over ``devices``, automatic sharding propagation.

    JAX before 0.5 (the authors' SMAX venv has 0.4.38) has no ``AxisType``; its meshes
    are automatic already, so the argument is only passed where it exists.
    """
    import jax

    axis_type = getattr(jax.sharding, "AxisType", None)
    if axis_type is None:
        return jax.sharding.Mesh(np.array(devices), (AXIS,))
    return jax.sharding.Mesh(np.array(devices), (AXIS,), axis_types=(axis_type.Auto,))


def _spec(ndim: int, axis: int | None):
    from jax.sharding import PartitionSpec

    if axis is None:
        return PartitionSpec()
    return PartitionSpec(*([None] * axis + [AXIS]))


def leading_axis_shardings(mesh, state):
    """Every leaf split along its leading axis (the runner's seed axis)."""
    import jax
    from jax.sharding import NamedSharding

    return jax.tree_util.tree_map(lambda x: NamedSharding(mesh, _spec(np.ndim(x), 0)), state)


def env_axes(shape_at, envs: int):
    """Per leaf of the state: the axis that holds the environments, or None (replicated).

    ``shape_at(b)`` is the state's ``jax.eval_shape`` with ``b`` envs per rollout; the env
    axis is the one that changes between ``envs`` and ``2 * envs`` (read, not guessed from names).
    """
    import jax

    def axis(a, b):
        changed = [i for i, (x, y) in enumerate(zip(a.shape, b.shape)) if x != y]
        if len(changed) > 1:
            raise ValueError(f"devices: a state leaf of shape {a.shape} changes in {len(changed)} axes with "
                             f"the number of envs; cannot split it.")
        return changed[0] if changed else None

    return jax.tree_util.tree_map(axis, shape_at(envs), shape_at(2 * envs))


def env_shardings(mesh, axes):
    """NamedShardings from ``env_axes``: the env axis split over the mesh, every other leaf replicated."""
    import jax
    from jax.sharding import NamedSharding

    return jax.tree_util.tree_map(lambda a: NamedSharding(mesh, _spec(a + 1 if a is not None else 0, a)),
                                  axes, is_leaf=lambda a: a is None or isinstance(a, int))


def place(state, shardings):
    """``state`` on ``shardings``, each device given its slice of the host copy (every process holds
    the same host state: from the same key, or the same file), so it works on one host or several."""
    import jax

    def put(x, sharding):
        host = np.asarray(jax.device_get(x))
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree_util.tree_map(put, state, shardings)


def host_state(state):
    """Every leaf as a host NumPy array (gathered from all devices and, with several hosts,
    all processes: every process must call this at the same point)."""
    import jax

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return multihost_utils.process_allgather(state, tiled=True)
    return jax.device_get(state)


def is_writer() -> bool:
    """Only process 0 writes run files (CSV rows, run.json, checkpoints)."""
    import jax

    return jax.process_index() == 0


def initialize_distributed(coordinator: str | None, num_processes: int | None, process_id: int | None) -> None:
    """``jax.distributed.initialize`` from flags, or from JAX's own environment variables when none
    are given (``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``, or a
    cluster JAX detects, e.g. SLURM). On CPU the cross-process collectives are gloo's."""
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # used by the CPU backend only
    kwargs = {k: v for k, v in (("coordinator_address", coordinator), ("num_processes", num_processes),
                                ("process_id", process_id)) if v is not None}
    jax.distributed.initialize(**kwargs)

