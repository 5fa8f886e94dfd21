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
BIN = $(VENV)/bin

.PHONY: setup extract test report notebooks

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH) $(VISION)
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

setup: $(BIN)/.installed

extract: setup
	@if [ "$(DATA)" = "data/PACS" ] && [ -z "$(NO_DOWNLOAD)" ]; then $(BIN)/pacs-embed download --dest data/PACS; fi
	@for m in $(MODEL); do echo "== $$m"; $(BIN)/pacs-embed extract --data $(DATA) --model $$m $(EXTRACT_ARGS) || exit 1; done

test: setup
	$(BIN)/python -m pytest -q

report: setup
	$(BIN)/pacs-embed report $(REPORT_ARGS)

notebooks: setup
	$(BIN)/jupyter lab notebooks/
