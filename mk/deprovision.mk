# The deprovisioning engine (docs/policy.md, docs/journal.md).
.PHONY: policy scenario journal

# The policy matrix, the executor and its crash tests on in-memory ports (fast, no I/O).
policy:
	$(GO) test -count=1 ./deprovision/...

# The Table Storage journal against Azurite (started by the tests).
journal: node_modules/.package-lock.json
	$(GO) test -count=1 ./azure/journal/

# Every path against the emulator and Azurite, crashes, concurrent and conflicting events, and
# Microsoft's Node device SDK provisioning before and after each path (also part of `make test`).
scenario: node_modules/.package-lock.json
	$(GO) test -count=1 ./internal/scenario/
