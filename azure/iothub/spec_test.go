package iothub_test

import (
	"context"
	"slices"
	"testing"

	"dpsdeprov/azure/internal/swaggercheck"
	"dpsdeprov/azure/iothub"
	"dpsdeprov/emulator"
	"dpsdeprov/internal/testenv"
)

// TestRequestsMatchSpec calls every method of the client once and checks each request
// against the IoT Hub service specification, and that the registry operations the client
// covers are all exercised. (The per-request check also runs at the end of every other test.)
func TestRequestsMatchSpec(t *testing.T) {
	e := newEnv(t, emulator.Options{})
	c, rec := e.client()
	ctx := context.Background()
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	d := iothub.Device{DeviceID: "spec-1", Status: iothub.DeviceStatusEnabled,
		Authentication: &iothub.AuthenticationMechanism{Type: iothub.AuthenticationTypeSelfSigned,
			X509Thumbprint: &iothub.X509Thumbprint{PrimaryThumbprint: "0123456789ABCDEF0123456789ABCDEF01234567", SecondaryThumbprint: "0123456789ABCDEF0123456789ABCDEF01234567"}},
		Capabilities: &iothub.DeviceCapabilities{}}
	must(c.CreateOrUpdateDevice(ctx, d, nil))
	got, err := c.GetDevice(ctx, "spec-1", nil)
	must(got, err)
	got.Status = iothub.DeviceStatusDisabled
	must(c.CreateOrUpdateDevice(ctx, got.Device, &iothub.CreateOrUpdateDeviceOptions{IfMatch: etag(got.ETag)}))
	must(c.BulkUpdate(ctx, []iothub.ExportImportDevice{
		{ID: "spec-2", ImportMode: iothub.ImportModeCreate, Status: iothub.DeviceStatusEnabled},
		{ID: "spec-1", ImportMode: iothub.ImportModeUpdate, Status: iothub.DeviceStatusDisabled, StatusReason: "spec"},
	}, nil))
	must(c.NewQueryDevicesPager("SELECT * FROM devices", &iothub.QueryDevicesOptions{PageSize: 1}).NextPage(ctx))
	must(c.GetTwin(ctx, "spec-1", nil))
	must(c.DeleteDevice(ctx, "spec-1", nil))
	must(c.DeleteDevice(ctx, "spec-2", &iothub.DeleteDeviceOptions{IfMatch: etag("*")}))

	spec, err := swaggercheck.Load(testenv.SharedReference(t, "specs", "iothub-service.json"))
	if err != nil {
		t.Fatal(err)
	}
	var hit []string
	for _, r := range rec.Requests() {
		op, errs := spec.Check(r)
		for _, err := range errs {
			t.Error(err)
		}
		hit = append(hit, op)
	}
	for _, want := range []string{"Devices_GetIdentity", "Devices_CreateOrUpdateIdentity", "Devices_DeleteIdentity", "BulkRegistry_UpdateRegistry", "Query_GetTwins", "Devices_GetTwin"} {
		if !slices.Contains(hit, want) {
			t.Errorf("no client method sends %s", want)
		}
	}
}
