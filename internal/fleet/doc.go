// Package fleet proves the deprovisioning policy over generated fleets (its tests are the
// package): a generator builds random DPS configurations (X.509 CA hierarchies up to three
// levels with inline and caReferences enrollment groups at each level, symmetric-key groups
// with their two keys, individual enrollments of every attestation, blocks made by hand,
// earlier moves, devices in several hubs) and plays random event sequences against the
// engine, through the real DPS and IoT Hub clients and adapters on the emulator, in process.
// When every operation is at rest it checks, through the emulator's device registration API
// and the hub registry, the invariants of docs/policy.md ("What the generated fleets
// prove"). Every case comes from a seed; a failure prints the command that replays it and
// the smallest case the shrinker found.
package fleet
