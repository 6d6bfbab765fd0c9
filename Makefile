# `make check` is exactly what CI runs (.ci/run -> tests/run.sh): fmt, clippy
# -D warnings, every test against file://, SeaweedFS (S3) and Azurite, the
# Python tests and the deploy validators. The other targets are shortcuts.
.PHONY: check fmt clippy test bench demo servers-up servers-down deploy-check

check:
	bash tests/run.sh

fmt:
	cargo fmt --all

clippy:
	cargo clippy --workspace --all-targets -- -D warnings

# Unit tests only (no storage servers); `make check` runs everything.
test:
	cargo test --workspace --exclude syncvet-e2e

bench:
	cargo bench --workspace

# A real sync against the in-process emulator into ./lake (the embedded
# default config), then its run report.
demo:
	cargo run --release -p syncvet-etl -- run
	cargo run --release -p syncvet-etl -- report

# Storage servers for running e2e tests by hand:
#   make servers-up && eval "$$(tests/servers/seaweedfs.sh env; tests/servers/azurite.sh env)"
servers-up:
	bash tests/servers/seaweedfs.sh start >/dev/null
	bash tests/servers/azurite.sh start >/dev/null

servers-down:
	bash tests/servers/seaweedfs.sh stop
	bash tests/servers/azurite.sh stop

# The offline deploy validators alone (needs the venv from a first `make check`).
deploy-check:
	cargo build -p syncvet-etl
	SYNCVET_PYTHON=$${SYNCVET_PYTHON:-.cache/py-venv/bin/python} bash deploy/validate.sh
