"""Named, versioned SMAX experiments: S seeds as one vmapped program, resumable, one CSV per seed.

    python -m gpae_ref.experiments --list
    python -m gpae_ref.experiments pilot                 # --scale local (default): this CPU machine
    python -m gpae_ref.experiments main --scale paper    # the paper's 1e7 steps, 5 seeds (a GPU machine)
    python -m gpae_ref.experiments report                # docs/results.md tables + docs/figures/*.png

Layout (``<exp>`` is the experiment name at ``--scale local``, ``<name>-<scale>`` otherwise)::

    results/<exp>/<variant>/run.json           config, seeds, experiment version, machine, resumes
    results/<exp>/<variant>/seed<k>.csv        one row per update (the learner's logbook columns)
    results/<exp>/<variant>/resume.safetensors.xz    compact resume state (small: committed)
    results/<exp>/<variant>/ckpt/state.safetensors   vmapped LearnerState (large: ignored by git)
    docs/figures/<exp>.png

A variant folder is a run folder (``gpae_ref.learner.runfolder``): the same
record, states and lock as ``python -m gpae_ref.train``'s.

A finished variant is skipped (nothing is compiled or trained); a partial one
resumes from its full checkpoint, or on a fresh clone from its committed compact
state, dropping CSV rows written after it, so a long experiment can run in
several sittings on several machines. Each seed ``k`` starts from
``jax.random.PRNGKey(k)``, as ``python -m gpae_ref.train --seed k`` does.
Experiments share settings on purpose (ablation ``dt``, eta ``1.02`` and
reuse ``gpae-K2`` are main's ``gpae-K2``): a variant whose whole learner
config, seeds and evaluation schedule equal a finished run elsewhere under the
results folder copies that run's CSVs instead of training it again, and its
run.json names the origin (``copied_from``).
"""

from gpae_ref.experiments.cli import build_parser, describe, main
from gpae_ref.experiments.definitions import (AUTHORS_SMAX, LOCAL_BASE, LOCAL_SEEDS, PAPER, PAPER_ABLATION,
                                              PAPER_GPAE, PAPER_HARD, PAPER_MAPPO, PAPER_SEEDS, PAPER_STEPS,
                                              REUSE_K, SCALES, TINY, Experiment, Scale, Variant, eval_every,
                                              exp_dirname, experiments, get_experiment, select_seeds,
                                              select_variants, variant_config)
from gpae_ref.experiments.report import (Curve, command_for, experiment_curves, experiment_table, load_curve,
                                         plot_experiment, report, report_section, splice, steps_to, trace_table,
                                         train_curve_table)
from gpae_ref.experiments.runner import (VariantOutcome, check_scale_smax, copied_from, copy_twin, eval_updates,
                                         find_twin, is_finished, last_update, machine_info, make_vmapped,
                                         record_smax, run_experiment, run_variant, same_config, seed_csv,
                                         seed_keys, train_commands, variant_folder)

__all__ = [name for name in dir() if not name.startswith("_")]
