# Two entry points, each sets up .venv (python3 + make are all it needs) and runs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo oracle test bench clean env-authors test-authors hard-authors env-authors-script side-by-side anchor-jaxmarl

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,smax]"
	rm -f $(VENV)/.installed-* && touch $(STAMP)

# The main job: train GPAE on SMAX 3m (about 5 minutes on 2 CPU cores), then
# print the final greedy win rate and where the curve is.
demo: $(STAMP)
	$(PY) -m gpae_ref.train --preset demo --overwrite

# The exact oracle's table of what each trace correction buys (seconds).
oracle: $(STAMP)
	$(PY) -m gpae_ref demo

# The test command (.ci/run calls this). One pytest-xdist worker per core, at most 4 (each holds
# its own jax and compiled tiny learners in memory), a test file per worker at a time.
test: $(STAMP)
	NUMBA_ENABLE_CUDASIM=1 $(PY) -m pytest -q -p no:cacheprovider --hypothesis-profile=ci -n auto --maxprocesses 4 --dist loadfile

# Benchmarks (not tests): estimator backends, then the learner. Results go to docs/.
bench: $(STAMP)
	$(PY) -m pip install --quiet -e ".[test,smax,bench]"
	$(PY) benchmarks/bench_estimators.py --write docs/performance.md
	$(PY) benchmarks/bench_learner.py

# The authors' SMAX (pip jaxmarl 0.0.7, the smax_env.py kim-seongmin/GPAE vendored) in a venv of its
# own: 0.0.7 pins brax 0.10.3, mujoco 3.1.3, scipy <= 1.12 and numpy 1.26, so it cannot share .venv
# (jaxmarl 0.2.0). jax 0.4.38 with flax 0.10.2 (0.10.4 fails inside nn.scan on that jax) and optax
# 0.2.5 (the learner needs optax.tree); gymnax imports six without declaring it. See docs/learner.md (SMAX versions).
AUTHORS_PYTHON ?= python3.11
AUTHORS_VENV   ?= .venv-authors
AUTHORS_PY     := $(AUTHORS_VENV)/bin/python
AUTHORS_PINS   := jaxmarl==0.0.7 jax==0.4.38 jaxlib==0.4.38 flax==0.10.2 optax==0.2.5 six rich matplotlib safetensors
AUTHORS_STAMP  := $(AUTHORS_VENV)/.installed-$(shell (cat pyproject.toml; echo $(AUTHORS_PINS)) | cksum | cut -d' ' -f1)

$(AUTHORS_STAMP): pyproject.toml
	test -x $(AUTHORS_PY) || $(AUTHORS_PYTHON) -m venv $(AUTHORS_VENV)
	$(AUTHORS_PY) -m pip install --quiet --upgrade pip
	$(AUTHORS_PY) -m pip install --quiet -e ".[test]" $(AUTHORS_PINS)
	rm -f $(AUTHORS_VENV)/.installed-* && touch $(AUTHORS_STAMP)

env-authors: $(AUTHORS_STAMP)
	$(AUTHORS_PY) -c "import importlib.metadata as m; print('jaxmarl', m.version('jaxmarl'), 'jax', m.version('jax'))"

# The learner's and the experiment runner's SMAX tests on the authors' SMAX (jaxmarl 0.0.7, jax
# 0.4.38): the runner is what make hard-authors runs there.
test-authors: $(AUTHORS_STAMP)
	NUMBA_ENABLE_CUDASIM=1 $(AUTHORS_PY) -m pytest -q -p no:cacheprovider --hypothesis-profile=ci -m smax tests/test_learner.py tests/test_experiments.py

