// Package dpsdevice is a device registering with DPS over the device registration API, the way
// Microsoft's device SDKs do over HTTP: PUT {idScope}/registrations/{id}/register, then poll
// {idScope}/registrations/{id}/operations/{operationId} until the operation ends. It attests
// with a symmetric key (a SAS token), an X.509 certificate (presented by the HTTP client's TLS
// configuration) or a TPM (the challenge flow of DPS's TPM attestation). Tests use it to ask
// the question that matters after a deprovisioning: can this device still get in?
//
// DPS refuses a device in one of two ways, and [Refused] tells which: an HTTP error answer
// (401 when the credential does not attest against any enrollment entry), or an operation that
// ends with status "disabled" (the credential attests against an entry that is disabled:
// Microsoft's custom allocation tutorial, "Troubleshooting custom allocation policies").
package dpsdevice

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"dpsdeprov/azure/sas"
)

// GlobalHost is the global device endpoint of DPS.
const GlobalHost = "global.azure-devices-provisioning.net"

// APIVersion is the device API version sent; the Node SDK sends 2019-03-31, newer SDKs
// 2021-06-01, and the emulator serves any.
const APIVersion = "2021-06-01"

// maxPolls bounds the operation polls: against the emulator an operation has ended by the
// first poll, so more than a few means the service is not answering as DPS does.
const maxPolls = 20

// Client registers devices with one DPS instance.
type Client struct {
	// HTTP carries the requests. For an X.509 device it presents the device's certificate
	// chain as its TLS client certificate.
	HTTP *http.Client
	// Host is the device endpoint; empty means GlobalHost.
	Host string
	// IDScope is the DPS instance's id scope.
	IDScope string
}

// TPM is a device's TPM, as the SDKs' TPM security clients present it (see
// internal/tpmdevice for one on the TPM simulator).
type TPM interface {
	// EndorsementKey and StorageRootKey return the public areas as TPM2B_PUBLIC.
	EndorsementKey() []byte
	StorageRootKey() []byte
	// ActivateIdentityKey imports the key of an activation blob from DPS.
	ActivateIdentityKey(blob []byte) error
	// SignWithIdentity returns the HMAC of data under the imported key.
	SignWithIdentity(data []byte) ([]byte, error)
}

// Result is an assigned registration.
type Result struct {
	OperationID string
	AssignedHub string
	DeviceID    string
	Substatus   string
	// State is the registrationState DPS returned, as sent.
	State json.RawMessage
}

// Refused is DPS's refusal of a registration.
type Refused struct {
	// HTTPStatus is the status of the answer that refused the device (401, 404, …), or 0 when
	// the operation itself ended without an assignment.
	HTTPStatus int
	// Status is the final operation status ("disabled", "failed") when HTTPStatus is 0.
	Status string
	// ErrorCode and Message are DPS's, when it sent them.
	ErrorCode int
	Message   string
}

func (e *Refused) Error() string {
	if e.HTTPStatus != 0 {
		return fmt.Sprintf("DPS refused the registration: HTTP %d (%d) %s", e.HTTPStatus, e.ErrorCode, e.Message)
	}
	return fmt.Sprintf("the registration ended with status %q: %s", e.Status, e.Message)
}

// Disabled reports whether the device attested against a disabled enrollment entry.
func (e *Refused) Disabled() bool { return e.HTTPStatus == 0 && e.Status == "disabled" }

// Kind names the refusal in one word for test output: "disabled", "failed", or "http 401".
func (e *Refused) Kind() string {
	if e.HTTPStatus != 0 {
		return "http " + strconv.Itoa(e.HTTPStatus)
	}
	return e.Status
}

// AsRefused returns the refusal in err, if err is one.
func AsRefused(err error) (*Refused, bool) {
	var r *Refused
	ok := errors.As(err, &r)
	return r, ok
}

