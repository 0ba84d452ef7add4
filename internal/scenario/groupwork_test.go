package scenario_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"

	"dpsdeprov/azure/workqueue"
	"dpsdeprov/deprovision"
	"dpsdeprov/handler"
	"dpsdeprov/internal/testenv"
)

// openGroupWork creates the environment's GroupWork queue on Azurite, which the engines'
// fan-out writes (Deps.Work): group-wide operations take the path they take in production.
func (e *env) openGroupWork() {
	e.t.Helper()
	svc, err := azqueue.NewServiceClientFromConnectionString(testenv.SharedAzurite(e.t).ConnectionString(), nil)
	if err != nil {
		e.t.Fatal(err)
	}
	name := testenv.UniqueName("gw-")
	q, err := workqueue.Create(e.t.Context(), svc, name)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := workqueue.Create(e.t.Context(), svc, name+"-poison"); err != nil {
		e.t.Fatal(err)
	}
	e.work, e.poison = svc.NewQueueClient(name), svc.NewQueueClient(name+"-poison")
	e.ports.Work = q
}

// groupWork plays the Functions host's queue trigger for the GroupWork function until the
// queue is empty: it dequeues each message the fan-out enqueued, invokes the real handler's
// GroupWork function with it as the host does (the text double-encoded, DequeueCount and Id in
// the metadata), deletes it when the invocation succeeds, makes it visible again when it fails,
// and moves it to the poison queue after host.json's maxDequeueCount deliveries. The handler's
// worker runs on eng (the environment's engine when nil), as a GroupWork invocation of the
// app does.
func (e *env) groupWork(eng *deprovision.Engine) { e.t.Helper(); e.groupWorkUntil(eng, nil) }

// groupWorkUntil is groupWork in a process that may die: once died reports true (checked after
// each invocation) it stops, and the messages it had dequeued become visible again, as they do
// when their visibility timeout runs out after the host died.
func (e *env) groupWorkUntil(eng *deprovision.Engine, died func() bool) {
	e.t.Helper()
	if eng == nil {
		eng = e.engine(nil)
	}
	h, err := handler.New(handler.Options{Engine: eng, Admission: handler.Admission{Events: handler.DefaultEventTypes()}, Clock: e.clock,
		GroupWorker: &handler.EngineGroupWorker{Engine: eng, MaxDequeueCount: handler.DefaultMaxDequeueCount},
		Logger:      slog.New(slog.DiscardHandler)})
	if err != nil {
		e.t.Fatal(err)
	}
	ctx := context.Background()
	for {
		resp, err := e.work.DequeueMessages(ctx, &azqueue.DequeueMessagesOptions{NumberOfMessages: to.Ptr(int32(32)), VisibilityTimeout: to.Ptr(int32(300))})
		if err != nil {
			e.t.Fatalf("dequeuing group work: %v", err)
		}
		if len(resp.Messages) == 0 {
			return
		}
		for i, m := range resp.Messages {
			if died != nil && died() {
				for _, m := range resp.Messages[i:] {
					if _, err := e.work.UpdateMessage(ctx, *m.MessageID, *m.PopReceipt, *m.MessageText, &azqueue.UpdateMessageOptions{VisibilityTimeout: to.Ptr(int32(0))}); err != nil {
						e.t.Fatalf("releasing group work message %s: %v", *m.MessageID, err)
					}
				}
				return
			}
			text, _ := json.Marshal(*m.MessageText)
			id, _ := json.Marshal(*m.MessageID)
			inv, _ := json.Marshal(map[string]any{"Data": map[string]any{handler.BindingMessage: string(text)},
				"Metadata": map[string]any{"DequeueCount": strconv.FormatInt(*m.DequeueCount, 10), "Id": string(id)}})
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/"+handler.FunctionGroupWork, bytes.NewReader(inv)))
			switch {
			case rec.Code/100 == 2 && (died == nil || !died()):
				_, err = e.work.DeleteMessage(ctx, *m.MessageID, *m.PopReceipt, nil)
			case *m.DequeueCount >= handler.DefaultMaxDequeueCount && (died == nil || !died()):
				if _, err = e.poison.EnqueueMessage(ctx, *m.MessageText, nil); err == nil {
					_, err = e.work.DeleteMessage(ctx, *m.MessageID, *m.PopReceipt, nil)
				}
			default:
				_, err = e.work.UpdateMessage(ctx, *m.MessageID, *m.PopReceipt, *m.MessageText, &azqueue.UpdateMessageOptions{VisibilityTimeout: to.Ptr(int32(0))})
			}
			if err != nil {
				e.t.Fatalf("settling group work message %s: %v", *m.MessageID, err)
			}
		}
	}
}
