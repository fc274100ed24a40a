PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PEER_VENV ?= .venv-peers
PEER_SECONDS ?= 600
PEER_ARGS ?=
KGNUM_DATA_DIR ?= $(abspath $(CURDIR)/../shared/datasets)
export KGNUM_DATA_DIR

.PHONY: venv demo test bench bench-peers clean

# torch pinned to the release whose CPU build is at hand: a plain 'torch' resolves to the CUDA build
# and its gigabytes of libraries, which --debias-method adversarial does not use
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,tune,bias,plot,cluster,parquet,adversarial]' 'torch==2.13.0'
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(VENV)/bin/kgnum train --dataset synthetic --model TransE_l2 --dim 64 --neg 64 --neg-chunk 64 \
		--batch 256 --lr 0.1 --gamma 8 --max-steps 1500 --workers 1 --eval-split test --seed 0

test: venv
	$(PY) -m pytest -q

bench: venv
	$(PY) bench/bench_step.py

# PyKEEN in its own venv (torch's CPU build); never part of `make test`
$(PEER_VENV)/.installed:
	$(PYTHON) -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/python -m pip install -q --upgrade pip
	$(PEER_VENV)/bin/python -m pip install -q 'torch==2.13.0' pykeen
	touch $@

bench-peers: venv $(PEER_VENV)/.installed
	$(PEER_VENV)/bin/python bench/peers/pykeen_peer.py --budget $(PEER_SECONDS) $(PEER_ARGS) --out bench/out/pykeen.json
	$(PY) bench/peers/compare.py --peer bench/out/pykeen.json

clean:
	rm -rf $(VENV) $(PEER_VENV) build *.egg-info
