package emulator

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// DPS's TPM attestation, service side. The device proves that it holds the private part of the
// endorsement key (EK) enrolled for it without ever signing with it: DPS encrypts a fresh key
// to the EK, only that TPM can decrypt it, and the device then signs a SAS token with the
// imported key. The wire format is what Microsoft's device SDKs parse; every one of them reads
// the same six fields in this order from the base64 "authenticationKey" (the "activation
// blob"):
//
//	TPM2B_ID_OBJECT         credential blob: TPM2_MakeCredential of the inner wrap key,
//	                        encrypted to the EK, bound to the name of the SRK
//	TPM2B_ENCRYPTED_SECRET  the seed of that credential, RSA-OAEP to the EK, label "IDENTITY"
//	TPM2B_PRIVATE           duplication blob of the new identity key (a keyed-hash HMAC
//	                        object), inner wrapper AES-CFB with the inner wrap key, outer
//	                        wrapper to the SRK
//	TPM2B_ENCRYPTED_SECRET  the seed of the outer wrapper, RSA-OAEP to the SRK, label "DUPLICATE"
//	TPM2B_PUBLIC            public area of the identity key
//	TPM2B_DATA              "URI data" encrypted AES-CFB with the inner wrap key (the SDKs
//	                        decrypt it and do not use it)
//
// The device runs TPM2_ActivateCredential(activate=SRK, key=EK under a PolicySecret(endorsement)
// session) to recover the inner wrap key, TPM2_Import under the SRK with it (symmetric
// definition AES, key size = the inner wrap key's, CFB), TPM2_Load, and signs with TPM2_HMAC.
// Sources: azure-iot-sdk-node security/tpm/src/tpm.ts (_activateIdentityKey);
// azure-iot-sdk-java provisioning/security/tpm-provider-emulator SecurityProviderTPMEmulator
// (activateIdentityKey); azure-iot-sdk-c provisioning_client/adapters/hsm_client_tpm.c
// (insert_key_in_tpm, which fixes the inner wrapper at AES-128, hence a 16-byte inner wrap
// key). The same EK and SRK templates are in all three (RSA-2048, AES-128-CFB, SHA-256).
// The crypto of the wrappers is TPM 2.0 Part 1, "Credential Protection" and "Protected
// Storage" (KDFa, inner and outer duplication wrappers).

// innerWrapKeySize is the AES key size of the inner wrapper, in bytes: 128 bits, the only size
// the C SDK imports with.
const innerWrapKeySize = 16

// parseTPMPublic decodes a base64 TPM2B_PUBLIC, the form in which devices send their EK and
// SRK (`getEndorsementKey` returns `TPMT_PUBLIC.asTpm2B()` in the Node SDK, the TPM2B_PUBLIC
// in the Java and C SDKs) and operators paste the EK into an enrollment.
func parseTPMPublic(b64 string) (*tpm2.TPMTPublic, error) {
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, fmt.Errorf("not base64: %w", err)
	}
	pub2b, err := tpm2.Unmarshal[tpm2.TPM2BPublic](raw)
	if err != nil {
		return nil, fmt.Errorf("not a TPM2B_PUBLIC: %w", err)
	}
	pub, err := pub2b.Contents()
	if err != nil {
		return nil, fmt.Errorf("not a TPM2B_PUBLIC: %w", err)
	}
	if !pub.ObjectAttributes.Restricted || !pub.ObjectAttributes.Decrypt || pub.ObjectAttributes.SignEncrypt {
		return nil, errors.New("not a restricted decryption (storage) key")
	}
	if _, err := tpm2.ImportEncapsulationKey(pub); err != nil {
		return nil, fmt.Errorf("not a key DPS can encrypt to: %w", err)
	}
	return pub, nil
}

