# make demo: the whole app end to end on this machine, with no Azure subscription (docs/demo.md).
# make run:  the same stack, seeded, kept up until Ctrl-C, for events of your own.
# Both build the handler, the emulator, devhost, the demo driver and the operator CLI
# (dpsdeprov, which the demo runs once) into $(DEMO_DIR)/bin; the
# driver starts Azurite (from node_modules), the emulator and devhost in their own process
# groups and stops them when it ends, on Ctrl-C, or on failure.
DEMO_DIR ?= .demo
DEMO_BIN := $(DEMO_DIR)/bin

.PHONY: demo-build

demo-build: node_modules/.package-lock.json
	$(GO) build -o $(DEMO_BIN)/handler .
	$(GO) build -o $(DEMO_BIN)/iotemulator ./cmd/iotemulator
	$(GO) build -o $(DEMO_BIN)/devhost ./cmd/devhost
	$(GO) build -o $(DEMO_BIN)/demo ./cmd/demo
	$(GO) build -o $(DEMO_BIN)/dpsdeprov ./cmd/dpsdeprov

demo: demo-build
	exec $(DEMO_BIN)/demo -state $(DEMO_DIR) -bin $(DEMO_BIN)

run: demo-build
	exec $(DEMO_BIN)/demo -up -state $(DEMO_DIR) -bin $(DEMO_BIN)
