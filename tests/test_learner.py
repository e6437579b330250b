"""The SMAX learner: tiny end-to-end runs through the CLI, resume, critic input, masks, bad input.

Each CLI run compiles the whole update (~20 s on 2 CPU cores), so runs are few
and each checks several things.
"""

from __future__ import annotations

import csv
import json
import math

import pytest

pytest.importorskip("jaxmarl")
pytestmark = pytest.mark.smax

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from gpae_ref.learner.config import LearnerConfig  # noqa: E402
from gpae_ref.learner.networks import critic_action_input  # noqa: E402
from gpae_ref.train import main  # noqa: E402

# 4 envs x 8 steps = 32 env steps per update; 4 updates.
TINY = ["--scenario", "3m", "--num-envs", "4", "--num-steps", "8", "--epochs", "1", "--total-steps", "128",
        "--eval-envs", "2", "--eval-every", "2", "--checkpoint-every", "2", "--chunk", "2", "--no-progress"]
LOSS_COLUMNS = ("actor_loss", "value_loss", "entropy", "approx_kl")


def _rows(run_dir):
    with (run_dir / "metrics.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def _check_run(run_dir, updates, evals):
    rows = _rows(run_dir)
    assert [int(r["update"]) for r in rows] == list(range(1, updates + 1))
    for r in rows:
        for c in LOSS_COLUMNS:
            assert math.isfinite(float(r[c])), (c, r[c])
    assert (run_dir / "ckpt" / "state.safetensors").stat().st_size > 0
    assert (run_dir / "resume.safetensors.xz").stat().st_size > 0
    assert (run_dir / "run.json").exists() and (run_dir / "curve.png").exists()
    assert sum(r["eval_win_rate"] != "" for r in rows) == evals
    return rows


def test_gae_run(tmp_path):
    """MAPPO at JaxMARL's settings (--settings jaxmarl: a dense layer after the GRU, no LayerNorm)."""
    # --eval-every 0: no evaluation (its compilation would double this test's time)
    assert main(["--settings", "jaxmarl"] + TINY + ["--eval-every", "0", "--runs-dir", str(tmp_path),
                                                    "--name", "gae"]) == 0
    _check_run(tmp_path / "gae", 4, evals=0)
    learner = json.loads((tmp_path / "gae" / "run.json").read_text())["config"]
    assert (learner["advantage"], learner["head_layers"], learner["layer_norm"], learner["num_minibatches"]) == \
        ("gae", 1, False, 4)


def test_head_layers_add_one_dense_layer_after_the_gru():
    from gpae_ref.learner.networks import Actor, QCritic, StateCritic

    T, B, N, A, H = 3, 2, 2, 5, 8
    obs, resets = jnp.ones((T, B, 7)), jnp.zeros((T, B), bool)
    carry = jnp.zeros((B, H))
    for head in (0, 1, 2):
        nets = {Actor(num_actions=A, hidden=H, layers=1, head_layers=head): (obs, resets, jnp.ones((T, B, A))),
                StateCritic(hidden=H, layers=1, head_layers=head): (obs, resets),
                QCritic(hidden=H, layers=2, head_layers=head): (obs, resets, jnp.ones((T, B, N * A)))}
        for net, args in nets.items():  # shapes only (eval_shape): nothing is compiled
            params = jax.eval_shape(lambda: net.init(jax.random.PRNGKey(0), carry, *args))
            dense = [k for k in params["params"] if k.startswith("Dense")]
            assert dense == sorted(dense, key=lambda k: int(k.split("_")[1]))
            assert params["params"][dense[-1]]["kernel"].shape == (H, A if type(net) is Actor else 1)
            out = jax.eval_shape(lambda: net.apply(net.init(jax.random.PRNGKey(0), carry, *args), carry, *args))[1]
            assert out.shape[:2] == (T, B)
            base = {Actor: 2, StateCritic: 2, QCritic: 4}[type(net)]  # input layers + output layer
            assert len(dense) == base + head, (type(net).__name__, head, dense)


def test_coma_run_with_reuse(tmp_path):
    """COMA critic with K = 2 kept rollouts marginalised with the behaviour policy (the authors' variant)."""
    args = TINY + ["--advantage", "coma", "--reuse", "2", "--marginalise", "behaviour", "--total-steps", "64",
                   "--eval-every", "0"]
    assert main(args + ["--runs-dir", str(tmp_path), "--name", "coma"]) == 0
    rows = _check_run(tmp_path / "coma", 4, evals=0)  # 2 envs per rollout: 16 new env steps per update
    assert [int(r["env_steps"]) for r in rows] == [32, 48, 64, 80]  # incl. the K-1 = 1 prefill rollout
    # The older rollout was collected by the previous policy: its ratios are no longer all 1.
    assert any(float(r["own_ratio_max"]) != 1.0 for r in rows)


def test_gpae_run_resume_and_on_policy_traces(tmp_path):
    """Stop after 2 updates, fake a row written after the checkpoint, resume: rows 1..4 once each,
    equal to an uninterrupted run's.

    Also on-policy (K = 1): every ratio and every DT-ISR trace is exactly 1.
    """
    args = TINY + ["--advantage", "gpae", "--correction", "dt", "--runs-dir", str(tmp_path), "--name", "g"]
    run = tmp_path / "g"
    trainers = {}  # the resumed run reuses the first call's compiled functions
    assert main(args + ["--max-updates", "2"], trainers=trainers) == 0
    rows = _rows(run)
    assert [int(r["update"]) for r in rows] == [1, 2]
    with (run / "metrics.csv").open("a", newline="") as f:  # as if killed after writing update 3
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writerow({**rows[-1], "update": 3})
    assert main(["--resume", str(run), "--no-progress"], trainers=trainers) == 0
    rows = _check_run(run, 4, evals=2)
    # Same numbers as an uninterrupted run (same compiled functions: no extra compilation).
    assert main(args[:-1] + ["straight"], trainers=trainers) == 0
    straight = _rows(tmp_path / "straight")
    for col in LOSS_COLUMNS + ("train_win_rate", "eval_win_rate", "env_steps"):
        assert [r[col] for r in rows] == [r[col] for r in straight], col
    for r in rows:
        assert float(r["trace_mean"]) == 1.0 and float(r["trace_truncated"]) == 0.0
        assert float(r["own_ratio_max"]) == 1.0 and float(r["others_ratio_max"]) == 1.0
        assert float(r["own_ratio_mean"]) == 1.0


def test_critic_input_is_the_probability_mix_of_one_hot_inputs():
    """x_i(pi^i) = sum_a pi^i(a) x_i(onehot(a)), so any first (affine) layer sees the same mix."""
    key = jax.random.PRNGKey(0)
    n, a = 3, 5
    actions = jax.random.randint(key, (7, n), 0, a)
    probs = jax.nn.softmax(jax.random.normal(jax.random.PRNGKey(1), (7, n, a)))
    x = critic_action_input(actions, probs)  # [7, N, N*A]
    assert x.shape == (7, n, n * a)
    w = jax.random.normal(jax.random.PRNGKey(2), (n * a, 4))
    for i in range(n):
        # x_i(onehot(k)): row i of the input built with agent i's action set to k and one-hot "probabilities"
        onehots = [critic_action_input(actions.at[:, i].set(k), jax.nn.one_hot(actions.at[:, i].set(k), a))[:, i]
                   for k in range(a)]
        mix = sum(probs[:, i, k, None] * onehots[k] for k in range(a))
        np.testing.assert_allclose(x[:, i], mix, atol=1e-6)
        np.testing.assert_allclose(x[:, i] @ w, mix @ w, atol=1e-5)
        # other agents' slots stay one-hot
        for j in range(n):
            if j != i:
                np.testing.assert_array_equal(x[:, i, j * a:(j + 1) * a], jax.nn.one_hot(actions[:, j], a))
        np.testing.assert_allclose(x[:, i, i * a:(i + 1) * a], probs[:, i], atol=0)


def test_avail_mask_matches_jaxmarl():
    from gpae_ref.learner.env import SmaxEnv

    env = SmaxEnv("2s3z")
    b = 8
    _, state = env.reset(jax.random.PRNGKey(0), b)

    @jax.jit
    def play(state, key):
        def step(state, k):
            k1, k2 = jax.random.split(k)
            act = jax.random.randint(k1, (b, env.spec.num_agents), 0, env.spec.num_actions)
            _, state, _ = env.step(k2, state, act)
            return state, (jax.vmap(env.avail_actions)(state), jax.vmap(env.reference_avail_actions)(state))

        return jax.lax.scan(step, state, jax.random.split(key, 120))[1]

    ours, ref = play(state, jax.random.PRNGKey(1))
    np.testing.assert_array_equal(ours, ref)
    assert float(ours[..., 6:].mean()) > 0.0  # some attacks were available


@pytest.mark.parametrize("flag,value", [("--scenario", "4m_vs_nothing"), ("--advantage", "vtrace"),
                                        ("--correction", "dtx")])
def test_bad_cli_input_names_the_option(flag, value, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main([flag, value, "--runs-dir", str(tmp_path)])
    assert e.value.code == 2
    assert flag in capsys.readouterr().err


def test_bad_config_names_the_field():
    with pytest.raises(ValueError, match="advantage"):
        LearnerConfig(advantage="vtrace")
    with pytest.raises(ValueError, match="num_envs"):
        LearnerConfig(num_envs=6, reuse=4)
    with pytest.raises(ValueError, match="marginalise"):
        LearnerConfig(marginalise="future")
    with pytest.raises(ValueError, match="head_layers"):
        LearnerConfig(head_layers=-1)


def test_wrapper_update_and_greedy_evaluation_on_the_installed_smax():
    """Runs on whichever SMAX is installed (jaxmarl 0.2.0 in .venv, the authors' 0.0.7 in
    .venv-authors via `make test-authors`): the wrapper's shapes, one update, one evaluation."""
    import dataclasses

    from gpae_ref.learner.core import make_train
    from gpae_ref.learner.env import SmaxEnv, smax_version

    assert smax_version() not in ("", "unknown")
    spec = SmaxEnv("5m_vs_6m").spec
    assert (spec.num_agents, spec.obs_dim, spec.state_dim, spec.num_actions) == (5, 140, 137, 11)
    cfg = LearnerConfig(scenario="3m", num_envs=2, num_steps=4, update_epochs=1, hidden_size=8, num_layers=1,
                        eval_envs=2, total_steps=8)
    cfg = dataclasses.replace(cfg, advantage="gpae")
    tr = make_train(cfg)
    state, m = tr.run_updates(tr.init(jax.random.PRNGKey(0)), 1)
    assert int(state.update) == 1 and np.isfinite(np.asarray(m.actor_loss)).all()
    ev = tr.evaluate(state)
    assert 0.0 <= float(ev.win_rate) <= 1.0 and float(ev.episodes) >= 0
