.PHONY: setup demo test lint bench clean install torture-vm

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

# the netem kinds' kill -9 torture in one VM boot (not in `make test`: see its module)
torture-vm: setup
	HOSTCHAOS_TORTURE_VM=1 scripts/vm-run --venv .venv --out .vm-out -- \
	    python -m pytest -q -p no:cacheprovider -s tests/vm/test_torture_netem.py

clean:
	rm -rf .venv .vm-out .pytest_cache .mypy_cache .ruff_cache
