package emulator

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-tpm/tpm2"
)

// TPM attestation over the device registration API, as the official device SDKs drive it
// (azure-iot-sdk-node provisioning/transport/http/src/http.ts getAuthenticationChallenge and
// provisioning/device/src/tpm_registration.ts; azure-iot-sdk-java ContractAPIHttp
// requestNonceForTPM and RegisterTask authenticateWithTPM; azure-iot-sdk-csharp
// provisioning/transport/http/src/TPM/TpmDelegatingHandler.cs and TpmChallenge.cs):
//
//  1. PUT …/registrations/{id}/register without Authorization, body
//     {"registrationId", "tpm": {"endorsementKey", "storageRootKey"}} (base64 TPM2B_PUBLICs).
//     DPS answers 401 with a JSON body holding "authenticationKey": a fresh key wrapped to that
//     EK and SRK (tpm.go), and "keyName": "registration". Every SDK requires the 401 here;
//     Java's ACCEPTABLE_NONCE_HTTP_STATUS is 401, Node fails with "The server did NOT respond
//     with an unauthorized error" otherwise.
//  2. The device activates the key in its TPM, signs "{idScope}/registrations/{id}\n{expiry}"
//     with it (TPM2_HMAC), and sends the same PUT again with
//     "Authorization: SharedAccessSignature sr=…&sig=…&se=…&skn=registration".
//  3. From here on it is the common flow (register_outcome.go): 202 assigning, then the poll
//     (signed the same way) answers "assigned" or "disabled". An assigned TPM registration
//     carries registrationState.tpm.authenticationKey, a second activation blob holding the
//     hub identity's symmetric key, which the SDKs import before connecting to the hub (Node
//     tpm_registration.ts state "storingSecret", Java ProvisioningTask ASSIGNED, C#
//     HttpAuthStrategyTpm.SaveCredentials; the custom allocation article shows the field in a
//     TPM registration response). The hub identity is "sas" with that key.
//
// The challenge is answered only for an individual enrollment (DPS has no TPM groups) of type
// tpm whose EK is the one presented; otherwise 401 without authenticationKey. A disabled
// enrollment is challenged like an enabled one (the device must authenticate before DPS tells
// it anything about the entry), then completes "disabled" (UNCONFIRMED: no recording of a TPM
// device against a disabled enrollment).

// tpmRegResult is the tpm member of a registration result.
type tpmRegResult struct {
	AuthenticationKey string `json:"authenticationKey"`
}

// tpmChallengeBody is the 401 answer to an unauthenticated TPM registration: the error fields
// of every DPS error plus the challenge (C# TpmChallenge: message, authenticationKey, keyName).
type tpmChallengeBody struct {
	dpsErrorBody
	AuthenticationKey string `json:"authenticationKey"`
	KeyName           string `json:"keyName"`
}

// tpmChallenge is a key DPS issued to a TPM and may see a SAS token signed with.
type tpmChallenge struct {
	key string // base64
	ek  *tpm2.TPMTPublic
}

// maxChallenges bounds the keys remembered per registration id (a device that retries step 1
// gets a new key each time; the latest few stay valid) and the registration ids remembered.
const (
	maxChallenges       = 4
	maxChallengeDevices = 10000
)

func (s *opStore) remember(regID string, c tpmChallenge) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := strings.ToLower(regID)
	if _, ok := s.challenges[k]; !ok && len(s.challenges) >= maxChallengeDevices {
		for other := range s.challenges {
			delete(s.challenges, other)
			break
		}
	}
	l := append(s.challenges[k], c)
	if len(l) > maxChallenges {
		l = l[len(l)-maxChallenges:]
	}
	s.challenges[k] = l
}

func (s *opStore) challengesFor(regID string) []tpmChallenge {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]tpmChallenge(nil), s.challenges[strings.ToLower(regID)]...)
}

