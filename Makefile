# The two set-up commands of the README: `make demo` and `make test`. Each creates .venv (Python
# 3.11) and installs segx with its pinned stack on first use. `make test-fast` leaves out the
# end-to-end tests marked slow. `make test-py312` runs the suites that differ between Pythons on
# 3.12 too (in .venv312); `make lint` is ruff.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# the first python3.12 that runs (pyenv's shim on PATH may not, when 3.12 is not selected)
PYTHON312 ?= $(shell for p in python3.12 $(HOME)/.pyenv/versions/3.12*/bin/python3.12; do \
	$$p -c '' 2>/dev/null && { echo $$p; break; }; done)
VENV312 := .venv312
STAMP312 := $(VENV312)/.installed

.PHONY: install demo test test-fast test-py312 lint clean

$(STAMP): setup.cfg pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "segx needs $(PYTHON) (Python 3.11) on PATH"; exit 1; }
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

$(STAMP312): setup.cfg pyproject.toml
	@test -n "$(PYTHON312)" || { echo "segx's 3.12 check needs python3.12 on PATH"; exit 1; }
	$(PYTHON312) -m venv $(VENV312)
	$(VENV312)/bin/python -m pip install --quiet --upgrade pip
	$(VENV312)/bin/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP312)

test-py312: $(STAMP312)
	$(VENV312)/bin/python -m pytest -q tests/test_config.py tests/test_compat.py \
		tests/test_check_dataset.py tests/test_data_safety.py tests/test_safe_weights.py \
		tests/test_predict.py tests/test_serving.py tests/test_serving_security.py

clean:
	rm -rf $(VENV) $(VENV312) demo_output

lint: $(STAMP)
	$(VENV)/bin/ruff check segx tests bench main.py