// RegisterSymmetricKey registers regID with a SAS token signed with key (an individual
// enrollment's key, or the key derived from a group's).
func (c *Client) RegisterSymmetricKey(ctx context.Context, regID, key string) (*Result, error) {
	tok, err := sas.Sign(c.IDScope+"/registrations/"+regID, "registration", key, time.Now().Add(time.Hour))
	if err != nil {
		return nil, err
	}
	return c.run(ctx, regID, tok, map[string]any{"registrationId": regID})
}

// RegisterX509 registers regID with the certificate c.HTTP presents.
func (c *Client) RegisterX509(ctx context.Context, regID string) (*Result, error) {
	return c.run(ctx, regID, "", map[string]any{"registrationId": regID})
}

// RegisterTPM registers regID with TPM attestation: a first request carrying the EK and SRK,
// which DPS answers 401 with an activation blob; the device imports its key and repeats the
// request with a SAS token signed by the TPM; once assigned, it imports the hub key DPS
// returns (registrationState.tpm.authenticationKey). Sources: azure-iot-sdk-node
// provisioning/device/src/tpm_registration.ts and provisioning/transport/http/src/http.ts.
func (c *Client) RegisterTPM(ctx context.Context, regID string, tpm TPM) (*Result, error) {
	body := map[string]any{"registrationId": regID, "tpm": map[string]string{
		"endorsementKey": base64.StdEncoding.EncodeToString(tpm.EndorsementKey()),
		"storageRootKey": base64.StdEncoding.EncodeToString(tpm.StorageRootKey()),
	}}
	st, b, err := c.do(ctx, http.MethodPut, c.registerURL(regID), "", body)
	if err != nil {
		return nil, err
	}
	if st != http.StatusUnauthorized {
		if st >= 400 {
			return nil, refusal(st, b)
		}
		return nil, fmt.Errorf("registering %s: DPS answered %d to a TPM registration without a token, not the 401 challenge every SDK expects: %s", regID, st, b)
	}
	var ch struct {
		AuthenticationKey string `json:"authenticationKey"`
	}
	if json.Unmarshal(b, &ch) != nil || ch.AuthenticationKey == "" {
		return nil, refusal(st, b) // a plain 401: no enrollment for this TPM
	}
	blob, err := base64.StdEncoding.DecodeString(ch.AuthenticationKey)
	if err != nil {
		return nil, fmt.Errorf("registering %s: the authenticationKey is not base64: %w", regID, err)
	}
	if err := tpm.ActivateIdentityKey(blob); err != nil {
		return nil, fmt.Errorf("registering %s: activating the challenge key: %w", regID, err)
	}
	tok, err := signedToken(c.IDScope+"/registrations/"+regID, time.Now().Add(time.Hour), tpm.SignWithIdentity)
	if err != nil {
		return nil, fmt.Errorf("registering %s: signing with the TPM: %w", regID, err)
	}
	res, err := c.run(ctx, regID, tok, body)
	if err != nil {
		return nil, err
	}
	var state struct {
		TPM *struct {
			AuthenticationKey string `json:"authenticationKey"`
		} `json:"tpm"`
	}
	if json.Unmarshal(res.State, &state) != nil || state.TPM == nil || state.TPM.AuthenticationKey == "" {
		return nil, fmt.Errorf("registering %s: an assigned TPM registration without registrationState.tpm.authenticationKey", regID)
	}
	if blob, err = base64.StdEncoding.DecodeString(state.TPM.AuthenticationKey); err == nil {
		err = tpm.ActivateIdentityKey(blob)
	}
	if err != nil {
		return nil, fmt.Errorf("registering %s: importing the hub key: %w", regID, err)
	}
	return res, nil
}

