package dps

import (
	"encoding/json"

	"dpsdeprov/azure/internal/jsontime"
)

// The models with timestamps decode them leniently (see package jsontime): the service may
// write a value without a zone, which plain time.Time decoding would reject, failing the
// whole call.

// UnmarshalJSON implements json.Unmarshaler.
func (e *IndividualEnrollment) UnmarshalJSON(b []byte) error {
	type plain IndividualEnrollment
	aux := struct {
		*plain
		Created jsontime.Time `json:"createdDateTimeUtc"`
		Updated jsontime.Time `json:"lastUpdatedDateTimeUtc"`
	}{plain: (*plain)(e)}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	e.CreatedDateTimeUTC, e.LastUpdatedDateTimeUTC = aux.Created.Ptr(), aux.Updated.Ptr()
	return nil
}

// UnmarshalJSON implements json.Unmarshaler.
func (g *EnrollmentGroup) UnmarshalJSON(b []byte) error {
	type plain EnrollmentGroup
	aux := struct {
		*plain
		Created jsontime.Time `json:"createdDateTimeUtc"`
		Updated jsontime.Time `json:"lastUpdatedDateTimeUtc"`
	}{plain: (*plain)(g)}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	g.CreatedDateTimeUTC, g.LastUpdatedDateTimeUTC = aux.Created.Ptr(), aux.Updated.Ptr()
	return nil
}

// UnmarshalJSON implements json.Unmarshaler.
func (s *DeviceRegistrationState) UnmarshalJSON(b []byte) error {
	type plain DeviceRegistrationState
	aux := struct {
		*plain
		Created jsontime.Time `json:"createdDateTimeUtc"`
		Updated jsontime.Time `json:"lastUpdatedDateTimeUtc"`
	}{plain: (*plain)(s)}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	s.CreatedDateTimeUTC, s.LastUpdatedDateTimeUTC = aux.Created.Ptr(), aux.Updated.Ptr()
	return nil
}

// UnmarshalJSON implements json.Unmarshaler.
func (i *X509CertificateInfo) UnmarshalJSON(b []byte) error {
	type plain X509CertificateInfo
	aux := struct {
		*plain
		NotBefore jsontime.Time `json:"notBeforeUtc"`
		NotAfter  jsontime.Time `json:"notAfterUtc"`
	}{plain: (*plain)(i)}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	i.NotBeforeUTC, i.NotAfterUTC = aux.NotBefore.Time, aux.NotAfter.Time
	return nil
}
