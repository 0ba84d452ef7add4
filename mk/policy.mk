# make check-policy: the deprovisioning policy over generated fleets (docs/policy.md, "What the
# generated fleets prove"): 50,000 fleets, each a random DPS configuration and event sequence
# played through the engine on the in-process emulator and checked at rest. `make test` runs
# 2,000 of them (the package's default) and 40 more with the journal on Azurite. TPM devices
# attest on the TPM simulator in every 10th fleet here (in every fleet under `make test`).
POLICY_FLEETS ?= 50000
POLICY_FIRST ?= 1
POLICY_TPM_EVERY ?= 10

.PHONY: check-policy

check-policy: deps
	$(GO) test -count=1 -timeout 60m -run 'TestGeneratedFleets$$' ./internal/fleet/ -v \
		-fleet.cases=$(POLICY_FLEETS) -fleet.first=$(POLICY_FIRST) -fleet.tpm-every=$(POLICY_TPM_EVERY)
