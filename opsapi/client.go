package opsapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"

	"dpsdeprov/outcome"
)

const (
	moduleName    = "dpsdeprov/opsapi"
	moduleVersion = "v0.1.0"
	// KeyHeader carries a function key (the Functions host also takes it as ?code=).
	KeyHeader = "x-functions-key"
)

// Routes of the two Operations functions under the host's route prefix (/api/): a caller that
// holds the function key calls RouteKey (the Operations function, authLevel function); a
// caller that App Service authentication signs in calls RouteSignedIn (SignedInOperations,
// authLevel anonymous: a signed-in caller holds no key). handler.RouteKey and
// handler.RouteSignedIn are these.
const (
	RouteKey      = "deprovision"
	RouteSignedIn = "signed-in/deprovision"
)

// ClientOptions configures a [Client]. The embedded azcore.ClientOptions set the transport,
// retries, logging and telemetry as for any Azure SDK client.
type ClientOptions struct {
	azcore.ClientOptions
	// Scopes are the token scopes a [NewClient] asks for: the Application ID URI of the app's
	// Entra registration with "/.default" (for example "api://dpsdeprov-contoso/.default").
	// Required with a token credential.
	Scopes []string
	// InsecureAllowCredentialWithHTTP lets the key or the token go over plain HTTP: for a local
	// run on the loopback interface only. By default a credential needs HTTPS.
	InsecureAllowCredentialWithHTTP bool
}

// Client calls the Operations function of one deployment of the app. It is safe for
// concurrent use. Every call is safe to repeat (a request carries an ID, an approval of an
// approved operation returns it), so azcore's retry policy applies to all of them.
type Client struct {
	endpoint string
	route    string // RouteKey or RouteSignedIn
	pl       runtime.Pipeline
}

// NewClient returns a client that signs in with an Entra ID token for o.Scopes, for example
// from azidentity.NewDefaultAzureCredential or NewAzureCLICredential, and calls the signed-in
// routes (RouteSignedIn): App Service authentication in front of the app validates the token
// and the app authorizes the caller by its app roles. endpoint is the app's API base, such as
// "https://dpsdeprov-contoso.azurewebsites.net/api".
func NewClient(endpoint string, cred azcore.TokenCredential, o *ClientOptions) (*Client, error) {
	if o == nil || len(o.Scopes) == 0 {
		return nil, errors.New("opsapi: a token credential needs ClientOptions.Scopes: the app's Application ID URI with /.default")
	}
	if cred == nil {
		return nil, errors.New("opsapi: credential is nil")
	}
	auth := runtime.NewBearerTokenPolicy(cred, o.Scopes, &policy.BearerTokenOptions{InsecureAllowCredentialWithHTTP: o.InsecureAllowCredentialWithHTTP})
	return newClient(endpoint, RouteSignedIn, auth, o)
}

// NewClientWithKey returns a client that sends a function key (the Operations function's, or
// the app's host key) in the x-functions-key header.
func NewClientWithKey(endpoint string, key *azcore.KeyCredential, o *ClientOptions) (*Client, error) {
	if key == nil {
		return nil, errors.New("opsapi: key is nil")
	}
	if o == nil {
		o = &ClientOptions{}
	}
	auth := runtime.NewKeyCredentialPolicy(key, KeyHeader, &runtime.KeyCredentialPolicyOptions{InsecureAllowCredentialWithHTTP: o.InsecureAllowCredentialWithHTTP})
	return newClient(endpoint, RouteKey, auth, o)
}

// NewClientWithNoCredential returns a client that sends no credential to the key routes: for
// a local host that checks no keys (devhost, Core Tools).
func NewClientWithNoCredential(endpoint string, o *ClientOptions) (*Client, error) {
	if o == nil {
		o = &ClientOptions{}
	}
	return newClient(endpoint, RouteKey, nil, o)
}

func newClient(endpoint, route string, auth policy.Policy, o *ClientOptions) (*Client, error) {
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") || u.RawQuery != "" {
		return nil, fmt.Errorf("opsapi: endpoint %q must be http(s)://{host}[/path], the app's API base such as https://{app}.azurewebsites.net/api", endpoint)
	}
	var perRetry []policy.Policy
	if auth != nil {
		perRetry = append(perRetry, auth)
	}
	pl := runtime.NewPipeline(moduleName, moduleVersion, runtime.PipelineOptions{PerRetry: perRetry}, &o.ClientOptions)
	return &Client{endpoint: strings.TrimRight(endpoint, "/"), route: route, pl: pl}, nil
}

// Endpoint returns the API base the client calls.
func (c *Client) Endpoint() string { return c.endpoint }

// do sends a call to {route}/{path} and decodes a JSON answer into out when its status is
// one of ok; any other status is an *azcore.ResponseError (see [ErrorMessage]).
func (c *Client) do(ctx context.Context, method, path string, body any, out any, ok ...int) (*http.Response, error) {
	req, err := runtime.NewRequest(ctx, method, c.endpoint+"/"+c.route+"/"+path)
	if err != nil {
		return nil, err
	}
	req.Raw().Header.Set("Accept", "application/json")
	if body != nil {
		if err := runtime.MarshalAsJSON(req, body); err != nil {
			return nil, err
		}
	}
	resp, err := c.pl.Do(req)
	if err != nil {
		return nil, err
	}
	if !runtime.HasStatusCode(resp, ok...) {
		return nil, runtime.NewResponseError(resp)
	}
	if out != nil {
		if err := runtime.UnmarshalAsJSON(resp, out); err != nil {
			return nil, fmt.Errorf("reading the answer to %s %s: %w", method, path, err)
		}
	}
	return resp, nil
}

