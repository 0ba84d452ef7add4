//go:build cgo

package tpmdevice

import (
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/simulator"
)

// openSimulator starts the reference TPM simulator in this process. It stays open until the
// process exits: every Device uses it.
func openSimulator() (transport.TPM, error) { return simulator.OpenSimulator() }
