package dps

import (
	"context"
	"fmt"
	"net/http"

	"dpsdeprov/azure/internal/rest"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
)

// GetEnrollmentGroupOptions holds optional parameters of [Client.GetEnrollmentGroup].
type GetEnrollmentGroupOptions struct{}

// GetEnrollmentGroupResponse is the answer of [Client.GetEnrollmentGroup].
type GetEnrollmentGroupResponse struct {
	EnrollmentGroup
}

// GetEnrollmentGroup reads an enrollment group; [IsNotFound] is true for a missing one.
func (c *Client) GetEnrollmentGroup(ctx context.Context, enrollmentGroupID string, _ *GetEnrollmentGroupOptions) (out GetEnrollmentGroupResponse, err error) {
	ctx, endSpan := c.conn.StartSpan(ctx, "Client.GetEnrollmentGroup")
	defer func() { endSpan(err) }()
	_, err = c.conn.Send(ctx, rest.Request{Method: http.MethodGet, Path: "/enrollmentGroups/" + rest.Escape(enrollmentGroupID), Idempotent: true, OK: []int{http.StatusOK}}, &out.EnrollmentGroup)
	return out, err
}

// CreateOrUpdateEnrollmentGroupOptions holds optional parameters of
// [Client.CreateOrUpdateEnrollmentGroup].
type CreateOrUpdateEnrollmentGroupOptions struct {
	// IfMatch as for [CreateOrUpdateEnrollmentOptions].
	IfMatch *azcore.ETag
}

// CreateOrUpdateEnrollmentGroupResponse is the answer of [Client.CreateOrUpdateEnrollmentGroup].
type CreateOrUpdateEnrollmentGroupResponse struct {
	EnrollmentGroup
}

// CreateOrUpdateEnrollmentGroup writes group under its EnrollmentGroupID.
func (c *Client) CreateOrUpdateEnrollmentGroup(ctx context.Context, group EnrollmentGroup, options *CreateOrUpdateEnrollmentGroupOptions) (out CreateOrUpdateEnrollmentGroupResponse, err error) {
	ctx, endSpan := c.conn.StartSpan(ctx, "Client.CreateOrUpdateEnrollmentGroup")
	defer func() { endSpan(err) }()
	if group.EnrollmentGroupID == "" {
		return out, fmt.Errorf("dps: enrollment group has no enrollmentGroupId")
	}
	if group.Attestation == nil {
		return out, fmt.Errorf("dps: enrollment group %s has no attestation", group.EnrollmentGroupID)
	}
	var ifMatch *azcore.ETag
	if options != nil {
		ifMatch = options.IfMatch
	}
	group.CreatedDateTimeUTC, group.LastUpdatedDateTimeUTC = nil, nil
	_, err = c.conn.Send(ctx, rest.Request{Method: http.MethodPut, Path: "/enrollmentGroups/" + rest.Escape(group.EnrollmentGroupID), Body: group,
		IfMatch: ifMatch, Idempotent: rest.IdempotentWrite(ifMatch), OK: []int{http.StatusOK, http.StatusCreated}}, &out.EnrollmentGroup)
	return out, err
}

// DeleteEnrollmentGroupOptions holds optional parameters of [Client.DeleteEnrollmentGroup].
type DeleteEnrollmentGroupOptions struct {
	// IfMatch nil deletes unconditionally; an etag deletes only that version.
	IfMatch *azcore.ETag
}

// DeleteEnrollmentGroupResponse is the answer of [Client.DeleteEnrollmentGroup].
type DeleteEnrollmentGroupResponse struct{}

// DeleteEnrollmentGroup deletes an enrollment group. Its devices' registration states and
// hub identities stay.
func (c *Client) DeleteEnrollmentGroup(ctx context.Context, enrollmentGroupID string, options *DeleteEnrollmentGroupOptions) (out DeleteEnrollmentGroupResponse, err error) {
	ctx, endSpan := c.conn.StartSpan(ctx, "Client.DeleteEnrollmentGroup")
	defer func() { endSpan(err) }()
	var ifMatch *azcore.ETag
	if options != nil {
		ifMatch = options.IfMatch
	}
	_, err = c.conn.Send(ctx, rest.Request{Method: http.MethodDelete, Path: "/enrollmentGroups/" + rest.Escape(enrollmentGroupID), IfMatch: ifMatch,
		Idempotent: rest.IdempotentDelete(ifMatch), OK: []int{http.StatusNoContent, http.StatusOK}}, nil)
	return out, err
}