// GetOperationOptions are the options of [Client.GetOperation] (none yet).
type GetOperationOptions struct{}

// GetOperationResponse is the answer of [Client.GetOperation].
type GetOperationResponse struct {
	Operation
}

// GetOperation returns an operation, its plan and the journal of its steps. An unknown id is
// a 404 *azcore.ResponseError.
func (c *Client) GetOperation(ctx context.Context, id string, _ *GetOperationOptions) (GetOperationResponse, error) {
	var r GetOperationResponse
	_, err := c.do(ctx, http.MethodGet, "operations/"+url.PathEscape(id), nil, &r.Operation, http.StatusOK)
	return r, err
}

// GetDeviceOptions are the options of [Client.GetDevice] (none yet).
type GetDeviceOptions struct{}

// GetDeviceResponse is the answer of [Client.GetDevice].
type GetDeviceResponse struct {
	Device
}

// GetDevice returns the state this system left a device in and its operations. A device the
// system has no record of is a 404 *azcore.ResponseError.
func (c *Client) GetDevice(ctx context.Context, registrationID string, _ *GetDeviceOptions) (GetDeviceResponse, error) {
	var r GetDeviceResponse
	_, err := c.do(ctx, http.MethodGet, "devices/"+url.PathEscape(registrationID), nil, &r.Device, http.StatusOK)
	return r, err
}

// SubmitOptions are the options of [Client.Submit] (none yet).
type SubmitOptions struct{}

// SubmitResponse is the answer of [Client.Submit]: the operation's summary, rejected ones
// included (a refusal is an answer, not an error: it is journaled with its reason).
type SubmitResponse struct {
	outcome.Summary
	// StatusCode is 200 (finished or planned), 202 (still running, or held for approval)
	// or 422 (rejected).
	StatusCode int
}

// Submit posts a request (POST deprovision/requests). Without DryRun set to false it only
// plans. Give it an ID so that a repeated call finds the same operation.
func (c *Client) Submit(ctx context.Context, r Request, _ *SubmitOptions) (SubmitResponse, error) {
	var out SubmitResponse
	resp, err := c.do(ctx, http.MethodPost, "requests", r, &out.Summary, http.StatusOK, http.StatusAccepted, http.StatusUnprocessableEntity)
	if err != nil {
		return out, err
	}
	out.StatusCode = resp.StatusCode
	return out, nil
}

// DecideOptions are the options of [Client.Approve] and [Client.Deny] (none yet).
type DecideOptions struct{}

// DecideResponse is the answer of [Client.Approve] and [Client.Deny]: the operation as it
// stands after the decision.
type DecideResponse struct {
	outcome.Summary
	// StatusCode is 200 (finished) or 202 (approved and still running).
	StatusCode int
}

// Approve lets an operation held by a guardrail run (POST deprovision/approvals/{id}); the
// server runs it in this call. An operation that is not awaiting approval is a 409
// *azcore.ResponseError.
func (c *Client) Approve(ctx context.Context, id string, d Decision, _ *DecideOptions) (DecideResponse, error) {
	return c.decide(ctx, "approvals/"+url.PathEscape(id), d)
}

// Deny ends a held operation rejected without running any of it (POST deprovision/denials/{id}).
func (c *Client) Deny(ctx context.Context, id string, d Decision, _ *DecideOptions) (DecideResponse, error) {
	return c.decide(ctx, "denials/"+url.PathEscape(id), d)
}

func (c *Client) decide(ctx context.Context, path string, d Decision) (DecideResponse, error) {
	var out DecideResponse
	resp, err := c.do(ctx, http.MethodPost, path, d, &out.Summary, http.StatusOK, http.StatusAccepted)
	if err != nil {
		return out, err
	}
	out.StatusCode = resp.StatusCode
	return out, nil
}

// ErrorMessage returns what the server said of a failed call: the "error" of its JSON answer,
// or its answer's text when that is not JSON (a front end's refusal), else the error's own
// text.
func ErrorMessage(err error) string {
	var re *azcore.ResponseError
	if errors.As(err, &re) && re.RawResponse != nil {
		if b, rerr := runtime.Payload(re.RawResponse); rerr == nil {
			var e Error
			if json.Unmarshal(b, &e) == nil && e.Error != "" {
				return e.Error
			}
			if t := strings.TrimSpace(string(b)); t != "" && !strings.HasPrefix(t, "{") && !strings.HasPrefix(t, "<") && len(t) <= 500 {
				return t
			}
		}
	}
	return err.Error()
}

// StatusCode returns the HTTP status of a failed call, or 0 when it got no answer.
func StatusCode(err error) int {
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return re.StatusCode
	}
	return 0
}
