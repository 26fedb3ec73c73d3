# The two commands a newcomer needs: `make demo` shows volinit fixing a volume for a
# non-root read-only service; `make test` runs every check (it sets Docker up if needed).
.PHONY: test test-local lint demo bench

test:
	scripts/test

test-local:  ## no Docker: unit tests and linters only
	NO_DOCKER=1 scripts/test

lint:
	scripts/lint

demo:
	scripts/demo

bench:
	.venv/bin/python -m bench
