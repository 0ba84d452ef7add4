package opsapi

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

// tokenCredential hands out one token and records the scopes it was asked for.
type tokenCredential struct {
	mu     sync.Mutex
	scopes []string
}

func (c *tokenCredential) GetToken(_ context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.scopes = append(c.scopes, o.Scopes...)
	return azcore.AccessToken{Token: "entra-token", ExpiresOn: time.Now().Add(time.Hour)}, nil
}

// The bearer path asks the credential for the configured scope and sends the token to the
// signed-in routes; the key path sends x-functions-key to the key routes; and a token or key
// never goes over plain HTTP unless allowed.
func TestClientAuthentication(t *testing.T) {
	var mu sync.Mutex
	var auth, key, path string
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		auth, key, path = r.Header.Get("Authorization"), r.Header.Get(KeyHeader), r.URL.Path
		mu.Unlock()
		if r.URL.Path != "/api/deprovision/operations/op-1" && r.URL.Path != "/api/signed-in/deprovision/operations/op-1" {
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"error":"no such route"}`))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"operationId":"op-1","status":"succeeded","eventId":"e","source":"s","dryRun":false,"journal":[]}`))
	}))
	defer srv.Close()
	co := azcore.ClientOptions{Transport: srv.Client()}

	cred := &tokenCredential{}
	c, err := NewClient(srv.URL+"/api/", cred, &ClientOptions{ClientOptions: co, Scopes: []string{"api://dpsdeprov-contoso/.default"}})
	if err != nil {
		t.Fatal(err)
	}
	op, err := c.GetOperation(context.Background(), "op-1", nil)
	if err != nil || op.Status != "succeeded" {
		t.Fatalf("GetOperation: %+v, %v", op, err)
	}
	if auth != "Bearer entra-token" || strings.Join(cred.scopes, " ") != "api://dpsdeprov-contoso/.default" || path != "/api/"+RouteSignedIn+"/operations/op-1" {
		t.Fatalf("Authorization %q for scopes %v on %s; a signed-in caller uses the signed-in routes", auth, cred.scopes, path)
	}
	if _, err := NewClient(srv.URL, cred, &ClientOptions{}); err == nil {
		t.Fatal("a token credential without scopes was accepted")
	}

	kc, err := NewClientWithKey(srv.URL+"/api", azcore.NewKeyCredential("function-key"), &ClientOptions{ClientOptions: co})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kc.GetOperation(context.Background(), "op-1", nil); err != nil || key != "function-key" || auth != "" || path != "/api/"+RouteKey+"/operations/op-1" {
		t.Fatalf("key path: err %v, x-functions-key %q, Authorization %q, on %s", err, key, auth, path)
	}
	_, err = kc.GetDevice(context.Background(), "d", nil)
	if StatusCode(err) != http.StatusNotFound || ErrorMessage(err) != "no such route" {
		t.Fatalf("a 404: status %d, message %q", StatusCode(err), ErrorMessage(err))
	}

	plain := httptest.NewServer(http.NotFoundHandler())
	defer plain.Close()
	hc, err := NewClientWithKey(plain.URL+"/api", azcore.NewKeyCredential("function-key"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hc.GetOperation(context.Background(), "op-1", nil); err == nil || StatusCode(err) != 0 {
		t.Fatalf("a key went over plain HTTP without InsecureAllowCredentialWithHTTP: %v", err)
	}
}