// registerTPM serves a registration request whose body carries TPM keys.
func (d *dps) registerTPM(w http.ResponseWriter, r *http.Request, regID string, att *tpmAttestation, payload json.RawMessage) {
	ek, err := parseTPMPublic(att.EndorsementKey)
	if err != nil {
		dpsError(w, http.StatusBadRequest, 0, "tpm.endorsementKey: %v", err)
		return
	}
	srk, err := parseTPMPublic(att.StorageRootKey)
	if err != nil {
		dpsError(w, http.StatusBadRequest, 0, "tpm.storageRootKey: %v", err)
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	en := d.enrollments[strings.ToLower(regID)]
	if en == nil || en.body.Attestation == nil || en.body.Attestation.Type != "tpm" || en.body.Attestation.TPM == nil {
		dpsError(w, http.StatusUnauthorized, 401002, "unauthorized: no TPM individual enrollment %s", regID)
		return
	}
	if enrolled, err := parseTPMPublic(en.body.Attestation.TPM.EndorsementKey); err != nil || !sameTPMKey(enrolled, ek) {
		dpsError(w, http.StatusUnauthorized, 401002, "unauthorized: the endorsement key is not the one enrolled for %s", regID)
		return
	}
	resource := d.idScope + "/registrations/" + regID
	auth := r.Header.Get("Authorization")
	if auth == "" {
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			dpsError(w, http.StatusInternalServerError, 0, "generating a key: %v", err)
			return
		}
		blob, err := tpmActivationBlob(ek, srk, key, []byte(resource))
		if err != nil {
			dpsError(w, http.StatusBadRequest, 0, "tpm: %v", err)
			return
		}
		d.ops.remember(regID, tpmChallenge{key: base64.StdEncoding.EncodeToString(key), ek: ek})
		w.Header().Set("x-ms-error-code", strconv.Itoa(401002))
		writeJSON(w, http.StatusUnauthorized, tpmChallengeBody{
			dpsErrorBody: dpsErrorBody{ErrorCode: 401002, TrackingID: newTrackingID(), TimestampUtc: nowUTC(),
				Message: "TPM attestation: activate the authenticationKey and sign a SAS token with it"},
			AuthenticationKey: base64.StdEncoding.EncodeToString(blob),
			KeyName:           "registration",
		})
		return
	}
	tok, err := parseSAS(auth)
	if err != nil {
		dpsError(w, http.StatusUnauthorized, 401002, "unauthorized: %v", err)
		return
	}
	if !tok.coversResource(resource) {
		dpsError(w, http.StatusUnauthorized, 401002, "SAS token resource %q does not cover %s", tok.sr, resource)
		return
	}
	var signer string
	for _, c := range d.ops.challengesFor(regID) {
		if sameTPMKey(c.ek, ek) && tok.verify(c.key, time.Now()) == nil {
			signer = c.key
		}
	}
	if signer == "" {
		dpsError(w, http.StatusUnauthorized, 401002, "unauthorized: the SAS token is not signed with a key issued to this TPM, or has expired")
		return
	}
	op := &operation{keys: []string{signer}}
	if !en.enabled() {
		d.completeDisabled(w, op, regID)
		return
	}
	res := d.assign(en, regID, &credential{sas: tok}, payload)
	hubKey, err := d.hubPrimaryKey(res.AssignedHub, res.DeviceID)
	if err == nil {
		var blob []byte
		if blob, err = tpmActivationBlob(ek, srk, hubKey, []byte(res.AssignedHub+"/devices/"+res.DeviceID)); err == nil {
			res.TPM = &tpmRegResult{AuthenticationKey: base64.StdEncoding.EncodeToString(blob)}
		}
	}
	if err != nil {
		dpsError(w, http.StatusInternalServerError, 0, "issuing the hub key: %v", err)
		return
	}
	d.completeAssigned(w, op, regID, res)
}

// hubPrimaryKey returns the decoded primary symmetric key of a hub identity. The caller holds
// d.mu (the lock order is DPS, then hub, as in assign).
func (d *dps) hubPrimaryKey(host, deviceID string) ([]byte, error) {
	h := d.e.hubByHost(host)
	if h == nil {
		return nil, errHubGone
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	dev := h.devices[deviceID]
	if dev == nil {
		return nil, errHubGone
	}
	return base64.StdEncoding.DecodeString(dev.primaryKey)
}

var errHubGone = errors.New("the assigned hub identity does not exist")
