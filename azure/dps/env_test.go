package dps_test

import (
	"os"
	"testing"
	"time"

	"dpsdeprov/azure/dps"
	"dpsdeprov/azure/internal/swaggercheck"
	"dpsdeprov/azure/loopback"
	"dpsdeprov/emulator"
	"dpsdeprov/internal/testenv"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// env is one emulator and the means to build clients against it whose every request is
// checked against the DPS service specification when the test ends.
type env struct {
	t    *testing.T
	em   *emulator.Emulator
	info emulator.Info
	ca   []byte
}

func newEnv(t *testing.T, o emulator.Options) *env {
	t.Helper()
	em := testenv.StartEmulator(t, o)
	info := em.Info()
	ca, err := os.ReadFile(info.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, em: em, info: info, ca: ca}
}

// options returns client options that reach the emulator over loopback, retry quickly,
// and record every request for the specification check run at the end of the test.
func (e *env) options(rec *swaggercheck.Recorder) *dps.ClientOptions {
	e.t.Helper()
	tr, err := loopback.NewClient(e.info.Addr, e.ca)
	if err != nil {
		e.t.Fatal(err)
	}
	o := &dps.ClientOptions{ClientOptions: azcore.ClientOptions{
		Transport: tr,
		Retry:     policy.RetryOptions{MaxRetries: 3, RetryDelay: 20 * time.Millisecond, MaxRetryDelay: 3 * time.Second},
	}}
	if rec != nil {
		o.PerRetryPolicies = []policy.Policy{rec}
		swaggercheck.CheckAtEnd(e.t, rec, "dps-service.json")
	}
	return o
}

// client returns a connection-string client with a recorder.
func (e *env) client() (*dps.Client, *swaggercheck.Recorder) {
	e.t.Helper()
	rec := &swaggercheck.Recorder{}
	c, err := dps.NewClientFromConnectionString(e.info.DPS.ConnectionString, e.options(rec))
	if err != nil {
		e.t.Fatal(err)
	}
	return c, rec
}

// count returns how many recorded requests have method and path.
func count(rec *swaggercheck.Recorder, method, path string) int {
	n := 0
	for _, r := range rec.Requests() {
		if r.Method == method && r.URL.Path == path {
			n++
		}
	}
	return n
}
