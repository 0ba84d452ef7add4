package emulator_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"

	"dpsdeprov/emulator"
	"dpsdeprov/internal/testenv"
)

// testCredential is an azcore.TokenCredential issuing the emulator's test JWTs.
type testCredential struct{ key []byte }

func (c testCredential) GetToken(_ context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	aud := emulator.HubAudience
	if len(o.Scopes) > 0 && o.Scopes[0] == emulator.DPSAudience+"/.default" {
		aud = emulator.DPSAudience
	}
	return azcore.AccessToken{Token: emulator.TestBearerToken(aud, c.key, time.Hour), ExpiresOn: time.Now().Add(time.Hour)}, nil
}

// An azcore pipeline, as the project's Go clients build them, reaches the emulator with a
// bearer credential through testenv's transport, and its retry policy rides over injected
// 503s and throttling 429s that carry Retry-After.
func TestAzcorePipelineWithBearerAndRetries(t *testing.T) {
	key := []byte("k")
	e := testenv.StartEmulator(t, emulator.Options{AcceptBearer: true, BearerKey: key, ThrottlePerMinute: 60})
	hubPl := runtime.NewPipeline("emulatortest", "v0", runtime.PipelineOptions{
		PerRetry: []policy.Policy{runtime.NewBearerTokenPolicy(testCredential{key}, []string{emulator.HubAudience + "/.default"}, nil)},
	}, &policy.ClientOptions{
		Transport: testenv.EmulatorHTTPClient(e),
		Retry:     policy.RetryOptions{MaxRetries: 3, RetryDelay: 10 * time.Millisecond, MaxRetryDelay: 2 * time.Second},
	})
	ctx := context.Background()
	do := func(pl runtime.Pipeline, method, url string, body any) *http.Response {
		t.Helper()
		req, err := runtime.NewRequest(ctx, method, url)
		if err != nil {
			t.Fatal(err)
		}
		if body != nil {
			if err := runtime.MarshalAsJSON(req, body); err != nil {
				t.Fatal(err)
			}
		}
		res, err := pl.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	hub := "https://" + e.Info().Hubs[0].Host
	if err := e.AddFault(emulator.Fault{Op: "hub.devices.put", Status: 503, RetryAfter: 1, Count: 1}); err != nil {
		t.Fatal(err)
	}
	res := do(hubPl, http.MethodPut, hub+"/devices/az-1?api-version=2021-04-12", map[string]any{"deviceId": "az-1"})
	if res.StatusCode != 200 {
		t.Fatalf("PUT through a 503 answered %d", res.StatusCode)
	}
	if st := e.Stats().Operations["hub.devices.put"]; st.Calls != 2 || st.Statuses["503"] != 1 {
		t.Fatalf("put stats %+v", st)
	}
	// One bulk call of 60 devices uses up the minute's budget (every item counts); the next
	// call is throttled with Retry-After: 1 (one token a second) and azcore retries it.
	if err := e.SetThrottle("hub1", 60, 0); err != nil {
		t.Fatal(err)
	}
	var items []map[string]any
	for i := range 60 {
		items = append(items, map[string]any{"id": fmt.Sprintf("az-b%d", i), "importMode": "create"})
	}
	if res := do(hubPl, http.MethodPost, hub+"/devices?api-version=2021-04-12", items); res.StatusCode != 200 {
		t.Fatalf("bulk answered %d", res.StatusCode)
	}
	if res := do(hubPl, http.MethodGet, hub+"/devices/az-1?api-version=2021-04-12", nil); res.StatusCode != 200 {
		t.Fatalf("GET after throttling answered %d", res.StatusCode)
	}
	if h := e.Stats().Hubs["hub1"]; h.Throttled < 1 {
		t.Fatalf("no call was throttled: %+v", h)
	}

	dpsPl := runtime.NewPipeline("emulatortest", "v0", runtime.PipelineOptions{
		PerRetry: []policy.Policy{runtime.NewBearerTokenPolicy(testCredential{key}, []string{emulator.DPSAudience + "/.default"}, nil)},
	}, &policy.ClientOptions{Transport: testenv.EmulatorHTTPClient(e)})
	res = do(dpsPl, http.MethodPut, "https://"+e.Info().DPS.Host+"/enrollments/az-1?api-version=2021-10-01", map[string]any{"attestation": map[string]any{"type": "symmetricKey"}})
	if res.StatusCode != 200 {
		t.Fatalf("DPS PUT with bearer answered %d", res.StatusCode)
	}
}
