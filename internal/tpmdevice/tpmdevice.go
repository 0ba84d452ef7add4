// Package tpmdevice is a TPM 2.0 for test devices: the device half of DPS's TPM attestation,
// run on Microsoft's reference TPM 2.0 simulator (compiled in through go-tpm-tools, so it needs
// cgo and a C compiler).
//
// A [Device] does what the TPM security clients of Microsoft's device SDKs do on a real TPM
// (azure-iot-sdk-node security/tpm/src/tpm.ts, azure-iot-sdk-java SecurityProviderTPMEmulator,
// azure-iot-sdk-c hsm_client_tpm.c): it creates an endorsement key (EK) and a storage root key
// (SRK) from the SDKs' templates, hands out their public areas as TPM2B_PUBLIC, imports the
// "authenticationKey" DPS sends (TPM2_ActivateCredential under an EK policy session, then
// TPM2_Import and TPM2_Load under the SRK), and signs with the imported key (TPM2_HMAC). The
// private parts of the EK and of the imported key never leave the simulated TPM; a device that
// lost its enrollment cannot get in by any other means than a real one could.
//
// The simulator is one per process (the reference implementation keeps global state), so
// every Device of a test binary lives in the same simulated TPM, kept apart by a
// device-specific unique field in its EK and SRK templates: distinct keys, as distinct TPMs
// would have. Commands are serialised; a Device is safe for concurrent use.
package tpmdevice

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// The SDKs' templates (Node tpm.ts _ekTemplate/_srkTemplate; Java SecurityProviderTPMEmulator
// EK_TEMPLATE/SRK_TEMPLATE; C hsm_client_tpm.c): RSA-2048 with AES-128-CFB, name algorithm
// SHA-256. The EK's policy is the TCG default, PolicySecret(TPM_RH_ENDORSEMENT).
var (
	ekPolicyDigest = []byte{
		0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xb3, 0xf8, 0x1a, 0x90, 0xcc, 0x8d, 0x46, 0xa5, 0xd7, 0x24,
		0xfd, 0x52, 0xd7, 0x6e, 0x06, 0x52, 0x0b, 0x64, 0xf2, 0xa1, 0xda, 0x1b, 0x33, 0x14, 0x69, 0xaa}
	aes128CFB = tpm2.TPMTSymDefObject{
		Algorithm: tpm2.TPMAlgAES,
		KeyBits:   tpm2.NewTPMUSymKeyBits(tpm2.TPMAlgAES, tpm2.TPMKeyBits(128)),
		Mode:      tpm2.NewTPMUSymMode(tpm2.TPMAlgAES, tpm2.TPMAlgCFB),
	}
)

func rsaStorageTemplate(attrs tpm2.TPMAObject, policy, unique []byte) tpm2.TPMTPublic {
	return tpm2.TPMTPublic{
		Type:             tpm2.TPMAlgRSA,
		NameAlg:          tpm2.TPMAlgSHA256,
		ObjectAttributes: attrs,
		AuthPolicy:       tpm2.TPM2BDigest{Buffer: policy},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
			Symmetric: aes128CFB,
			KeyBits:   2048,
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: unique}),
	}
}

func ekTemplate(unique []byte) tpm2.TPMTPublic {
	return rsaStorageTemplate(tpm2.TPMAObject{Restricted: true, Decrypt: true, FixedTPM: true, FixedParent: true,
		AdminWithPolicy: true, SensitiveDataOrigin: true}, ekPolicyDigest, unique)
}

func srkTemplate(unique []byte) tpm2.TPMTPublic {
	return rsaStorageTemplate(tpm2.TPMAObject{Restricted: true, Decrypt: true, FixedTPM: true, FixedParent: true,
		NoDA: true, UserWithAuth: true, SensitiveDataOrigin: true}, nil, unique)
}

// simulator is the process's one TPM.
var sim struct {
	once sync.Once
	mu   sync.Mutex
	tpm  transport.TPM
	err  error
}

// Device is one device's TPM: its EK, its SRK, and the identity key it last imported.
type Device struct {
	mu       sync.Mutex
	ek, srk  loaded
	idPublic *tpm2.TPM2BPublic
	idSecret *tpm2.TPM2BPrivate
	uriData  []byte
}

// loaded is a primary key kept as a saved context, so that it costs no slot in the TPM
// between commands and is not regenerated.
type loaded struct {
	public tpm2.TPM2BPublic
	name   tpm2.TPM2BName
	ctx    tpm2.TPMSContext
}

// New creates the TPM of a device. seed makes its keys its own: devices with different seeds
// have different EKs (use the registration id).
func New(seed string) (*Device, error) {
	if err := open(); err != nil {
		return nil, err
	}
	u := sha256.Sum256([]byte("tpmdevice:" + seed))
	d := &Device{}
	sim.mu.Lock()
	defer sim.mu.Unlock()
	var err error
	if d.ek, err = createPrimary(tpm2.TPMRHEndorsement, ekTemplate(u[:])); err != nil {
		return nil, fmt.Errorf("creating the endorsement key: %w", err)
	}
	if d.srk, err = createPrimary(tpm2.TPMRHOwner, srkTemplate(u[:])); err != nil {
		return nil, fmt.Errorf("creating the storage root key: %w", err)
	}
	return d, nil
}

