# Two entry points that set themselves up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch; on a CUDA machine install your torch first and set TORCH_SPEC=torch.
TORCH_SPEC ?= torch==2.13.0

$(BIN)/mova: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
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
