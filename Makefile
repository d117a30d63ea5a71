# Thin, named entry points over cargo; CI (.ci/run) uses the same targets.
CARGO ?= cargo
BIN := target/release/hookflow
DEMO_PASSWORD := demo-password

.PHONY: build run test lint bench check doc clean

build:
	$(CARGO) build --release

# Starts `hookflow sink` (the demo webhook, on :9000) and hookflow on the example config (:8080).
# Ctrl-C stops both.
run: build
	@trap 'kill 0' INT TERM EXIT; \
	$(BIN) sink --listen 127.0.0.1:9000 --user bot --password $(DEMO_PASSWORD) & \
	DEMO_WEBHOOK_PASSWORD=$(DEMO_PASSWORD) $(BIN) serve --config examples/hookflow.json

test:
	$(CARGO) test --all-targets

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

doc:
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps --document-private-items

check: lint doc test

bench:
	$(CARGO) build --release --bins --examples
	$(CARGO) run --release --example bench

clean:
	$(CARGO) clean
