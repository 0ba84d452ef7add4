package iothub_test

import (
	"testing"

	"dpsdeprov/azure/internal/swaggercheck"
	"dpsdeprov/azure/iothub"
	"dpsdeprov/emulator"
	"dpsdeprov/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// env is one emulator and the means to build clients against it whose every request is
// checked against the IoT Hub service specification when the test ends.
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
func (e *env) options(rec *swaggercheck.Recorder) *iothub.ClientOptions {
	e.t.Helper()
	return &iothub.ClientOptions{ClientOptions: swaggercheck.EmulatorOptions(e.t, e.em, rec, "iothub-service.json")}
}

// client returns a connection-string client with a recorder.
func (e *env) client() (*iothub.Client, *swaggercheck.Recorder) {
	e.t.Helper()
	rec := &swaggercheck.Recorder{}
	c, err := iothub.NewClientFromConnectionString(e.info.Hubs[0].ConnectionString, e.options(rec))
	if err != nil {
		e.t.Fatal(err)
	}
	return c, rec
}
