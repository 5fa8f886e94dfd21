# Two commands do everything on a fresh machine:
#   make extract   set up .venv, fetch PACS into data/PACS, write data/embeddings/PACS/<model>.h5
#                  (MODEL="a b c": one cache per model)
#   make test      set up .venv, run the test suite
# Override e.g. MODEL=openai/clip-vit-large-patch14 DATA=data/VLCS TORCH="torch==2.13.0" VISION= EXTRACT_ARGS="--batch-size 512"
# Offline: make extract NO_DOWNLOAD=1 MODEL=/path/to/clip-checkpoint-folder (the images placed in data/PACS by hand)
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
# torchvision (fast preprocessing) where there is an NVIDIA GPU; it does not import beside the CPU-only torch
VISION ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo torchvision==0.28.0)
DATA ?= data/PACS
MODEL ?= openai/clip-vit-base-patch32
EXTRACT_ARGS ?=
# every package but torch pinned to the versions the tests last passed with (`make lock` refreshes the file), where
# Python's minor version is the one the file was made with; LOCK= installs the newest versions pyproject.toml allows
LOCK ?= $(shell v=$$($(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])'); grep -qs "; Python $$v\." constraints.txt && echo constraints.txt)
BIN = $(VENV)/bin

.PHONY: setup lock extract test test-kernels report notebooks run-notebooks

$(BIN)/.installed: pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH) $(VISION)
	$(BIN)/python -m pip install -q $(if $(LOCK),-c $(LOCK)) -e '.[test]'
	touch $@

setup: $(BIN)/.installed

# the environment of .venv, torch (chosen per machine: TORCH, VISION) and this package left out, as constraints.txt
lock:
	{ echo "# pip constraints: the versions the tests passed with (make lock; Python $$($(BIN)/python -c 'import platform; print(platform.python_version())'))"; \
	  $(BIN)/python -m pip freeze --exclude-editable | grep -v -i -E '^(torch|torchvision|triton|nvidia-[a-z0-9-]*|pacs.embed|pip|setuptools|wheel)([=@ ]|$$)'; } > constraints.txt.partial
	mv constraints.txt.partial constraints.txt

extract: setup
	@if [ "$(DATA)" = "data/PACS" ] && [ -z "$(NO_DOWNLOAD)" ]; then $(BIN)/pacs-embed download --dest data/PACS; fi
	@for m in $(MODEL); do echo "== $$m"; $(BIN)/pacs-embed extract --data $(DATA) --model $$m $(EXTRACT_ARGS) || exit 1; done

test: setup
	$(BIN)/python -m pytest -q

# the numerical tests under other CPUs' kernels, selectable on any x86-64 CPU with AVX2 (what .ci/run adds)
NUMERICAL = tests/test_heads.py tests/test_torch_heads.py tests/test_methods.py tests/test_science.py tests/test_analysis.py
test-kernels: setup
	OPENBLAS_CORETYPE=Haswell OPENBLAS_NUM_THREADS=1 $(BIN)/python -m pytest -q -p no:cacheprovider $(NUMERICAL)
	OPENBLAS_CORETYPE=Haswell OPENBLAS_NUM_THREADS=4 $(BIN)/python -m pytest -q -p no:cacheprovider $(NUMERICAL)
	OPENBLAS_CORETYPE=Haswell ATEN_CPU_CAPABILITY=avx2 $(BIN)/python -m pytest -q -p no:cacheprovider $(NUMERICAL)

report: setup
	$(BIN)/pacs-embed report $(REPORT_ARGS)

notebooks: setup
	$(BIN)/jupyter lab notebooks/

# every notebook run top to bottom without a browser (each writes its own run folder under results/)
run-notebooks: setup
	cd notebooks && for nb in *.ipynb; do echo "== $$nb"; ../$(BIN)/jupyter nbconvert --to notebook --execute "$$nb" \
	    --output-dir ../results/notebooks --ExecutePreprocessor.timeout=3600 || exit 1; done
