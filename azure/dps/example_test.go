package dps_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"dpsdeprov/azure/dps"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
)

// Disable an individual enrollment with optimistic concurrency, authenticating with the
// function app's managed identity (the production default), then page through a group's
// registration states.
func Example() {
	cred, err := azidentity.NewManagedIdentityCredential(nil)
	if err != nil {
		log.Fatal(err)
	}
	client, err := dps.NewClient("https://mydps.azure-devices-provisioning.net", cred, nil)
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.TODO()

	got, err := client.GetEnrollment(ctx, "sensor-042", nil)
	if dps.IsNotFound(err) {
		fmt.Println("no individual enrollment")
		return
	} else if err != nil {
		log.Fatal(err)
	}
	en := got.IndividualEnrollment
	en.ProvisioningStatus = dps.ProvisioningStatusDisabled
	etag := azcore.ETag(got.ETag)
	if _, err := client.CreateOrUpdateEnrollment(ctx, en, &dps.CreateOrUpdateEnrollmentOptions{IfMatch: &etag}); dps.IsPreconditionFailed(err) {
		fmt.Println("changed by someone else since it was read: read it again")
	} else if err != nil {
		log.Fatal(err)
	}

	pager := client.NewQueryRegistrationStatesPager("factory-line-3", &dps.QueryOptions{PageSize: 500})
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			log.Fatal(err)
		}
		for _, r := range page.RegistrationStates {
			fmt.Println(r.RegistrationID, r.AssignedHub, r.DeviceID)
		}
		// page.ContinuationToken resumes here later (QueryOptions.ContinuationToken).
	}
}

// A client from a shared access policy connection string; the client signs SAS tokens and
// renews them before they expire.
func ExampleNewClientFromConnectionString() {
	client, err := dps.NewClientFromConnectionString(os.Getenv("DPS_CONNECTION_STRING"), nil)
	if err != nil {
		log.Fatal(err)
	}
	// A disabled symmetric-key enrollment that blocks one member of an enrollment group.
	_, err = client.CreateOrUpdateEnrollment(context.TODO(), dps.IndividualEnrollment{
		RegistrationID:     "sensor-042",
		ProvisioningStatus: dps.ProvisioningStatusDisabled,
		Attestation: &dps.AttestationMechanism{Type: dps.AttestationTypeSymmetricKey,
			SymmetricKey: &dps.SymmetricKeyAttestation{PrimaryKey: "<base64>", SecondaryKey: "<base64>"}},
	}, nil) // no If-Match: create only
	if dps.IsConflict(err) {
		fmt.Println("already there")
	} else if err != nil {
		log.Fatal(err)
	}
}