// sameTPMKey reports whether a and b are the same key: the same algorithm and the same public
// key material. An enrollment's EK may come from another tool than the device's SDK; what
// identifies the TPM is its key, which only that TPM can use (UNCONFIRMED how DPS compares;
// comparing the key admits no other TPM than a byte-for-byte comparison would).
func sameTPMKey(a, b *tpm2.TPMTPublic) bool {
	if a.Type != b.Type {
		return false
	}
	switch a.Type {
	case tpm2.TPMAlgRSA:
		ua, err1 := a.Unique.RSA()
		ub, err2 := b.Unique.RSA()
		pa, err3 := a.Parameters.RSADetail()
		pb, err4 := b.Parameters.RSADetail()
		if err := errors.Join(err1, err2, err3, err4); err != nil {
			return false
		}
		return bytes.Equal(ua.Buffer, ub.Buffer) && rsaExponent(pa.Exponent) == rsaExponent(pb.Exponent)
	case tpm2.TPMAlgECC:
		ua, err1 := a.Unique.ECC()
		ub, err2 := b.Unique.ECC()
		if err1 != nil || err2 != nil {
			return false
		}
		return bytes.Equal(ua.X.Buffer, ub.X.Buffer) && bytes.Equal(ua.Y.Buffer, ub.Y.Buffer)
	}
	return false
}

// rsaExponent reads a TPMS_RSA_PARMS exponent, where 0 stands for the default 65537.
func rsaExponent(e uint32) uint32 {
	if e == 0 {
		return 65537
	}
	return e
}