# The hard map at the authors' settings on the authors' SMAX, seed 0: MAPPO, GPAE K=2, then MAPPO at
# JaxMARL's own settings on the same map and budget (the third arm), one run after the other in one
# process (hours each on a CPU; resumable on any machine: the same command continues from the full
# checkpoint here, or from the committed compact state on a fresh clone; finished runs are skipped).
# TIME_LIMIT=MINUTES stops it cleanly, with both states written, before a sitting's or a job's end
# (e.g. make hard-authors TIME_LIMIT=150); Ctrl-C once stops it at the end of the running chunk.
hard-authors: $(AUTHORS_STAMP)
	$(AUTHORS_PY) -m gpae_ref.experiments hard --scale authors --seeds 0 $(if $(TIME_LIMIT),--time-limit $(TIME_LIMIT))

clean:
	rm -rf $(VENV) $(AUTHORS_VENV) build *.egg-info

# Measurement-only extras (NOT dependencies of this project): what the authors' own script
# baselines/MAPPO/gpae_rnn_smax.py (kim-seongmin/GPAE) imports besides jaxmarl/jax/flax/optax, so that
# benchmarks/authors_side_by_side.py can run it from the user's copy in .venv-authors. hydra and
# wandb are not installed: the harness replaces both with small in-memory modules.
AUTHORS_SCRIPT_PINS  := distrax==0.1.5 tensorflow-probability==0.25.0 omegaconf==2.3.0
AUTHORS_SCRIPT_STAMP := $(AUTHORS_VENV)/.script-$(shell echo $(AUTHORS_PINS) $(AUTHORS_SCRIPT_PINS) | cksum | cut -d' ' -f1)

$(AUTHORS_SCRIPT_STAMP): $(AUTHORS_STAMP)
	$(AUTHORS_PY) -m pip install --quiet $(AUTHORS_PINS) $(AUTHORS_SCRIPT_PINS)
	rm -f $(AUTHORS_VENV)/.script-* && touch $(AUTHORS_SCRIPT_STAMP)

env-authors-script: $(AUTHORS_SCRIPT_STAMP)
	$(AUTHORS_PY) -c "import distrax, omegaconf, importlib.metadata as m; print('distrax', m.version('distrax'), 'omegaconf', m.version('omegaconf'), 'jax', m.version('jax'))"

# The authors' script and this learner side by side on 3m at the authors' settings, 3e6 env steps, seed
# SEED (default 0), on the authors' SMAX: GPAE (dt, K=1) and MAPPO mode, one run after the other
# (see docs/results.md). AUTHORS_REPO is the user's copy of kim-seongmin/GPAE (never inside this repo).
SEED ?= 0
side-by-side: $(AUTHORS_SCRIPT_STAMP)
	@test -n "$(AUTHORS_REPO)" || (echo "set AUTHORS_REPO=PATH/TO/GPAE (a copy of github.com/kim-seongmin/GPAE)"; exit 2)
	for mode in gpae mappo; do for who in authors ours; do \
	  $(AUTHORS_PY) benchmarks/authors_side_by_side.py --authors-repo $(AUTHORS_REPO) --who $$who --mode $$mode \
	    --map 3m --steps 3e6 --seed $(SEED) || exit 1; done; done
	$(AUTHORS_PY) benchmarks/authors_side_by_side.py --plot

# The JaxMARL MAPPO anchor: JaxMARL's own baselines/MAPPO/mappo_rnn_smax.py beside train --settings
# jaxmarl, 3m, 3e6 env steps, seed SEED, on the authors' SMAX. JAXMARL_REPO is the user's copy of
# FLAIROx/JaxMARL at a tag whose script runs on pip jaxmarl 0.0.7 (v0.0.7; docs/results.md).
anchor-jaxmarl: $(AUTHORS_SCRIPT_STAMP)
	@test -n "$(JAXMARL_REPO)" || (echo "set JAXMARL_REPO=PATH/TO/JaxMARL (a copy of github.com/FLAIROx/JaxMARL, tag v0.0.7)"; exit 2)
	for who in jaxmarl ours; do \
	  $(AUTHORS_PY) benchmarks/authors_side_by_side.py --jaxmarl-repo $(JAXMARL_REPO) --who $$who --mode jaxmarl \
	    --map 3m --steps 3e6 --seed $(SEED) || exit 1; done
	$(AUTHORS_PY) benchmarks/authors_side_by_side.py --plot
