package dps

import (
	"context"
	"fmt"
	"net/http"

	"dpsdeprov/azure/internal/rest"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
)

// MaxBulkItems is the most items one bulk enrollment or group operation may carry.
const MaxBulkItems = 10

// GetEnrollmentOptions holds optional parameters of [Client.GetEnrollment].
type GetEnrollmentOptions struct{}

// GetEnrollmentResponse is the answer of [Client.GetEnrollment].
type GetEnrollmentResponse struct {
	IndividualEnrollment
}

// GetEnrollment reads an individual enrollment. Certificates come back as their info only
// and symmetric keys blank; a missing enrollment is an error for which [IsNotFound] is true.
func (c *Client) GetEnrollment(ctx context.Context, registrationID string, _ *GetEnrollmentOptions) (out GetEnrollmentResponse, err error) {
	ctx, endSpan := c.conn.StartSpan(ctx, "Client.GetEnrollment")
	defer func() { endSpan(err) }()
	_, err = c.conn.Send(ctx, rest.Request{Method: http.MethodGet, Path: "/enrollments/" + rest.Escape(registrationID), Idempotent: true, OK: []int{http.StatusOK}}, &out.IndividualEnrollment)
	return out, err
}

// CreateOrUpdateEnrollmentOptions holds optional parameters of [Client.CreateOrUpdateEnrollment].
type CreateOrUpdateEnrollmentOptions struct {
	// IfMatch nil creates only (409 if the enrollment exists); azcore.ETagAny replaces
	// whatever is there; an etag replaces only that version (412 otherwise).
	IfMatch *azcore.ETag
}

// CreateOrUpdateEnrollmentResponse is the answer of [Client.CreateOrUpdateEnrollment].
type CreateOrUpdateEnrollmentResponse struct {
	IndividualEnrollment
}

// CreateOrUpdateEnrollment writes enrollment under its RegistrationID. Read-only fields are
// not sent. An X.509 enrollment read back from the service may be written without its
// certificate: the service keeps the stored one.
func (c *Client) CreateOrUpdateEnrollment(ctx context.Context, enrollment IndividualEnrollment, options *CreateOrUpdateEnrollmentOptions) (out CreateOrUpdateEnrollmentResponse, err error) {
	ctx, endSpan := c.conn.StartSpan(ctx, "Client.CreateOrUpdateEnrollment")
	defer func() { endSpan(err) }()
	if enrollment.RegistrationID == "" {
		return out, fmt.Errorf("dps: enrollment has no registrationId")
	}
	if enrollment.Attestation == nil {
		return out, fmt.Errorf("dps: enrollment %s has no attestation", enrollment.RegistrationID)
	}
	var ifMatch *azcore.ETag
	if options != nil {
		ifMatch = options.IfMatch
	}
	enrollment.RegistrationState, enrollment.CreatedDateTimeUTC, enrollment.LastUpdatedDateTimeUTC = nil, nil, nil
	_, err = c.conn.Send(ctx, rest.Request{Method: http.MethodPut, Path: "/enrollments/" + rest.Escape(enrollment.RegistrationID), Body: enrollment,
		IfMatch: ifMatch, Idempotent: rest.IdempotentWrite(ifMatch), OK: []int{http.StatusOK, http.StatusCreated}}, &out.IndividualEnrollment)
	return out, err
}

// DeleteEnrollmentOptions holds optional parameters of [Client.DeleteEnrollment].
type DeleteEnrollmentOptions struct {
	// IfMatch nil deletes unconditionally; an etag deletes only that version (412 otherwise).
	IfMatch *azcore.ETag
}

// DeleteEnrollmentResponse is the answer of [Client.DeleteEnrollment].
type DeleteEnrollmentResponse struct{}

// DeleteEnrollment deletes an individual enrollment. Its registration state, if any, stays:
// delete it with [Client.DeleteRegistrationState].
func (c *Client) DeleteEnrollment(ctx context.Context, registrationID string, options *DeleteEnrollmentOptions) (out DeleteEnrollmentResponse, err error) {
	ctx, endSpan := c.conn.StartSpan(ctx, "Client.DeleteEnrollment")
	defer func() { endSpan(err) }()
	var ifMatch *azcore.ETag
	if options != nil {
		ifMatch = options.IfMatch
	}
	_, err = c.conn.Send(ctx, rest.Request{Method: http.MethodDelete, Path: "/enrollments/" + rest.Escape(registrationID), IfMatch: ifMatch,
		Idempotent: rest.IdempotentDelete(ifMatch), OK: []int{http.StatusNoContent, http.StatusOK}}, nil)
	return out, err
}

