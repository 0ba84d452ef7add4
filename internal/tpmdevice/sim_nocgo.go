//go:build !cgo

package tpmdevice

import (
	"errors"

	"github.com/google/go-tpm/tpm2/transport"
)

// openSimulator fails: the reference TPM simulator is C code, built only with cgo.
func openSimulator() (transport.TPM, error) {
	return nil, errors.New("the TPM simulator is C code and this binary was built without cgo (CGO_ENABLED=0 or no C compiler)")
}
