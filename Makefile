# pwsync: the two set-up commands are `make demo` (run it) and `make test` (test it).
SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin
GO      ?= go
GOFLAGS ?= -p=2
export GOFLAGS
SAMBA_AD_DIR ?= /tmp/samba-ad
export SAMBA_AD_DIR
FUZZTIME ?= 10s
# Minimizing each new interesting input may take 60 s by default, which would
# stall a 10 s run after its first find (measured: 20 execs in 11 s).
FUZZMINIMIZE ?= 1s

.PHONY: docker all build test test-unit rsyslog samba-ad samba-ad2 samba-ad-stop demo bench bench-latency bench-footprint check-pure fuzz vet clean

all: build

build:
	$(GO) build -o bin/pwsync ./cmd/pwsync

## docker: the container image (needs a docker daemon; not part of make test)
docker:
	docker build -f deployments/Dockerfile -t ghcr.io/pwsync/pwsync:$$(git describe --always --dirty) --build-arg VERSION=$$(git describe --always --dirty) .

## test: the whole suite, against two real Samba AD DCs of one domain (installed, started and joined when missing)
test: samba-ad2 chromium rsyslog vet check-pure
	PWSYNC_REQUIRE_AD=1 PWSYNC_REQUIRE_AD2=1 PWSYNC_REQUIRE_BROWSER=1 PWSYNC_REQUIRE_RSYSLOG=1 PWSYNC_SCALEOUT=1 $(GO) test -count=1 -timeout 28m ./...
	$(MAKE) --no-print-directory fuzz

## test-unit: everything that needs no AD (AD tests skip)
test-unit:
	$(GO) test -count=1 ./...

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }

## check-pure: the rules package does no I/O and no logging
check-pure:
	@! $(GO) list -deps ./services/evaluator/rules | grep -qE 'nats-io|rs/zerolog|net/http|go-ldap|msgraph' \
		|| { echo "services/evaluator/rules must stay pure"; exit 1; }

## fuzz: each fuzz target for a bounded time; prints each one's last progress line (elapsed, execs) and the total
fuzz:
	@set -e; out=$$(mktemp); trap 'rm -f $$out' EXIT; targets=0; execs=0; \
	for spec in $$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do \
		for f in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$spec/*_test.go | sed 's/func //'); do \
			if ! $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZE) $$spec >$$out 2>&1; then \
				if grep -q 'Failing input written' $$out || ! grep -q '^    context deadline exceeded$$' $$out; then cat $$out; echo "fuzz $$spec $$f: FAILED"; exit 1; fi; \
				echo "fuzz $$spec $$f: ended by Go's fuzztime race (go.dev/issue/75804, fixed in Go 1.27): no failing input"; \
			fi; \
			last=$$(grep -o 'elapsed: .*, execs: [0-9]*' $$out | tail -1); \
			test -n "$$last" || { cat $$out; echo "fuzz $$spec $$f: no progress line"; exit 1; }; \
			echo "fuzz $$spec $$f: $$last"; \
			targets=$$((targets + 1)); execs=$$((execs + $${last##*execs: })); \
		done; \
	done; \
	echo "fuzz: $$targets targets, $$execs inputs in total, $(FUZZTIME) each"

## chromium: Debian's Chromium for the console's browser tests (chromedp)
chromium:
	@test -x /usr/bin/chromium || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

## rsyslog: Debian's rsyslog with GnuTLS, the real syslog receiver of the audit shipping tests (services/auditship)
rsyslog:
	@dpkg -s rsyslog rsyslog-gnutls >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq rsyslog rsyslog-gnutls >/dev/null; }

## screenshots: refresh docs/console-*.png from the browser test
screenshots: samba-ad chromium
	PWSYNC_REQUIRE_AD=1 PWSYNC_REQUIRE_BROWSER=1 PWSYNC_SCREENSHOTS_DIR=$(CURDIR)/docs $(GO) test -count=1 -run TestConsoleInBrowser ./cmd/pwsync

samba-ad:
	scripts/samba-ad/start.sh >/dev/null
	scripts/samba-ad/seed.sh >/dev/null

## samba-ad2: the second DC joined to samba-ad's domain (127.0.0.2, replicating both ways) and the Kerberos material
samba-ad2: samba-ad
	scripts/samba-ad/join.sh >/dev/null
	scripts/samba-ad/kerberos.sh >/dev/null

## samba-ad-stop: both DCs
samba-ad-stop:
	scripts/samba-ad/stop.sh --all

## demo: Samba AD + Graph simulator + pwsync, and a helpdesk reset flowing through
demo: samba-ad build
	scripts/demo.sh

## bench-latency: the AD reset -> Graph write latency benchmark (real Samba AD + simulator; resets at
## random moments, ~10 min with its polling baseline)
bench-latency: samba-ad
	PWSYNC_REQUIRE_AD=1 $(GO) test -run '^$$' -bench BenchmarkResetToGraphWrite -benchtime 1x -timeout 30m ./cmd/pwsync

## bench-footprint: binary sizes, idle RSS with 1,000 users and a 30-minute soak (RSS, goroutines) of
## a real pwsync run child (issue 22; PWSYNC_SOAK=5m for a shorter soak); also part of make bench
bench-footprint: samba-ad
	PWSYNC_REQUIRE_AD=1 PWSYNC_BENCH_REPORT=1 $(GO) test -count=1 -v -timeout 60m -run '^TestFootprintReport$$' ./cmd/pwsync

## bench: every benchmark that reports (// benchreport: directives, see docs/benchmarks.md); figures
## with their same-run baselines or limits, targets and verdicts written to docs/benchmarks.md; fails
## naming every figure that missed its target
bench: samba-ad2 rsyslog
	PWSYNC_REQUIRE_AD=1 PWSYNC_REQUIRE_AD2=1 $(GO) run ./cmd/benchreport -out docs/benchmarks.md

clean:
	rm -rf bin data
