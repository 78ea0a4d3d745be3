.PHONY: setup demo test lint bench clean install

setup:
	scripts/setup

demo:
	scripts/demo

test:
	scripts/test

install: setup
	scripts/install

lint: setup
	.venv/bin/ruff check hostchaos tests bench
	.venv/bin/mypy

# host part here, VM part in one VM boot, results in bench/results/, tables in docs/benchmarks.md;
# a subset: make bench BENCH_ARGS="--only host --quick" (see bench/run.py)
bench: setup
	.venv/bin/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf .venv .vm-out .pytest_cache .mypy_cache .ruff_cache
