# The two commands a newcomer needs are `make demo` and `make test` (see README.md).
SHELL := /bin/bash
GO ?= go
NPM ?= npm

.PHONY: all deps fmt tidy lint test vet unit demo run bench package fuzz clean

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

# staticcheck at a pinned version, fetched by go run (it stays out of go.mod: the app does not
# build with it). It must report nothing.
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
lint: vet
	$(GO) run $(STATICCHECK) ./...

# go.mod and go.sum must be what `go mod tidy` would write: every direct requirement in the
# direct block, nothing unused. Fails (printing the diff) when they are not; fix with `go mod tidy`.
tidy:
	$(GO) mod tidy -diff

# Every Go file must be as gofmt writes it. Fails, listing the files, when one is not; fix
# with `gofmt -w` on them.
fmt:
	@files=$$(git ls-files -z '*.go' | xargs -0 "$$($(GO) env GOROOT)/bin/gofmt" -l); \
	if [ -n "$$files" ]; then echo "gofmt would change:"; echo "$$files"; exit 1; fi

# Every Go test (they start Azurite and the emulator themselves), then the conformance suite
# that drives the emulator with Microsoft's official Node SDKs, under the race detector.
test: deps fmt tidy vet
	$(GO) test -race -count=1 -timeout 30m ./...

clean:
	rm -rf bin dist .demo