// tpmActivationBlob builds the authenticationKey DPS sends a TPM device: hmacKey, wrapped so
// that only the TPM holding ek's private part (with srk loaded) can import it. uriData is
// encrypted into the last field.
func tpmActivationBlob(ek, srk *tpm2.TPMTPublic, hmacKey, uriData []byte) ([]byte, error) {
	innerKey := make([]byte, innerWrapKeySize)
	if _, err := rand.Read(innerKey); err != nil {
		return nil, err
	}
	srkName, err := tpm2.ObjectName(srk)
	if err != nil {
		return nil, fmt.Errorf("SRK name: %w", err)
	}
	ekKEM, err := tpm2.ImportEncapsulationKey(ek)
	if err != nil {
		return nil, fmt.Errorf("EK: %w", err)
	}
	// The credential: the inner wrap key, for whoever can activate it with the EK and the SRK.
	idObject, ekSeed, err := tpm2.CreateCredential(rand.Reader, ekKEM, srkName.Buffer, innerKey)
	if err != nil {
		return nil, fmt.Errorf("making the credential: %w", err)
	}

	// The identity key: an HMAC-SHA256 keyed-hash object. Its unique field binds the public
	// area to the secret: H_nameAlg(seedValue || key) (Part 1, "Public Area Creation"). It
	// must be duplicable (fixedTPM and fixedParent clear) to be imported at all.
	seed := make([]byte, sha256.Size)
	if _, err := rand.Read(seed); err != nil {
		return nil, err
	}
	unique := sha256.Sum256(append(append([]byte{}, seed...), hmacKey...))
	idPub := tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgKeyedHash,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{
			UserWithAuth: true,
			NoDA:         true,
			SignEncrypt:  true,
		},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgKeyedHash, &tpm2.TPMSKeyedHashParms{
			Scheme: tpm2.TPMTKeyedHashScheme{
				Scheme:  tpm2.TPMAlgHMAC,
				Details: tpm2.NewTPMUSchemeKeyedHash(tpm2.TPMAlgHMAC, &tpm2.TPMSSchemeHMAC{HashAlg: tpm2.TPMAlgSHA256}),
			},
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgKeyedHash, &tpm2.TPM2BDigest{Buffer: unique[:]}),
	}
	idName, err := tpm2.ObjectName(&idPub)
	if err != nil {
		return nil, fmt.Errorf("identity key name: %w", err)
	}
	sensitive := tpm2.Marshal(tpm2.TPMTSensitive{
		SensitiveType: tpm2.TPMAlgKeyedHash,
		SeedValue:     tpm2.TPM2BDigest{Buffer: seed},
		Sensitive:     tpm2.NewTPMUSensitiveComposite(tpm2.TPMAlgKeyedHash, &tpm2.TPM2BSensitiveData{Buffer: hmacKey}),
	})
	sensitive2B := sized(sensitive) // TPM2B_SENSITIVE

	// Inner wrapper (Part 1, "Inner Duplication Wrapper"): integrity = H_nameAlg(TPM2B_SENSITIVE
	// || name), then TPM2B_DIGEST(integrity) || TPM2B_SENSITIVE encrypted AES-CFB, zero IV.
	ih := sha256.New()
	ih.Write(sensitive2B)
	ih.Write(idName.Buffer)
	inner, err := cfb(innerKey, append(sized(ih.Sum(nil)), sensitive2B...))
	if err != nil {
		return nil, err
	}

	// Outer wrapper to the SRK (Part 1, "Outer Duplication Wrapper"): a seed encapsulated to
	// the SRK; symmetric key KDFa(nameAlg, seed, "STORAGE", name, "", bits of the SRK's
	// symmetric algorithm); HMAC key KDFa(nameAlg, seed, "INTEGRITY", "", "", digest bits);
	// duplicate = TPM2B_DIGEST(HMAC(encrypted || name)) || encrypted.
	srkKEM, err := tpm2.ImportEncapsulationKey(srk)
	if err != nil {
		return nil, fmt.Errorf("SRK: %w", err)
	}
	outerSeed, srkSeed, err := srkKEM.Encapsulate(rand.Reader, "DUPLICATE")
	if err != nil {
		return nil, fmt.Errorf("encrypting the duplication seed: %w", err)
	}
	hashAlg, err := srkKEM.NameAlg().Hash()
	if err != nil {
		return nil, err
	}
	sym := srkKEM.SymmetricParameters()
	bits, err := sym.KeyBits.AES()
	if err != nil || sym.Algorithm != tpm2.TPMAlgAES {
		return nil, errors.New("the SRK's symmetric algorithm is not AES")
	}
	encrypted, err := cfb(tpm2.KDFa(hashAlg, outerSeed, "STORAGE", idName.Buffer, nil, int(*bits)), inner)
	if err != nil {
		return nil, err
	}
	mac := hmac.New(hashAlg.New, tpm2.KDFa(hashAlg, outerSeed, "INTEGRITY", nil, nil, hashAlg.Size()*8))
	mac.Write(encrypted)
	mac.Write(idName.Buffer)
	duplicate := append(sized(mac.Sum(nil)), encrypted...)

	encURI, err := cfb(innerKey, uriData)
	if err != nil {
		return nil, err
	}

	var blob []byte
	blob = append(blob, sized(idObject)...)                 // TPM2B_ID_OBJECT
	blob = append(blob, sized(ekSeed)...)                   // TPM2B_ENCRYPTED_SECRET (EK)
	blob = append(blob, sized(duplicate)...)                // TPM2B_PRIVATE
	blob = append(blob, sized(srkSeed)...)                  // TPM2B_ENCRYPTED_SECRET (SRK)
	blob = append(blob, tpm2.Marshal(tpm2.New2B(idPub))...) // TPM2B_PUBLIC
	blob = append(blob, sized(encURI)...)                   // TPM2B_DATA
	return blob, nil
}

// sized prefixes b with its length as a big-endian UINT16, the form of every TPM2B.
func sized(b []byte) []byte {
	return append([]byte{byte(len(b) >> 8), byte(len(b))}, b...)
}

// cfb encrypts plaintext with AES-CFB under key and a zero IV, as TPM wrappers do.
func cfb(key, plaintext []byte) ([]byte, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	out := make([]byte, len(plaintext))
	//lint:ignore SA1019 the TPM 2.0 credential blob is AES-CFB by specification; the format is not ours to choose
	cipher.NewCFBEncrypter(block, make([]byte, block.BlockSize())).XORKeyStream(out, plaintext)
	return out, nil
}
