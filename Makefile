# Two entry points, each sets up .venv (python3 + make are all it needs) and runs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo oracle test bench clean

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

clean:
	rm -rf $(VENV) build *.egg-info
