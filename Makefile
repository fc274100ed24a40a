PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
KGNUM_DATA_DIR ?= $(abspath $(CURDIR)/../shared/datasets)
export KGNUM_DATA_DIR

.PHONY: venv demo test bench bench-peers clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(VENV)/bin/kgnum train --dataset synthetic --model TransE_l2 --dim 64 --neg 64 --neg-chunk 64 \
		--batch 256 --lr 0.1 --gamma 8 --adv --max-steps 1500 --eval-split test --seed 0

test: venv
	$(PY) -m pytest -q

bench: venv
	$(PY) bench/bench_step.py

clean:
	rm -rf $(VENV) build *.egg-info