// GetEnrollmentAttestationMechanismOptions holds optional parameters of
// [Client.GetEnrollmentAttestationMechanism].
type GetEnrollmentAttestationMechanismOptions struct{}

// GetEnrollmentAttestationMechanismResponse is the answer of
// [Client.GetEnrollmentAttestationMechanism].
type GetEnrollmentAttestationMechanismResponse struct {
	AttestationMechanism
}

// GetEnrollmentAttestationMechanism reads an enrollment's attestation including its secrets
// (symmetric keys), which GET leaves blank. Never log the result.
func (c *Client) GetEnrollmentAttestationMechanism(ctx context.Context, registrationID string, _ *GetEnrollmentAttestationMechanismOptions) (out GetEnrollmentAttestationMechanismResponse, err error) {
	ctx, endSpan := c.conn.StartSpan(ctx, "Client.GetEnrollmentAttestationMechanism")
	defer func() { endSpan(err) }()
	_, err = c.conn.Send(ctx, rest.Request{Method: http.MethodPost, Path: "/enrollments/" + rest.Escape(registrationID) + "/attestationmechanism", Idempotent: true, OK: []int{http.StatusOK}}, &out.AttestationMechanism)
	return out, err
}

// RunEnrollmentBulkOperationOptions holds optional parameters of [Client.RunEnrollmentBulkOperation].
type RunEnrollmentBulkOperationOptions struct{}

// RunEnrollmentBulkOperationResponse is the answer of [Client.RunEnrollmentBulkOperation]:
// IsSuccessful, and one error per failed item.
type RunEnrollmentBulkOperationResponse struct {
	BulkEnrollmentOperationResult
}

// RunEnrollmentBulkOperation applies op.Mode to up to [MaxBulkItems] enrollments in one call.
// A call that the service accepts returns nil error even when items failed: look at
// IsSuccessful and Errors. It is retried only when throttled.
func (c *Client) RunEnrollmentBulkOperation(ctx context.Context, op BulkEnrollmentOperation, _ *RunEnrollmentBulkOperationOptions) (out RunEnrollmentBulkOperationResponse, err error) {
	ctx, endSpan := c.conn.StartSpan(ctx, "Client.RunEnrollmentBulkOperation")
	defer func() { endSpan(err) }()
	if n := len(op.Enrollments); n == 0 || n > MaxBulkItems {
		return out, fmt.Errorf("dps: a bulk enrollment operation takes 1 to %d enrollments, not %d", MaxBulkItems, n)
	}
	if op.Mode == "" {
		return out, fmt.Errorf("dps: a bulk enrollment operation needs a mode")
	}
	for i := range op.Enrollments {
		e := &op.Enrollments[i]
		e.RegistrationState, e.CreatedDateTimeUTC, e.LastUpdatedDateTimeUTC = nil, nil, nil
	}
	_, err = c.conn.Send(ctx, rest.Request{Method: http.MethodPost, Path: "/enrollments", Body: op, OK: []int{http.StatusOK}}, &out.BulkEnrollmentOperationResult)
	return out, err
}

// QueryOptions holds the optional parameters of the query pagers.
type QueryOptions struct {
	// PageSize asks for at most this many items a page (x-ms-max-item-count); the service
	// may use another value. Zero leaves it to the service.
	PageSize int32
	// ContinuationToken resumes a query after the page that returned it.
	ContinuationToken string
}

// QueryEnrollmentsResponse is one page of [Client.NewQueryEnrollmentsPager].
type QueryEnrollmentsResponse struct {
	Enrollments []IndividualEnrollment
	// ContinuationToken resumes after this page; "" on the last page.
	ContinuationToken string
}

// NewQueryEnrollmentsPager pages through the individual enrollments that query selects,
// such as "SELECT * FROM enrollments" (filters may not be honoured by the service: filter on
// the client).
func (c *Client) NewQueryEnrollmentsPager(query string, options *QueryOptions) *runtime.Pager[QueryEnrollmentsResponse] {
	return rest.NewQueryPager(c.conn, options.query("/enrollments/query", &rest.QuerySpecification{Query: query}),
		func(items []IndividualEnrollment, next string) QueryEnrollmentsResponse {
			return QueryEnrollmentsResponse{Enrollments: items, ContinuationToken: next}
		}, func(p QueryEnrollmentsResponse) string { return p.ContinuationToken })
}

// query describes the query operation at path with body for [rest.NewQueryPager].
func (o *QueryOptions) query(path string, body any) rest.Query {
	q := rest.Query{Path: path, Body: body}
	if o != nil {
		q.PageSize, q.ContinuationToken = o.PageSize, o.ContinuationToken
	}
	return q
}
