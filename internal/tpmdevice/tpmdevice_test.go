package tpmdevice

import (
	"bytes"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

// The keys a Device hands out are the SDKs' EK and SRK: restricted RSA-2048 decryption keys,
// the EK under the TCG default policy. Seeds make different TPMs; the same seed, the same TPM.
func TestKeysAreTheSDKTemplatesAndPerDevice(t *testing.T) {
	a, err := New("device-a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := New("device-b")
	if err != nil {
		t.Fatal(err)
	}
	a2, err := New("device-a")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a.EndorsementKey(), b.EndorsementKey()) || bytes.Equal(a.StorageRootKey(), b.StorageRootKey()) {
		t.Fatal("two seeds gave the same keys")
	}
	if !bytes.Equal(a.EndorsementKey(), a2.EndorsementKey()) {
		t.Fatal("one seed gave two EKs")
	}
	for name, raw := range map[string][]byte{"EK": a.EndorsementKey(), "SRK": a.StorageRootKey()} {
		p2b, err := tpm2.Unmarshal[tpm2.TPM2BPublic](raw)
		if err != nil {
			t.Fatalf("%s is not a TPM2B_PUBLIC: %v", name, err)
		}
		p, err := p2b.Contents()
		if err != nil {
			t.Fatal(err)
		}
		rsa, err := p.Unique.RSA()
		if err != nil || p.Type != tpm2.TPMAlgRSA || len(rsa.Buffer) != 256 || !p.ObjectAttributes.Restricted || !p.ObjectAttributes.Decrypt || !p.ObjectAttributes.FixedTPM {
			t.Fatalf("%s: %+v", name, p)
		}
		if name == "EK" && (!bytes.Equal(p.AuthPolicy.Buffer, ekPolicyDigest) || !p.ObjectAttributes.AdminWithPolicy || p.ObjectAttributes.UserWithAuth) {
			t.Fatalf("EK policy or attributes: %+v", p)
		}
	}
	if _, err := a.SignWithIdentity([]byte("x")); err == nil {
		t.Fatal("signed without an identity key")
	}
}

// An activation blob that is not six well-formed TPM2B fields is refused before the TPM sees it.
func TestActivationBlobShape(t *testing.T) {
	field := func(n int) []byte { return append([]byte{0, byte(n)}, make([]byte, n)...) }
	var ok []byte
	for range 6 {
		ok = append(ok, field(3)...)
	}
	if _, err := splitBlob(ok); err != nil {
		t.Fatalf("six fields: %v", err)
	}
	for name, b := range map[string][]byte{
		"five fields":  ok[:5*5],
		"cut short":    ok[:len(ok)-1],
		"extra bytes":  append(append([]byte{}, ok...), 0),
		"empty":        nil,
		"size too big": append(append([]byte{}, ok[:25]...), 0, 9, 1),
	} {
		if _, err := splitBlob(b); err == nil || !strings.Contains(err.Error(), "activation blob") {
			t.Errorf("%s: %v", name, err)
		}
	}
	d, err := New("device-shape")
	if err != nil {
		t.Fatal(err)
	}
	if err := d.ActivateIdentityKey(ok); err == nil {
		t.Fatal("a blob of zeros activated")
	}
}
