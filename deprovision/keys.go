package deprovision

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
)

// DeriveDeviceKey returns the symmetric key of one member of a symmetric-key enrollment group,
// as DPS and the devices derive it: base64(HMAC-SHA256(base64decode(groupKey), registrationID))
// (Microsoft's "derive a device key" procedure for DPS symmetric-key group enrollments).
func DeriveDeviceKey(groupKey, registrationID string) (string, error) {
	k, err := base64.StdEncoding.DecodeString(groupKey)
	if err != nil {
		return "", fmt.Errorf("the group key is not base64: %w", err)
	}
	m := hmac.New(sha256.New, k)
	m.Write([]byte(registrationID))
	return base64.StdEncoding.EncodeToString(m.Sum(nil)), nil
}

// NewSymmetricKey returns a random 256-bit key, base64, for an enrollment created with symmetric
// key attestation and no key of its own (DPS, asked to, generates keys of the same size).
func NewSymmetricKey() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails: crypto/rand.Read crashes the program rather than return an error
	return base64.StdEncoding.EncodeToString(b)
}
