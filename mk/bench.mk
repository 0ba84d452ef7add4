# make bench: the group-wide deprovisioning benchmark on the whole local stack (Azurite, the
# emulator with per-hub throttling, devhost and the real handler), as docs/benchmarks.md
# describes. It writes bench/results/$(BENCH_NAME).json and regenerates the results table in
# docs/benchmarks.md. The issue's full scale is BENCH_MEMBERS=100000 (about 5 minutes of
# throttled hub work at 6,000 operations a minute per hub, plus seeding).
BENCH_MEMBERS ?= 10000
BENCH_HUBS ?= 4
BENCH_THROTTLE ?= 6000
BENCH_NAIVE ?= 1000
BENCH_NAME ?= $(BENCH_MEMBERS)x$(BENCH_HUBS)
BENCH_DIR ?= $(DEMO_DIR)/bench

.PHONY: bench

bench: demo-build
	exec $(DEMO_BIN)/demo -bench -state $(BENCH_DIR) -bin $(DEMO_BIN) \
		-bench-name $(BENCH_NAME) -bench-members $(BENCH_MEMBERS) -bench-hubs $(BENCH_HUBS) \
		-bench-throttle $(BENCH_THROTTLE) -bench-naive $(BENCH_NAIVE)
