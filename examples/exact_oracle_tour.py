"""A tour of the exact oracle (``gpae_ref.oracle``) on a cooperative Markov game you can edit.

Shows: building a game from reward and transition tables; the exact values V^pi,
Q^pi, the per-agent values EQ^{pi,i}(s, a^-i) and advantages A^{pi,i}(s, a) (and
the identity sum_{a^i} pi^i A^{pi,i} = 0); then, with data from an older
behaviour policy mu != pi, for each trace correction: the exact bias of GPAE's
expected advantage (linear algebra, no sampling), the per-agent operator's
contraction modulus next to the P4 bound, and how far its fixed point is from
EQ^{pi,i} (``full``, untruncated, can have a modulus > 1: with these tables it does).
On-policy (mu = pi) every bias is 0 and every modulus is
gamma (1 - lam) / (1 - gamma lam) (P1, P3). ``make oracle`` prints such a
table for a random 3-agent game; change the tables below and rerun.

    python examples/exact_oracle_tour.py

Prints the per-agent advantages in each state and a table with one row per
correction. Under a second on 2 CPU cores.
"""

import numpy as np

from gpae_ref import oracle


def coordination_game(gamma=0.9):
    """2 states x 2 agents x 2 actions: matching actions pays and keeps the team in the good state 0."""
    S, n_actions = 2, (2, 2)
    rewards, transitions = np.zeros((S, 4)), np.zeros((S, 4, S))
    for a in range(4):
        a0, a1 = divmod(a, 2)                       # joint index a = a0 * K1 + a1 (game.joint_index)
        match = a0 == a1
        rewards[0, a] = 1.0 if match else -0.5      # state 0: coordinate
        rewards[1, a] = 0.2 if a0 == a1 == 1 else 0.0  # state 1: a small reward for (1, 1)
        p_good = 0.9 if match else 0.2
        transitions[:, a] = [p_good, 1.0 - p_good]  # rows may sum to < 1: the rest ends the episode
    return oracle.Game(rewards, transitions, n_actions, gamma)


def policies():
    """Target pi (being improved) and an older, more exploratory behaviour mu: per-agent [S, K] tables."""
    pi = (np.array([[0.8, 0.2], [0.3, 0.7]]), np.array([[0.7, 0.3], [0.2, 0.8]]))
    mu = (np.array([[0.5, 0.5], [0.5, 0.5]]), np.array([[0.4, 0.6], [0.6, 0.4]]))
    return pi, mu


def correction_rows(game, pi, mu, lam, eta):
    """Per correction: exact bias, operator modulus (max over agents), P4 bound, fixed-point distance."""
    EQ = oracle.per_agent_values(game, pi)          # [S, A, N], EQ^{pi,i}(s, a^-i) lifted to joint actions
    adv = oracle.per_agent_advantages(game, pi)     # [S, A, N], A^{pi,i}(s, a)
    rows = []
    for correction in oracle.CORRECTIONS:
        # E_mu[A^i_0 | s_0, a_0] with the ideal values and an infinite horizon: what the estimator aims at
        G = oracle.expected_advantage(game, pi, mu, EQ, lam=lam, correction=correction, eta=eta)
        moduli, bounds, dists = [], [], []
        for i in range(game.n_agents):
            op = oracle.operator(game, pi, mu, i, lam=lam, correction=correction, eta=eta)
            moduli.append(op.modulus)
            bounds.append(oracle.off_policy_modulus_bound(game, pi, mu, i))
            if np.abs(np.linalg.eigvals(op.matrix)).max() < 1:  # iterating T^i converges
                target = oracle.reduce_others(game, EQ[:, :, i], i)  # EQ^{pi,i} on [S, A^-i]
                dists.append(float(np.abs(op.fixed_point() - target).max()))
            else:
                dists.append(float("inf"))
        rows.append(dict(correction=correction, bias=float(np.abs(G - adv).max()), modulus=max(moduli),
                         bound=max(bounds), fixed_point=max(dists)))
    return rows


def main(gamma=0.9, lam=0.95, eta=1.02):
    """Print the tour; return (per-agent advantages [S, A, N], off-policy rows, on-policy rows)."""
    game = coordination_game(gamma)
    pi, mu = policies()
    print(f"V^pi = {oracle.state_values(game, pi).round(4)}")
    adv = oracle.per_agent_advantages(game, pi)
    for s in range(game.n_states):
        print(f"state {s}: A^{{pi,i}}(s, a) per joint action (a0, a1) and agent i:")
        for a in range(game.n_joint):
            print(f"  {game.actions_of(a)}: {adv[s, a].round(4)}")
    # P5: each agent's advantage averages to 0 under its own policy, for every a^-i
    for i in range(game.n_agents):
        weights = pi[i][:, game.action_table[:, i]]  # pi^i(a^i | s) for every joint action
        sums = np.stack([np.bincount(oracle.others_index(game, i), weights[s] * adv[s, :, i],
                                      minlength=oracle.n_others(game, i))
                         for s in range(game.n_states)])
        assert np.abs(sums).max() < 1e-12
    off = correction_rows(game, pi, mu, lam, eta)
    on = correction_rows(game, pi, pi, lam, eta)
    print(f"\ngamma={gamma} lam={lam} eta={eta}; on-policy modulus (P3) {oracle.on_policy_modulus(gamma, lam):.4f}")
    print(f"{'':<10} {'off-policy (mu != pi)':^37}   {'on-policy':^16}")
    print(f"{'correction':<10} {'bias':>8} {'modulus':>8} {'P4 bound':>9} {'fixed pt':>9}   {'bias':>7} {'modulus':>8}")
    for r, o in zip(off, on):
        bound = f"{r['bound']:.4f}" if r["correction"] != "full" else "-"  # P4 is for c <= 1; full's c is rho
        print(f"{r['correction']:<10} {r['bias']:>8.4f} {r['modulus']:>8.4f} {bound:>9} "
              f"{r['fixed_point']:>9.4f}   {o['bias']:>7.1e} {o['modulus']:>8.4f}")
    return adv, off, on


if __name__ == "__main__":
    main()
