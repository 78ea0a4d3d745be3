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

bench: setup
	scripts/vm-run --venv .venv -- python bench/apply_rollback.py --write docs/benchmarks-latest.json

clean:
	rm -rf .venv .vm-out .pytest_cache .mypy_cache .ruff_cache