func open() error {
	sim.once.Do(func() { sim.tpm, sim.err = openSimulator() })
	if sim.err != nil {
		return fmt.Errorf("opening the TPM simulator: %w", sim.err)
	}
	return nil
}

func createPrimary(h tpm2.TPMHandle, tmpl tpm2.TPMTPublic) (loaded, error) {
	rsp, err := tpm2.CreatePrimary{PrimaryHandle: h, InPublic: tpm2.New2B(tmpl)}.Execute(sim.tpm)
	if err != nil {
		return loaded{}, err
	}
	defer flush(rsp.ObjectHandle)
	saved, err := tpm2.ContextSave{SaveHandle: rsp.ObjectHandle}.Execute(sim.tpm)
	if err != nil {
		return loaded{}, err
	}
	return loaded{public: rsp.OutPublic, name: rsp.Name, ctx: saved.Context}, nil
}

// load brings a saved primary back; the caller flushes the handle.
func (l *loaded) load() (tpm2.NamedHandle, error) {
	rsp, err := tpm2.ContextLoad{Context: l.ctx}.Execute(sim.tpm)
	if err != nil {
		return tpm2.NamedHandle{}, err
	}
	return tpm2.NamedHandle{Handle: rsp.LoadedHandle, Name: l.name}, nil
}

func flush(h tpm2.TPMHandle) { _, _ = tpm2.FlushContext{FlushHandle: h}.Execute(sim.tpm) }

// EndorsementKey returns the EK's public area as a TPM2B_PUBLIC: what the SDKs send DPS and
// what an operator enrolls (base64-encoded).
func (d *Device) EndorsementKey() []byte { return tpm2.Marshal(d.ek.public) }

// StorageRootKey returns the SRK's public area as a TPM2B_PUBLIC.
func (d *Device) StorageRootKey() []byte { return tpm2.Marshal(d.srk.public) }

// ActivateIdentityKey imports the key in an activation blob from DPS (the decoded
// "authenticationKey") as the device's identity key, replacing the previous one, as the SDKs'
// activateIdentityKey does. It fails if the blob was not made for this TPM's EK and SRK.
func (d *Device) ActivateIdentityKey(blob []byte) error {
	f, err := splitBlob(blob)
	if err != nil {
		return err
	}
	idPub, err := tpm2.Unmarshal[tpm2.TPM2BPublic](f[4])
	if err != nil {
		return fmt.Errorf("activation blob: identity key public area: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	sim.mu.Lock()
	defer sim.mu.Unlock()
	ek, err := d.ek.load()
	if err != nil {
		return fmt.Errorf("loading the endorsement key: %w", err)
	}
	defer flush(ek.Handle)
	srk, err := d.srk.load()
	if err != nil {
		return fmt.Errorf("loading the storage root key: %w", err)
	}
	defer flush(srk.Handle)

	// The credential names the SRK; the EK is authorised by the endorsement hierarchy's
	// policy, as in the SDKs (PolicySecret on TPM_RH_ENDORSEMENT).
	act, err := tpm2.ActivateCredential{
		ActivateHandle: srk,
		KeyHandle: tpm2.AuthHandle{Handle: ek.Handle, Name: ek.Name,
			Auth: tpm2.Policy(tpm2.TPMAlgSHA256, 16, endorsementPolicy)},
		CredentialBlob: tpm2.TPM2BIDObject{Buffer: f[0]},
		Secret:         tpm2.TPM2BEncryptedSecret{Buffer: f[1]},
	}.Execute(sim.tpm)
	if err != nil {
		return fmt.Errorf("TPM2_ActivateCredential: %w", err)
	}
	innerKey := act.CertInfo.Buffer
	// The symmetric definition is AES-CFB with the key size the service chose (Node and Java
	// take the inner wrap key's length).
	imp, err := tpm2.Import{
		ParentHandle:  srk,
		EncryptionKey: tpm2.TPM2BData{Buffer: innerKey},
		ObjectPublic:  *idPub,
		Duplicate:     tpm2.TPM2BPrivate{Buffer: f[2]},
		InSymSeed:     tpm2.TPM2BEncryptedSecret{Buffer: f[3]},
		Symmetric: tpm2.TPMTSymDef{
			Algorithm: tpm2.TPMAlgAES,
			KeyBits:   tpm2.NewTPMUSymKeyBits(tpm2.TPMAlgAES, tpm2.TPMKeyBits(len(innerKey)*8)),
			Mode:      tpm2.NewTPMUSymMode(tpm2.TPMAlgAES, tpm2.TPMAlgCFB),
		},
	}.Execute(sim.tpm)
	if err != nil {
		return fmt.Errorf("TPM2_Import: %w", err)
	}
	// Prove now that the key loads, as the SDKs do before persisting it.
	ld, err := tpm2.Load{ParentHandle: srk, InPrivate: imp.OutPrivate, InPublic: *idPub}.Execute(sim.tpm)
	if err != nil {
		return fmt.Errorf("TPM2_Load: %w", err)
	}
	flush(ld.ObjectHandle)
	// The URI data is encrypted with the inner wrap key (AES-CFB, zero IV); the SDKs decrypt
	// it and keep it unused, and so does this.
	uri, err := decryptCFB(innerKey, f[5])
	if err != nil {
		return fmt.Errorf("activation blob: URI data: %w", err)
	}
	d.idPublic, d.idSecret, d.uriData = idPub, &imp.OutPrivate, uri
	return nil
}

// URIData returns the decrypted URI data of the last activation blob.
func (d *Device) URIData() []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]byte(nil), d.uriData...)
}

