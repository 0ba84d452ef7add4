# The two commands a newcomer needs are `make demo` and `make test` (see README.md).
SHELL := /bin/bash
GO ?= go
NPM ?= npm

.PHONY: all deps test vet unit demo run bench package fuzz clean

all: test

# Each area adds its own targets in mk/ (demo, bench, package, fuzz, ...).
include $(wildcard mk/*.mk)

# node_modules is rebuilt from the lock file whenever the lock changes.
node_modules/.package-lock.json: package-lock.json
	$(NPM) ci --no-audit --no-fund --loglevel=error

deps: node_modules/.package-lock.json
	$(GO) mod download

vet:
	$(GO) vet ./...

# Every Go test (they start Azurite and the emulator themselves), then the conformance suite
# that drives the emulator with Microsoft's official Node SDKs.
test: deps vet
	$(GO) test -count=1 -timeout 30m ./...

clean:
	rm -rf bin dist .demo
