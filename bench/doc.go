// Package bench holds the group-wide benchmark's results (bench/results, written by
// `make bench`: see docs/benchmarks.md) and the test that counts the hub registry operations
// each deprovisioning path charges per device, against the emulator. The benchmark itself
// runs on the demo's stack (cmd/demo -bench).
package bench
