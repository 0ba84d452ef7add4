package journal

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"dpsdeprov/azure/internal/tables"
	"dpsdeprov/deprovision"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
)

// Budget counts destructive operations per window (the engine's guardrail), in its own table,
// {prefix}guard, so that every instance of the app shares one count. A window is one
// partition: a "count" row holding the number of operations counted, and one row per counted
// operation. Both are written in one entity-group transaction, the count row under If-Match,
// so the count is exact however many instances admit at once, and an operation that asks
// again (a redelivery) is found by its row and never counted twice.
type Budget struct {
	c *aztables.Client
}

var _ deprovision.Budget = (*Budget)(nil)

// budgetRetries bounds the re-read-and-retry loop when another instance moved the count.
const budgetRetries = 20

// NewBudget returns the budget store over svc, creating its table if it is missing.
func NewBudget(ctx context.Context, svc *aztables.ServiceClient, o Options) (*Budget, error) {
	p := o.TablePrefix
	if p == "" {
		p = "deprov"
	}
	if !validPrefix(p) {
		return nil, fmt.Errorf("table prefix %q: use letters and digits only, starting with a letter, at most 55 characters", p)
	}
	c, err := tables.Create(ctx, svc, p+"guard")
	if err != nil {
		return nil, classify(err)
	}
	return &Budget{c: c}, nil
}

const countRow = "count"

// Admit implements deprovision.Budget.
func (b *Budget) Admit(ctx context.Context, window, opID string, limit int) (bool, int, error) {
	pk, err := EncodeKey("w-" + window)
	if err != nil {
		return false, 0, fmt.Errorf("budget window %q: %w", window, err)
	}
	rk, err := EncodeKey(opID)
	if err != nil {
		return false, 0, fmt.Errorf("budget operation %q: %w", opID, err)
	}
	for range budgetRetries {
		count, etag, err := b.count(ctx, pk)
		if err != nil {
			return false, 0, err
		}
		if _, err := b.c.GetEntity(ctx, pk, rk, nil); err == nil {
			return true, count, nil
		} else if err = classify(err); !errors.Is(err, deprovision.ErrNotFound) {
			return false, count, fmt.Errorf("reading budget row of %s: %w", opID, err)
		}
		if count >= limit {
			return false, count, nil
		}
		counter, _ := json.Marshal(map[string]any{"PartitionKey": pk, "RowKey": countRow, "Count": count + 1})
		marker, _ := json.Marshal(map[string]any{"PartitionKey": pk, "RowKey": rk, "Operation": opID})
		actions := []aztables.TransactionAction{{ActionType: aztables.TransactionTypeAdd, Entity: marker}}
		if etag == "" {
			actions = append(actions, aztables.TransactionAction{ActionType: aztables.TransactionTypeAdd, Entity: counter})
		} else {
			actions = append(actions, aztables.TransactionAction{ActionType: aztables.TransactionTypeUpdateReplace, Entity: counter, IfMatch: &etag})
		}
		_, err = b.c.SubmitTransaction(ctx, actions, nil)
		if err == nil {
			return true, count + 1, nil
		}
		// A failed transaction changes nothing. The service reports which action failed
		// inside a 202 batch answer, which the SDK surfaces as one error: a 409 (the
		// operation was counted meanwhile, or the count row was created meanwhile) or a 412
		// (another instance moved the count) are both answered by reading again; anything
		// else is the store failing.
		var re *azcore.ResponseError
		if !errors.As(err, &re) || (re.StatusCode != 202 && re.StatusCode != 409 && re.StatusCode != 412) {
			return false, count, fmt.Errorf("counting operation %s in window %s: %w", opID, window, classify(err))
		}
	}
	return false, 0, deprovision.Transient(fmt.Errorf("counting operation %s in window %s: the count kept changing: %w", opID, window, deprovision.ErrBusy))
}

// count reads a window's count and its row's ETag ("" when the window has no row yet).
func (b *Budget) count(ctx context.Context, pk string) (int, azcore.ETag, error) {
	resp, err := b.c.GetEntity(ctx, pk, countRow, nil)
	if err != nil {
		if err = classify(err); errors.Is(err, deprovision.ErrNotFound) {
			return 0, "", nil
		}
		return 0, "", fmt.Errorf("reading budget count: %w", err)
	}
	e, err := decode(resp.Value)
	if err != nil {
		return 0, "", err
	}
	return e.int("Count"), resp.ETag, nil
}
