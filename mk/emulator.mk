# The DPS and IoT Hub emulator (docs/emulator.md).
.PHONY: emulator bench-emulator conformance

# Run the emulator in the foreground; it prints its endpoints as one JSON line.
EMULATOR_FLAGS ?= -hubs hub1,hub2
emulator:
	$(GO) run ./cmd/iotemulator $(EMULATOR_FLAGS)

# Seeding and paging 100,000 registrations (figures in docs/emulator.md).
bench-emulator:
	$(GO) test ./emulator -run '^$$' -bench . -benchtime 3x -count 1

# The official Azure IoT Node SDKs against the emulator (also part of `make test`).
conformance: deps
	$(GO) test -count=1 ./conformance/
