# Handlet Edge: two commands on a fresh Debian 12 machine (as root).
#   make run    install what is missing, provision models, build, start the agent
#   make test   the same set-up, then every test
SHELL := /bin/bash
CARGO ?= cargo
BIN := target/release/handlet
MODELS_DIR ?= .models

# Debian packages: to build (whisper.cpp, bindgen), and to test against real peers.
BUILD_DEBS := build-essential cmake pkg-config libclang-dev python3-pip
TEST_DEBS := baresip-core sip-tester sipsak espeak-ng flite sox systemd kamailio kamailio-tls-modules openssl mosquitto

.PHONY: run test build models deps test-deps lint fmt bench

run: deps models
	$(BIN) run

test: deps test-deps models
	scripts/fixtures.sh
	$(CARGO) test --release --workspace --locked -- --test-threads=2

build: deps
	$(CARGO) build --release --locked

models: build
	models/provision.sh $(MODELS_DIR) $(BIN)

deps:
	@scripts/apt-install.sh $(BUILD_DEBS)

test-deps:
	@scripts/apt-install.sh $(TEST_DEBS)

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets --locked -- -D warnings

bench: test-deps models
	$(CARGO) bench --locked
