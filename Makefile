# Two entry points that set themselves up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch comes from TORCH_INDEX, PyTorch's CPU index by default: the CPU build on any Linux machine (PyPI's
# Linux torch is the CUDA build, with several GB of NVIDIA libraries). Its dependencies come from the same
# index; pip's own find-links and extra indexes still apply. On a CUDA machine name a CUDA index,
#   make demo TORCH_INDEX=https://download.pytorch.org/whl/cu128
# or install your torch build into .venv first and run `make demo TORCH_SPEC=torch` (it is kept).
# --retries 2: an index that cannot be reached (an offline machine with local wheels) costs seconds, not
# minutes of back-off.
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu

$(BIN)/mova: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q --retries 2 --index-url "$(TORCH_INDEX)" "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(BIN)/mova

.PHONY: setup demo test
setup: $(BIN)/mova

# The demo writes outside what it reads (examples/docs/), so a rerun reads the same inputs; .gitignore has it.
DEMO_OUT := demo-out/answers.jsonl

demo: setup
	mkdir -p $(dir $(DEMO_OUT))
	$(BIN)/mova ask examples/docs/ --prompts examples/prompts.jsonl -m tiny-random --max-new-tokens 24 -o $(DEMO_OUT) --overwrite
	@echo "wrote $(DEMO_OUT) (tiny-random: the answers are random text)" >&2

test: setup
	$(BIN)/python -m pytest -n 2 -q
