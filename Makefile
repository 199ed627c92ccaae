# The two set-up commands of the README: `make demo` and `make test`. Each creates .venv on the
# main stack (Python 3.12, Paddle 3, numpy 2, ONNX export) and installs segx on first use.
# `make test-fast` leaves out the end-to-end tests marked slow. The other supported stacks have
# their own venvs and run the suites that differ there (docs/install.md, docs/testing.md):
#   make test-paddle26  Python 3.11 + Paddle 2.6.2 + numpy 1, with paddleseg 2.8.0 as the parity
#                       oracle of segx's own networks (.venv-paddle26)
#   make test-py313     Python 3.13 + Paddle 3 + numpy 2, no ONNX converter (.venv313)
#   make test-paddlex   segx installed into a fresh PaddleX 3.7.2 environment (.venv-paddlex)
# `make lint` is ruff.

# the first pythonX.Y that runs (pyenv's shim on PATH may not, when X.Y is not selected)
find_python = $(shell for p in python$(1) $(HOME)/.pyenv/versions/$(1)*/bin/python$(1); do \
	$$p -c '' 2>/dev/null && { echo $$p; break; }; done)

PYTHON ?= $(call find_python,3.12)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEPS := setup.cfg setup.py pyproject.toml

PYTHON311 ?= $(call find_python,3.11)
VENV26 := .venv-paddle26
STAMP26 := $(VENV26)/.installed
PYTHON313 ?= $(call find_python,3.13)
VENV313 := .venv313
STAMP313 := $(VENV313)/.installed
VENVPDX := .venv-paddlex

# the suites whose behaviour depends on the stack (Paddle version, numpy, Python, converter)
STACK_SUITES := tests/test_stack.py tests/test_compat.py tests/test_safe_weights.py \
	tests/test_zlib_png.py
# Paddle 2.6: its exports (.pdmodel, oneDNN, OpenVINO reading it); Python 3.13: numpy 2 on the
# data path, prediction (then the demo runs every mode)
PADDLE26_SUITES := $(STACK_SUITES) tests/test_engines.py
PY313_SUITES := $(STACK_SUITES) tests/test_config.py tests/test_check_dataset.py \
	tests/test_predict.py
# the parity suites: segx's networks, losses and transforms against paddleseg, and the weights
# tests whose served checkpoints paddleseg builds from the official configs (skipped elsewhere)
ORACLE_SUITES := tests/test_own_*.py tests/test_parity.py tests/test_weights.py

.PHONY: install demo test test-fast test-paddle26 test-py313 test-paddlex lint clean

define need_python
	@test -n "$(1)" || { echo "this target needs python$(2) on PATH (or under ~/.pyenv)"; exit 1; }
endef

$(STAMP): $(DEPS)
	$(call need_python,$(PYTHON),3.12)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m segx demo

test: $(STAMP)
	$(PY) -m pytest -q

# everything but the end-to-end tests marked slow (docs/testing.md): under two minutes on 2 cores
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

# Paddle 2.6.2 pins numpy < 2 (.ci/paddle26.txt); paddleseg 2.8.0 is installed without its
# dependencies: its only cap, opencv-python<=4.6, would put a second cv2 beside segx's OpenCV
$(STAMP26): $(DEPS) .ci/paddle26.txt
	$(call need_python,$(PYTHON311),3.11)
	$(PYTHON311) -m venv $(VENV26)
	$(VENV26)/bin/python -m pip install --quiet --upgrade pip
	$(VENV26)/bin/python -m pip install --quiet -c .ci/paddle26.txt -e '.[dev]' \
		six requests filelock prettytable scipy scikit-learn tqdm
	$(VENV26)/bin/python -m pip install --quiet --no-deps paddleseg==2.8.0
	touch $(STAMP26)

test-paddle26: $(STAMP26)
	$(VENV26)/bin/python -m pytest -q $(PADDLE26_SUITES) $(ORACLE_SUITES)

$(STAMP313): $(DEPS)
	$(call need_python,$(PYTHON313),3.13)
	$(PYTHON313) -m venv $(VENV313)
	$(VENV313)/bin/python -m pip install --quiet --upgrade pip
	$(VENV313)/bin/python -m pip install --quiet -e '.[train,deploy]' pytest
	touch $(STAMP313)

# the suites that differ, then the demo: every mode on Python 3.13 with numpy 2
test-py313: $(STAMP313)
	$(VENV313)/bin/python -m pytest -q $(PY313_SUITES)
	rm -rf $(VENV313)/demo && $(VENV313)/bin/python -m segx demo --workdir $(VENV313)/demo

# a real install of PaddleX 3.7.2 and then segx into a fresh venv (needs the package registry)
test-paddlex: $(STAMP)
	SEGX_PADDLEX_VENV=$(abspath $(VENVPDX)) SEGX_PADDLEX_PYTHON=$(PYTHON) \
		$(PY) -m pytest -q tests/test_paddlex_coexistence.py

clean:
	rm -rf $(VENV) $(VENV26) $(VENV313) $(VENVPDX) demo_output

lint: $(STAMP)
	$(VENV)/bin/ruff check segx tests bench main.py
