# The two commands a newcomer needs: `make demo` shows volinit fixing a volume for a
# non-root read-only service; `make test` runs every check (it sets Docker up if needed).
.PHONY: test test-local lint demo bench lock

# uv resolves for every Python and platform the project supports (--universal), which
# pip-compile cannot: the CI matrix runs 3.10 to 3.13 and the image builds for arm64 too.
UV_VERSION = 0.13.9
LOCK = .venv/bin/python -m uv pip compile pyproject.toml --universal --python-version 3.10 --generate-hashes --upgrade -q

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

lock:  ## refresh requirements/*.lock to the newest versions pyproject.toml allows
	.venv/bin/python -m uv --version 2>/dev/null | grep -q ' $(UV_VERSION)' || .venv/bin/python -m pip install -q uv==$(UV_VERSION)
	$(LOCK) -o requirements/image.lock && $(LOCK) --extra dev -o requirements/dev.lock
