# Two commands do all the set-up on a fresh machine:
#   make demo   create .venv, install stfn, run the main job on the embedded synthetic data set
#   make test   create .venv, install stfn, run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# openvino: issue 24 (a freed signal stack after compile_model) is fixed in stfn.engine.openvino
EXTRAS ?= dev,onnx,timm,serve,hub,openvino

.PHONY: demo test test-slow bench gpu-check lint clean

$(BIN)/stfn: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e ".[$(EXTRAS)]"
	touch $(BIN)/stfn

demo: $(BIN)/stfn
	$(BIN)/stfn demo --out runs/demo

test: $(BIN)/stfn
	$(BIN)/python -m pytest -q

test-slow: $(BIN)/stfn
	$(BIN)/python -m pytest -q -m slow

bench: $(BIN)/stfn
	$(BIN)/python benchmarks/run_all.py

# the GPU path end to end on a CUDA machine, under 5 minutes (CPU fallbacks elsewhere): BENCHMARKS.md
gpu-check: $(BIN)/stfn
	$(BIN)/python benchmarks/gpu_check.py

lint: $(BIN)/stfn
	$(BIN)/ruff check src tests benchmarks examples

clean:
	rm -rf $(VENV) runs
