# Two entry points, each sets up .venv (python3 + make are all it needs) and runs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test train bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,smax]"
	rm -f $(VENV)/.installed-* && touch $(STAMP)

# The main job.
demo: $(STAMP)
	$(PY) -m gpae_ref demo

# The test command (.ci/run calls this).
test: $(STAMP)
	NUMBA_ENABLE_CUDASIM=1 $(PY) -m pytest -q -p no:cacheprovider --hypothesis-profile=ci

clean:
	rm -rf $(VENV) build *.egg-info