// GetEnrollmentGroupAttestationMechanismOptions holds optional parameters of
// [Client.GetEnrollmentGroupAttestationMechanism].
type GetEnrollmentGroupAttestationMechanismOptions struct{}

// GetEnrollmentGroupAttestationMechanismResponse is the answer of
// [Client.GetEnrollmentGroupAttestationMechanism].
type GetEnrollmentGroupAttestationMechanismResponse struct {
	AttestationMechanism
}

// GetEnrollmentGroupAttestationMechanism reads a group's attestation including its
// symmetric keys. Never log the result.
func (c *Client) GetEnrollmentGroupAttestationMechanism(ctx context.Context, enrollmentGroupID string, _ *GetEnrollmentGroupAttestationMechanismOptions) (out GetEnrollmentGroupAttestationMechanismResponse, err error) {
	ctx, endSpan := c.conn.StartSpan(ctx, "Client.GetEnrollmentGroupAttestationMechanism")
	defer func() { endSpan(err) }()
	_, err = c.conn.Send(ctx, rest.Request{Method: http.MethodPost, Path: "/enrollmentGroups/" + rest.Escape(enrollmentGroupID) + "/attestationmechanism", Idempotent: true, OK: []int{http.StatusOK}}, &out.AttestationMechanism)
	return out, err
}

// RunEnrollmentGroupBulkOperationOptions holds optional parameters of
// [Client.RunEnrollmentGroupBulkOperation].
type RunEnrollmentGroupBulkOperationOptions struct{}

// RunEnrollmentGroupBulkOperationResponse is the answer of [Client.RunEnrollmentGroupBulkOperation].
type RunEnrollmentGroupBulkOperationResponse struct {
	BulkEnrollmentGroupOperationResult
}

// RunEnrollmentGroupBulkOperation applies op.Mode to up to [MaxBulkItems] groups in one call;
// per-item failures are in Errors. It is retried only when throttled.
func (c *Client) RunEnrollmentGroupBulkOperation(ctx context.Context, op BulkEnrollmentGroupOperation, _ *RunEnrollmentGroupBulkOperationOptions) (out RunEnrollmentGroupBulkOperationResponse, err error) {
	ctx, endSpan := c.conn.StartSpan(ctx, "Client.RunEnrollmentGroupBulkOperation")
	defer func() { endSpan(err) }()
	if n := len(op.EnrollmentGroups); n == 0 || n > MaxBulkItems {
		return out, fmt.Errorf("dps: a bulk enrollment group operation takes 1 to %d groups, not %d", MaxBulkItems, n)
	}
	if op.Mode == "" {
		return out, fmt.Errorf("dps: a bulk enrollment group operation needs a mode")
	}
	for i := range op.EnrollmentGroups {
		g := &op.EnrollmentGroups[i]
		g.CreatedDateTimeUTC, g.LastUpdatedDateTimeUTC = nil, nil
	}
	_, err = c.conn.Send(ctx, rest.Request{Method: http.MethodPost, Path: "/enrollmentGroups", Body: op, OK: []int{http.StatusOK}}, &out.BulkEnrollmentGroupOperationResult)
	return out, err
}

// QueryEnrollmentGroupsResponse is one page of [Client.NewQueryEnrollmentGroupsPager].
type QueryEnrollmentGroupsResponse struct {
	EnrollmentGroups []EnrollmentGroup
	// ContinuationToken resumes after this page; "" on the last page.
	ContinuationToken string
}

// NewQueryEnrollmentGroupsPager pages through the enrollment groups that query selects,
// such as "SELECT * FROM enrollmentGroups".
func (c *Client) NewQueryEnrollmentGroupsPager(query string, options *QueryOptions) *runtime.Pager[QueryEnrollmentGroupsResponse] {
	return rest.NewQueryPager(c.conn, options.query("/enrollmentGroups/query", &rest.QuerySpecification{Query: query}),
		func(items []EnrollmentGroup, next string) QueryEnrollmentGroupsResponse {
			return QueryEnrollmentGroupsResponse{EnrollmentGroups: items, ContinuationToken: next}
		}, func(p QueryEnrollmentGroupsResponse) string { return p.ContinuationToken })
}
