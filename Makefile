# Two entry points, each sets up .venv (python3 + make are all it needs) and runs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo oracle test bench clean env-authors test-authors hard-authors

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

# The test command (.ci/run calls this).
test: $(STAMP)
	NUMBA_ENABLE_CUDASIM=1 $(PY) -m pytest -q -p no:cacheprovider --hypothesis-profile=ci

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

# The learner's SMAX tests on the authors' SMAX (jaxmarl 0.0.7).
test-authors: $(AUTHORS_STAMP)
	NUMBA_ENABLE_CUDASIM=1 $(AUTHORS_PY) -m pytest -q -p no:cacheprovider --hypothesis-profile=ci -m smax tests/test_learner.py

# The hard map at the authors' settings on the authors' SMAX, seed 0, one run after the other
# (hours each on a CPU; resumable: the same command continues, finished runs are skipped).
hard-authors: $(AUTHORS_STAMP)
	$(AUTHORS_PY) -m gpae_ref.experiments hard --scale authors --variants gpae-K2 --seeds 0
	$(AUTHORS_PY) -m gpae_ref.experiments hard --scale authors --variants mappo --seeds 0

clean:
	rm -rf $(VENV) $(AUTHORS_VENV) build *.egg-info
