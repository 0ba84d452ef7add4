// Package scenario holds the cross-package tests of the deprovisioning engine: every path of
// the policy matrix, crashes and redeliveries, concurrent and conflicting events, run against
// the real parts (the project's DPS and IoT Hub emulator, reached through the Azure clients
// and their adapters, and the Table Storage journal on Azurite), with devices provisioning
// through the emulator's device registration API before and after each path.
package scenario