// signedToken builds a device SAS token whose signature sign computes: the form the SDKs send
// (sr and sig URL-encoded, skn=registration).
func signedToken(resource string, expiry time.Time, sign func([]byte) ([]byte, error)) (string, error) {
	sr := url.QueryEscape(resource)
	se := strconv.FormatInt(expiry.Unix(), 10)
	sig, err := sign([]byte(sr + "\n" + se))
	if err != nil {
		return "", err
	}
	return "SharedAccessSignature sr=" + sr + "&sig=" + url.QueryEscape(base64.StdEncoding.EncodeToString(sig)) +
		"&se=" + se + "&skn=registration", nil
}

func (c *Client) base(regID string) string {
	host := c.Host
	if host == "" {
		host = GlobalHost
	}
	return "https://" + host + "/" + c.IDScope + "/registrations/" + url.PathEscape(regID)
}

func (c *Client) registerURL(regID string) string {
	return c.base(regID) + "/register?api-version=" + APIVersion
}

// run sends the register request with auth and polls the operation until it ends.
func (c *Client) run(ctx context.Context, regID, auth string, body any) (*Result, error) {
	st, b, err := c.do(ctx, http.MethodPut, c.registerURL(regID), auth, body)
	if err != nil {
		return nil, err
	}
	if st != http.StatusAccepted && st != http.StatusOK {
		return nil, refusal(st, b)
	}
	for range maxPolls {
		var op struct {
			OperationID       string          `json:"operationId"`
			Status            string          `json:"status"`
			RegistrationState json.RawMessage `json:"registrationState"`
		}
		if err := json.Unmarshal(b, &op); err != nil {
			return nil, fmt.Errorf("registering %s: the answer is not a RegistrationOperationStatus: %w", regID, err)
		}
		switch op.Status {
		case "assigned":
			var rs struct {
				AssignedHub string `json:"assignedHub"`
				DeviceID    string `json:"deviceId"`
				Substatus   string `json:"substatus"`
			}
			if err := json.Unmarshal(op.RegistrationState, &rs); err != nil || rs.AssignedHub == "" || rs.DeviceID == "" {
				return nil, fmt.Errorf("registering %s: assigned without assignedHub and deviceId: %s", regID, b)
			}
			return &Result{OperationID: op.OperationID, AssignedHub: rs.AssignedHub, DeviceID: rs.DeviceID,
				Substatus: rs.Substatus, State: op.RegistrationState}, nil
		case "assigning", "unassigned":
			if op.OperationID == "" {
				return nil, fmt.Errorf("registering %s: status %s without an operationId", regID, op.Status)
			}
			st, b, err = c.do(ctx, http.MethodGet, c.base(regID)+"/operations/"+url.PathEscape(op.OperationID)+"?api-version="+APIVersion, auth, nil)
			if err != nil {
				return nil, err
			}
			if st != http.StatusOK {
				return nil, refusal(st, b)
			}
		default: // "disabled", "failed"
			var rs struct {
				ErrorCode    int    `json:"errorCode"`
				ErrorMessage string `json:"errorMessage"`
			}
			_ = json.Unmarshal(op.RegistrationState, &rs)
			return nil, &Refused{Status: op.Status, ErrorCode: rs.ErrorCode, Message: rs.ErrorMessage}
		}
	}
	return nil, fmt.Errorf("registering %s: still assigning after %d polls", regID, maxPolls)
}

// refusal reads a DPS error answer. Throttling and server errors are not refusals: they are
// returned as plain errors, so that a test never mistakes an outage for a revoked device.
func refusal(status int, body []byte) error {
	var e struct {
		ErrorCode int    `json:"errorCode"`
		Message   string `json:"message"`
	}
	_ = json.Unmarshal(body, &e)
	if status == http.StatusTooManyRequests || status >= 500 || status < 400 {
		return fmt.Errorf("DPS answered %d: %s", status, body)
	}
	return &Refused{HTTPStatus: status, ErrorCode: e.ErrorCode, Message: e.Message}
}

func (c *Client) do(ctx context.Context, method, u, auth string, body any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, err
	}
	return resp.StatusCode, b, nil
}
