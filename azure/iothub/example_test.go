package iothub_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"dpsdeprov/azure/iothub"
	"dpsdeprov/azure/loopback"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
)

// Disable a device with optimistic concurrency, authenticating with a managed identity,
// then disable a batch of devices in one bulk registry call.
func Example() {
	cred, err := azidentity.NewManagedIdentityCredential(nil)
	if err != nil {
		log.Fatal(err)
	}
	client, err := iothub.NewClient("https://myhub.azure-devices.net", cred, nil)
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.TODO()

	got, err := client.GetDevice(ctx, "sensor-042", nil)
	if err != nil {
		log.Fatal(err)
	}
	d := got.Device
	d.Status, d.StatusReason = iothub.DeviceStatusDisabled, "reported stolen"
	etag := azcore.ETag(got.ETag) // sent quoted, as the hub requires
	if _, err := client.CreateOrUpdateDevice(ctx, d, &iothub.CreateOrUpdateDeviceOptions{IfMatch: &etag}); err != nil {
		log.Fatal(err)
	}

	res, err := client.BulkUpdate(ctx, []iothub.ExportImportDevice{
		{ID: "sensor-043", ImportMode: iothub.ImportModeDelete},
		{ID: "sensor-044", ImportMode: iothub.ImportModeDelete},
	}, nil)
	if err != nil {
		log.Fatal(err)
	}
	for _, e := range res.Errors {
		if e.ErrorCode != iothub.ErrorCodeDeviceNotFound {
			fmt.Println(e.DeviceID, e.ErrorCode, e.ErrorStatus)
		}
	}
}

// Reach a local emulator while addressing the real host name: the loopback transport sends
// every connection to the emulator's address and trusts its CA.
func ExampleNewClientFromConnectionString() {
	caPEM, err := os.ReadFile(os.Getenv("EMULATOR_CA_FILE"))
	if err != nil {
		log.Fatal(err)
	}
	transport, err := loopback.NewClient("127.0.0.1:8443", caPEM)
	if err != nil {
		log.Fatal(err)
	}
	client, err := iothub.NewClientFromConnectionString(os.Getenv("HUB_CONNECTION_STRING"),
		&iothub.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: transport}})
	if err != nil {
		log.Fatal(err)
	}
	pager := client.NewQueryDevicesPager("SELECT * FROM devices WHERE status = 'disabled'", &iothub.QueryDevicesOptions{PageSize: 100})
	for pager.More() {
		page, err := pager.NextPage(context.TODO())
		if err != nil {
			log.Fatal(err)
		}
		for _, t := range page.Twins {
			fmt.Println(t.DeviceID, t.StatusReason)
		}
	}
}