// SignWithIdentity returns the HMAC of data under the imported identity key, computed inside
// the TPM.
func (d *Device) SignWithIdentity(data []byte) ([]byte, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.idPublic == nil {
		return nil, errors.New("no identity key: activate one first")
	}
	pub, err := d.idPublic.Contents()
	if err != nil {
		return nil, err
	}
	kh, err := pub.Parameters.KeyedHashDetail()
	if err != nil {
		return nil, fmt.Errorf("the identity key is not a keyed-hash key: %w", err)
	}
	scheme, err := kh.Scheme.Details.HMAC()
	if err != nil {
		return nil, fmt.Errorf("the identity key is not an HMAC key: %w", err)
	}
	sim.mu.Lock()
	defer sim.mu.Unlock()
	srk, err := d.srk.load()
	if err != nil {
		return nil, fmt.Errorf("loading the storage root key: %w", err)
	}
	defer flush(srk.Handle)
	ld, err := tpm2.Load{ParentHandle: srk, InPrivate: *d.idSecret, InPublic: *d.idPublic}.Execute(sim.tpm)
	if err != nil {
		return nil, fmt.Errorf("TPM2_Load: %w", err)
	}
	defer flush(ld.ObjectHandle)
	mac, err := tpm2.Hmac{
		Handle:  tpm2.AuthHandle{Handle: ld.ObjectHandle, Name: ld.Name, Auth: tpm2.PasswordAuth(nil)},
		Buffer:  tpm2.TPM2BMaxBuffer{Buffer: data},
		HashAlg: scheme.HashAlg,
	}.Execute(sim.tpm)
	if err != nil {
		return nil, fmt.Errorf("TPM2_HMAC: %w", err)
	}
	return mac.OutHMAC.Buffer, nil
}

// endorsementPolicy satisfies the EK's policy: PolicySecret on the endorsement hierarchy.
func endorsementPolicy(t transport.TPM, session tpm2.TPMISHPolicy, nonceTPM tpm2.TPM2BNonce) error {
	_, err := tpm2.PolicySecret{AuthHandle: tpm2.TPMRHEndorsement, PolicySession: session, NonceTPM: nonceTPM}.Execute(t)
	return err
}

// splitBlob cuts an activation blob into its six size-prefixed fields: TPM2B_ID_OBJECT,
// TPM2B_ENCRYPTED_SECRET, TPM2B_PRIVATE, TPM2B_ENCRYPTED_SECRET, TPM2B_PUBLIC, TPM2B_DATA.
// The first four and the last are returned without their size; the TPM2B_PUBLIC with it.
func splitBlob(b []byte) ([6][]byte, error) {
	names := [6]string{"TPM2B_ID_OBJECT", "TPM2B_ENCRYPTED_SECRET (EK)", "TPM2B_PRIVATE",
		"TPM2B_ENCRYPTED_SECRET (SRK)", "TPM2B_PUBLIC", "TPM2B_DATA"}
	var f [6][]byte
	for i := range f {
		if len(b) < 2 {
			return f, fmt.Errorf("activation blob ends before its %s", names[i])
		}
		n := int(binary.BigEndian.Uint16(b))
		if len(b) < 2+n {
			return f, fmt.Errorf("activation blob: %s is cut short", names[i])
		}
		if i == 4 {
			f[i] = b[:2+n]
		} else {
			f[i] = b[2 : 2+n]
		}
		b = b[2+n:]
	}
	if len(b) != 0 {
		return f, fmt.Errorf("activation blob has %d bytes after its TPM2B_DATA", len(b))
	}
	return f, nil
}

func decryptCFB(key, ciphertext []byte) ([]byte, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	out := make([]byte, len(ciphertext))
	//lint:ignore SA1019 the TPM 2.0 credential blob is AES-CFB by specification; the format is not ours to choose
	cipher.NewCFBDecrypter(block, make([]byte, block.BlockSize())).XORKeyStream(out, ciphertext)
	return out, nil
}
