package dps

import (
	"encoding/json"
	"testing"
)

func TestEnrollmentTimestampsWithoutZone(t *testing.T) {
	body := `{"registrationId":"r1","attestation":{"type":"x509","x509":{"clientCertificates":{"primary":{"info":{
		"subjectName":"CN=r1","sha1Thumbprint":"A","sha256Thumbprint":"B","issuerName":"CN=root",
		"notBeforeUtc":"2024-01-01T00:00:00","notAfterUtc":"2025-01-01T00:00:00Z","serialNumber":"01","version":3}}}}},
		"etag":"\"abc\"","provisioningStatus":"enabled","createdDateTimeUtc":"2024-01-02T03:04:05.1234567",
		"lastUpdatedDateTimeUtc":"2024-01-02T03:04:05.1234567Z","registrationState":{"registrationId":"r1","createdDateTimeUtc":"2024-01-02T03:04:05"}}`
	var e IndividualEnrollment
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatal(err)
	}
	info := e.Attestation.X509.ClientCertificates.Primary.Info
	if e.RegistrationID != "r1" || e.ETag != `"abc"` || info.SubjectName != "CN=r1" || info.NotBeforeUTC.Year() != 2024 || info.NotAfterUTC.Year() != 2025 {
		t.Fatalf("decoded %+v %+v", e, info)
	}
	if e.CreatedDateTimeUTC == nil || e.CreatedDateTimeUTC.Nanosecond() != 123456700 || e.RegistrationState.CreatedDateTimeUTC == nil {
		t.Fatalf("times %v %+v", e.CreatedDateTimeUTC, e.RegistrationState)
	}
}
