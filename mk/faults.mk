# The full fault-injection suite (docs/reliability.md, "Fault-injection suite"): every fault
# point of every path, against the emulator, Azurite and the handler binary. `make test` runs
# a sample of it; this runs all of it (a few minutes) and prints the figures.
FAULT_TESTS = TestFaultSuite|TestTripleDelivery|TestGroupAboveTheLimitWaitsForApproval|TestDestructiveBudgetAcrossInstances

faults:
	@log=$$(mktemp); FAULTS=full go test -count=1 -timeout 60m -v -run '$(FAULT_TESTS)' ./internal/scenario/ >$$log 2>&1; \
	status=$$?; grep -E '^(--- |ok|FAIL|PASS)|fault suite:|storage outages:|handler kills:|_test.go:' $$log; rm -f $$log; exit $$status

.PHONY: faults
