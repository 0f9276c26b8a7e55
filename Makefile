# lazypull — build, test, run and measure. Every target installs what it needs (Debian 12).

SWIFT      ?= swift
PREFIX     ?= /usr/local
BIN        := .build/release/lazypull
DEBUG_BIN  := .build/debug/lazypull

# Build libraries, and the real tools the tests and the demo drive.
APT_PACKAGES := pkg-config libcurl4-openssl-dev zlib1g-dev libzstd-dev libisal-dev libssl-dev libsqlite3-dev \
	libfuse3-dev fuse3 docker-registry umoci skopeo containerd runc stargz-snapshotter \
	mmdebstrap apache2-utils busybox-static python3 openssl attr libcap2-bin iproute2 procps bc

.PHONY: all deps build debug test run bench bench-deps bench-full bench-test fuzz install generate clean

all: build

deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@# The Debian packages start services we do not want: tests run private instances.
	@-systemctl disable --now containerd docker-registry >/dev/null 2>&1 || true

# The Swift runtime linked statically: a cold process start costs half as much.
build: deps
	$(SWIFT) build -c release --static-swift-stdlib

debug: deps
	$(SWIFT) build

test: debug bench-test
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build

run: build
	LAZYPULL_BIN=$(abspath $(BIN)) Tests/Fixtures/bin/demo.sh

# The bench's peers and chart tools, on top of APT_PACKAGES (stargz-snapshotter's daemon is
# built from Debian's Go packages by bench/stargz/build.sh).
BENCH_PACKAGES := podman curl python3-matplotlib golang-go golang-github-containerd-stargz-snapshotter-dev

bench-deps: deps
	@missing=$$(for p in $(BENCH_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# Quick profile (python and 100,000-file images, loopback and 100 Mbit/s); bench-full: every
# image, link and system. Both write bench/results/<timestamp>/.
bench: build bench-deps
	cd bench && LAZYPULL_BIN=$(abspath $(BIN)) python3 -m lpbench --profile quick

bench-full: build bench-deps
	cd bench && LAZYPULL_BIN=$(abspath $(BIN)) python3 -m lpbench --profile full

# The bench's own tests (link emulation, report); part of `make test`.
bench-test:
	cd bench && python3 -m unittest discover -s lpbench/tests -t .

# libFuzzer on every parser of untrusted input (docs/security.md), FUZZ_SECONDS each (one at a
# time: 2 cores). Seeds and past crashes: Tests/Fuzz/<target>/ (read only); what the fuzzer
# learns: .build-fuzz/corpus/<target>/; crashing inputs: .build-fuzz/crashes/<target>/, which a
# crash also prints. Exits non-zero when any target crashed.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= reference www-authenticate manifest content-range estargz zstd-chunked toc-validator tar elf
fuzz: deps
	@for t in $(FUZZ_TARGETS); do \
		LAZYPULL_FUZZ=1 $(SWIFT) build --scratch-path .build-fuzz --product fuzz-$$t \
			-Xswiftc -sanitize=fuzzer,address -Xswiftc -use-ld=lld >/dev/null || exit 1; \
	done
	@failed=0; for t in $(FUZZ_TARGETS); do \
		mkdir -p .build-fuzz/corpus/$$t .build-fuzz/crashes/$$t; \
		.build-fuzz/debug/fuzz-$$t -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
			-artifact_prefix=.build-fuzz/crashes/$$t/ .build-fuzz/corpus/$$t Tests/Fuzz/$$t \
			>.build-fuzz/$$t.log 2>&1 || failed=1; \
		runs=$$(sed -n 's/^stat::number_of_executed_units: *//p' .build-fuzz/$$t.log); \
		crashes=$$(ls .build-fuzz/crashes/$$t | wc -l); \
		echo "fuzz-$$t: $$runs executions in $(FUZZ_SECONDS) s, $$crashes crashing inputs"; \
	done; exit $$failed

# Binary, systemd units, containerd drop-in, and the example configuration (an existing
# /etc/lazypull/config.toml is kept).
UNITDIR ?= $(PREFIX)/lib/systemd/system
install: build
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/lazypull
	install -D -m 0755 $(BIN)-fuse-host $(DESTDIR)$(PREFIX)/bin/lazypull-fuse-host
	install -D -m 0755 $(BIN)-serve $(DESTDIR)$(PREFIX)/bin/lazypull-serve
	install -D -m 0644 systemd/lazypull.service $(DESTDIR)$(UNITDIR)/lazypull.service
	install -D -m 0644 systemd/containerd.service.d/lazypull.conf $(DESTDIR)/etc/systemd/system/containerd.service.d/lazypull.conf
	install -D -m 0644 docs/config.toml $(DESTDIR)$(PREFIX)/share/doc/lazypull/config.toml
	install -D -m 0644 README.md $(DESTDIR)$(PREFIX)/share/doc/lazypull/README.md
	[ -e $(DESTDIR)/etc/lazypull/config.toml ] || install -D -m 0644 docs/config.toml $(DESTDIR)/etc/lazypull/config.toml
	-[ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ] && systemctl daemon-reload || true

# Regenerates the checked-in gRPC code of containerd's snapshot API from its .proto files.
# Builds the two protoc plugins from the package versions Package.swift resolves (minutes).
PLUGIN_DIR := .build/protoc-plugins
generate:
	@dpkg -s protobuf-compiler >/dev/null 2>&1 || apt-get install -y -qq --no-install-recommends protobuf-compiler >/dev/null
	$(SWIFT) package resolve
	$(SWIFT) build -c release --package-path .build/checkouts/swift-protobuf --product protoc-gen-swift
	$(SWIFT) build -c release --package-path .build/checkouts/grpc-swift-protobuf --product protoc-gen-grpc-swift-2
	mkdir -p $(PLUGIN_DIR)
	cp .build/checkouts/swift-protobuf/.build/release/protoc-gen-swift .build/checkouts/grpc-swift-protobuf/.build/release/protoc-gen-grpc-swift-2 $(PLUGIN_DIR)/
	PLUGINS=$(abspath $(PLUGIN_DIR)) Sources/LazyPullContainerd/Protos/generate.sh

clean:
	rm -rf .build .build-fuzz
