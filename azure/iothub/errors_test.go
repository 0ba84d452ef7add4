package iothub

import (
	"encoding/json"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
)

// TestErrorCodeFromBody covers the three error body shapes the hub has used.
func TestErrorCodeFromBody(t *testing.T) {
	cases := map[string]ErrorCode{
		`{"Message":"{\"errorCode\":404001,\"trackingId\":\"x\",\"message\":\"gone\",\"info\":{},\"timestampUtc\":\"2024-01-01T00:00:00Z\"}","ExceptionMessage":""}`: "DeviceNotFound",
		`{"Message":"ErrorCode:DeviceAlreadyExists;A device with ID 'd' is already registered.","ExceptionMessage":"Tracking ID:x"}`:                                 "DeviceAlreadyExists",
		`{"Message":"{\"errorCode\":499999,\"message\":\"new\"}"}`:                                                                                                   "499999",
		`{"errorCode":412001,"message":"flat"}`: "PreconditionFailed",
		`{"Message":"plain text"}`:              "",
		`not json`:                              "",
	}
	for body, want := range cases {
		if got := errorCodeFromBody([]byte(body)); got != want {
			t.Errorf("errorCodeFromBody(%s) = %q, want %q", body, got, want)
		}
	}
}

func TestBulkErrorCodeAcceptsNumberOrName(t *testing.T) {
	var r BulkRegistryOperationResult
	if err := json.Unmarshal([]byte(`{"isSuccessful":false,"errors":[{"deviceId":"a","errorCode":404001},{"deviceId":"b","errorCode":"EtagDoesNotMatch"}]}`), &r); err != nil {
		t.Fatal(err)
	}
	if r.Errors[0].ErrorCode != ErrorCodeDeviceNotFound || r.Errors[1].ErrorCode != ErrorCodeEtagDoesNotMatch {
		t.Fatalf("codes %q %q", r.Errors[0].ErrorCode, r.Errors[1].ErrorCode)
	}
}

func TestQuoteETag(t *testing.T) {
	for in, want := range map[string]string{"AAAA=": `"AAAA="`, `"AAAA="`: `"AAAA="`, "*": `"*"`} {
		if got := quoteETag(azcore.ETag(in)); got != want {
			t.Errorf("quoteETag(%s) = %s, want %s", in, got, want)
		}
	}
}
