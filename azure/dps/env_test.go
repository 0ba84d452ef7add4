package dps_test

import (
	"testing"

	"dpsdeprov/azure/dps"
	"dpsdeprov/azure/internal/swaggercheck"
	"dpsdeprov/emulator"
	"dpsdeprov/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// env is one emulator and the means to build clients against it whose every request is
// checked against the DPS service specification when the test ends.
type env struct {
	t    *testing.T
	em   *emulator.Emulator
	info emulator.Info
}

func newEnv(t *testing.T, o emulator.Options) *env {
	t.Helper()
	em := testenv.StartEmulator(t, o)
	return &env{t: t, em: em, info: em.Info()}
}

// options returns client options that reach the emulator over loopback, retry quickly,
// and record every request for the specification check run at the end of the test.
func (e *env) options(rec *swaggercheck.Recorder) *dps.ClientOptions {
	e.t.Helper()
	return &dps.ClientOptions{ClientOptions: swaggercheck.EmulatorOptions(e.t, e.em, rec, "dps-service.json")}
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
