// Package tables holds what the app's Table Storage clients share: creating a table that may
// exist already, and reading and writing one row under optimistic concurrency.
package tables

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"dpsdeprov/azure/internal/azerr"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
)

// Create creates the table name unless it exists already and returns its client.
func Create(ctx context.Context, svc *aztables.ServiceClient, name string) (*aztables.Client, error) {
	if _, err := svc.CreateTable(ctx, name, nil); err != nil {
		var re *azcore.ResponseError
		if !errors.As(err, &re) || re.ErrorCode != string(aztables.TableAlreadyExists) {
			return nil, fmt.Errorf("creating table %s: %w", name, err)
		}
	}
	return svc.NewClient(name), nil
}

// Get reads the row pk/rk into v and returns its ETag; ok is false, with no error, when there
// is no such row.
func Get(ctx context.Context, c *aztables.Client, pk, rk string, v any) (etag azcore.ETag, ok bool, err error) {
	r, err := c.GetEntity(ctx, pk, rk, nil)
	if azerr.Status(err) == http.StatusNotFound {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	if err := json.Unmarshal(r.Value, v); err != nil {
		return "", false, fmt.Errorf("decoding %s/%s: %w", pk, rk, err)
	}
	return r.ETag, true, nil
}

// Put adds the row v when etag is nil, or replaces it if it still has etag. It reports false,
// with no error, when another writer won the race (409 or 412).
func Put(ctx context.Context, c *aztables.Client, v any, etag *azcore.ETag) (bool, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return false, err
	}
	if etag == nil {
		_, err = c.AddEntity(ctx, b, nil)
	} else {
		_, err = c.UpdateEntity(ctx, b, &aztables.UpdateEntityOptions{IfMatch: etag, UpdateMode: aztables.UpdateModeReplace})
	}
	switch azerr.Status(err) {
	case http.StatusConflict, http.StatusPreconditionFailed:
		return false, nil
	}
	return err == nil, err
}
