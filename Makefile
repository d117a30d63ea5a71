# Thin, named entry points over cargo; CI (.ci/run) uses the same targets.
CARGO ?= cargo
# Where cargo puts what it builds (CARGO_TARGET_DIR when set).
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
BIN := $(TARGET_DIR)/release/hookflow
DEMO_PASSWORD := demo-password
PREFIX ?= /usr/local
DESTDIR ?=
STATIC_TARGET := x86_64-unknown-linux-gnu
STATIC_BIN := $(TARGET_DIR)/$(STATIC_TARGET)/release/hookflow
# crt-static gives a static-pie executable with glibc. getrandom's default Linux backend looks the
# libc function up at run time, which a static binary cannot; use the system call directly.
STATIC_RUSTFLAGS := -C target-feature=+crt-static --cfg getrandom_backend="linux_getrandom"
# SQLite extensions hookflow never uses (full-text search, R*Tree, the dbstat table, soundex),
# left out of the appliance binary: about 0.4 MiB. (libsqlite3-sys's bundled build enables them.)
STATIC_SQLITE_FLAGS := -USQLITE_ENABLE_FTS3 -USQLITE_ENABLE_FTS3_PARENTHESIS -USQLITE_ENABLE_FTS5 \
	-USQLITE_ENABLE_RTREE -USQLITE_ENABLE_DBSTAT_VTAB -USQLITE_SOUNDEX

.PHONY: build run test browsers postgres lint bench check doc clean static size test-static install systemd-check

build:
	$(CARGO) build --release

# Starts `hookflow sink` (the demo webhook, on :9000) and hookflow on the example config (:8080),
# with the console on. Ctrl-C stops both.
run: build
	@echo "console: http://127.0.0.1:8080/console (admin key: demo-admin-key)"
	@$(BIN) sink --listen 127.0.0.1:9000 --user bot --password $(DEMO_PASSWORD) & sink=$$!; \
	trap 'kill $$sink 2>/dev/null' EXIT INT TERM; \
	DEMO_WEBHOOK_PASSWORD=$(DEMO_PASSWORD) $(BIN) serve --config examples/hookflow.json

# The console's browser tests (tests/it/browser.rs) drive Debian's chromium through chromedriver;
# they are installed first when missing (needs root, as on a fresh CI machine).
# The integration tests run twice: on SQLite (the default store), then again on PostgreSQL
# (HOOKFLOW_IT_STORE=postgres: each test's config gets a fresh database of the throwaway server),
# so that both backends answer the same through the store seam. The second run skips the tests
# that name their store themselves (replicas on PostgreSQL, the SQLite data directory): they ran.
test: browsers postgres
	$(CARGO) test --all-targets
	HOOKFLOW_IT_STORE=postgres $(CARGO) test --test it -- --skip replicas:: --skip datadir::
	$(CARGO) test -p tiny_http  # the vendored server's own tests (framing, limits; vendor/README.md)

browsers:
	@command -v chromedriver >/dev/null 2>&1 && command -v chromium >/dev/null 2>&1 || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }

# The replica tests (tests/it/replicas.rs, src/store/postgres/tests.rs) start their own throwaway
# PostgreSQL server with initdb/pg_ctl; Debian's server package is installed first when missing
# (needs root, as on a fresh CI machine). It runs as the unprivileged `postgres` user it creates.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && id postgres >/dev/null 2>&1 || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

doc:
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps --document-private-items

check: lint doc test

# End-to-end benchmark: examples/bench.rs, against the server and examples/bare.rs (the yardstick).
# A few minutes; BENCH_* variables tune it (BENCH_ONLY=echo,bare,... runs a subset), see bench.rs.
# The binary is run as built: `cargo run` would rebuild the bench alone if a source changed meanwhile.
# The static binary after the release one (the bench prints its size, the appliance binary held
# under 8 MiB, and flags a static binary older than the binary under test).
bench:
	$(CARGO) build --release --bins --examples
	$(MAKE) static
	$(TARGET_DIR)/release/examples/bench

# One self-contained executable (no shared libraries): copy it anywhere, even an empty chroot.
static:
	RUSTFLAGS='$(STATIC_RUSTFLAGS)' LIBSQLITE3_FLAGS='$(STATIC_SQLITE_FLAGS)' $(CARGO) build --release --target $(STATIC_TARGET)
	@ls -l $(STATIC_BIN)

# The static binary's size in bytes and MiB; an appliance binary is held under 8 MiB.
# `make bench` prints it too when the static binary is built.
size: static
	@bytes=$$(stat -c %s $(STATIC_BIN)); \
	awk -v b=$$bytes 'BEGIN { printf "static binary: %d bytes, %.2f MiB (goal: under 8 MiB)\n", b, b / 1048576; exit (b >= 8 * 1048576) }'

# The static binary in an empty chroot must serve and deliver.
test-static: static
	bash tests/static/chroot.sh $(STATIC_BIN)

# Installs the binary, the systemd unit and an example config (honours PREFIX and DESTDIR).
# The config is world-readable (0644): the unit's DynamicUser is neither root nor in its group,
# and systemd does not hand /etc/hookflow to it. Secrets belong in /etc/hookflow/env (as
# ${NAME} in the config), which systemd reads as root.
install: build
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/hookflow
	install -D -m 0644 examples/hookflow.service $(DESTDIR)$(PREFIX)/lib/systemd/system/hookflow.service
	sed -i 's|/usr/local/bin/hookflow|$(PREFIX)/bin/hookflow|' $(DESTDIR)$(PREFIX)/lib/systemd/system/hookflow.service
	install -d -m 0755 $(DESTDIR)/etc/hookflow/flows
	test -e $(DESTDIR)/etc/hookflow/hookflow.json || install -m 0644 examples/etc/hookflow.json $(DESTDIR)/etc/hookflow/hookflow.json
	test -e $(DESTDIR)/etc/hookflow/flows/demo.json || install -m 0644 examples/flows/demo.json $(DESTDIR)/etc/hookflow/flows/demo.json

# The unit must pass systemd's own checks; the exposure score is printed (aim: 2.0 or lower).
# verify needs the ExecStart binary to exist, so a copy of the unit points at the build.
systemd-check: build
	@mkdir -p target/unit && sed 's|/usr/local/bin/hookflow|$(CURDIR)/$(BIN)|g' examples/hookflow.service > target/unit/hookflow.service
	systemd-analyze verify target/unit/hookflow.service
	systemd-analyze security --offline=true --threshold=20 target/unit/hookflow.service | tail -1

clean:
	$(CARGO) clean
