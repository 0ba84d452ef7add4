package infra

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/eventgrid/azsystemevents"

	"dpsdeprov/handler"
	"dpsdeprov/internal/pack"
	"dpsdeprov/internal/testenv"
)

// lifecycleTypes are the IoT Hub event types the cleanup's last-seen store is fed with
// (docs/cleanup.md); telemetry is opt-in.
var lifecycleTypes = []string{
	azsystemevents.TypeIOTHubDeviceConnected,
	azsystemevents.TypeIOTHubDeviceDisconnected,
	azsystemevents.TypeIOTHubDeviceCreated,
	azsystemevents.TypeIOTHubDeviceDeleted,
}

// eventGridFunction returns the name of the app's one Event Grid-triggered function, as the
// package declares it.
func eventGridFunction(t *testing.T) string {
	t.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	app, err := pack.ReadApp(root)
	if err != nil {
		t.Fatal(err)
	}
	eg := app.FunctionsWithTrigger("eventGridTrigger")
	if len(eg) != 1 {
		t.Fatalf("the app has %d Event Grid-triggered functions, want 1", len(eg))
	}
	return eg[0].Name
}

// lifecycleHub is one element of events.json's iotHubs parameter.
type lifecycleHub struct {
	id, location, existingTopic string
}

func (h lifecycleHub) param() map[string]any {
	m := map[string]any{"resourceId": h.id, "location": h.location}
	if h.existingTopic != "" {
		m["systemTopicName"] = h.existingTopic
	}
	return m
}

func (h lifecycleHub) name() string { return h.id[strings.LastIndex(h.id, "/")+1:] }

// TestLifecycleEventsFeedDeviceEvents checks events.json's lifecycle part: for each hub, a
// system topic on the hub (or the existing one named), subscribed to the app's Event
// Grid-triggered function with the lifecycle event types the handler records, delivered like
// the device events (one at a time, 24 hours of retries, dead-lettering into the container
// main.json creates through the topic's identity, which may write there), and telemetry only
// when asked for.
func TestLifecycleEventsFeedDeviceEvents(t *testing.T) {
	fn := eventGridFunction(t)
	if fn != handler.FunctionDeviceEvents {
		t.Fatalf("the Event Grid-triggered function is %s, the handler serves events as %s", fn, handler.FunctionDeviceEvents)
	}
	mainT := mustLoad(t, "main.json", "main.parameters.json", nil)
	mainContainers := containers(mainT, evaluated(t, mainT))

	rg := testDeployment.resourceGroupID()
	otherRG := "/subscriptions/" + testDeployment.subscriptionID + "/resourceGroups/rg-iot"
	hubA := lifecycleHub{id: otherRG + "/providers/Microsoft.Devices/IotHubs/hub-a", location: "westeurope"}
	hubB := lifecycleHub{id: otherRG + "/providers/Microsoft.Devices/IotHubs/hub-b", location: "northeurope"}
	hubC := lifecycleHub{id: rg + "/providers/Microsoft.Devices/IotHubs/hub-c", location: "westeurope", existingTopic: "hub-c-0f1e2d3c"}

	cases := []struct {
		name      string
		overrides map[string]any
		hubs      []lifecycleHub
		types     []string
		schema    string
	}{
		{"two new topics, defaults", map[string]any{}, []lifecycleHub{hubA, hubB},
			lifecycleTypes, "CloudEventSchemaV1_0"},
		{"an existing topic and a new one", map[string]any{}, []lifecycleHub{hubC, hubA},
			lifecycleTypes, "CloudEventSchemaV1_0"},
		{"telemetry on", map[string]any{"lifecycleTelemetry": true}, []lifecycleHub{hubA},
			append(slices.Clone(lifecycleTypes), azsystemevents.TypeIOTHubDeviceTelemetry), "CloudEventSchemaV1_0"},
		{"Event Grid schema", map[string]any{"lifecycleDeliverySchema": "EventGridSchema"}, []lifecycleHub{hubB},
			lifecycleTypes, "EventGridSchema"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var hubs []any
			for _, h := range c.hubs {
				hubs = append(hubs, h.param())
			}
			c.overrides["iotHubs"] = hubs
			tm := mustLoad(t, "events.json", "events.parameters.json", c.overrides)
			rs := evaluated(t, tm)
			account, _ := tm.parameter("storageAccountName")
			appName, _ := tm.parameter("functionAppName")
			topicName, _ := tm.parameter("topicName")
			wantFn := rg + "/providers/Microsoft.Web/sites/" + appName.(string) + "/functions/" + fn
			containerID := rg + "/providers/Microsoft.Storage/storageAccounts/" + account.(string) + "/blobServices/default/containers/deadletter"

			topics := all(rs, "Microsoft.EventGrid/systemTopics")
			subs := all(rs, "Microsoft.EventGrid/systemTopics/eventSubscriptions")
			if len(subs) != len(c.hubs) {
				t.Fatalf("events.json subscribes %d system topics, want one per hub (%d)", len(subs), len(c.hubs))
			}
			wantGrants := []grant{{containerID, roleStorageBlobDataContributor, "principal-of-" + topicName.(string)}}
			created := 0
			for _, h := range c.hubs {
				topic := h.existingTopic
				if topic == "" {
					created++
					topic = findSystemTopic(t, topics, h)
				} else if slices.ContainsFunc(topics, func(r resource) bool { return r.Name == topic }) {
					t.Errorf("events.json creates system topic %s, which the parameters name as existing", topic)
				}
				wantGrants = append(wantGrants, grant{containerID, roleStorageBlobDataContributor, "principal-of-" + topic})

				i := slices.IndexFunc(subs, func(r resource) bool { return strings.HasPrefix(r.Name, topic+"/") })
				if i < 0 {
					t.Errorf("no subscription on system topic %s (hub %s); subscriptions: %v", topic, h.name(), names(subs))
					continue
				}
				sub := subs[i]
				p := sub.Properties
				dest, _ := p["destination"].(map[string]any)
				dp, _ := dest["properties"].(map[string]any)
				if dest["endpointType"] != "AzureFunction" || dp["resourceId"] != wantFn {
					t.Errorf("%s: destination = %v, want AzureFunction %s", sub.Name, dest, wantFn)
				}
				if dp["maxEventsPerBatch"] != int64(1) {
					t.Errorf("%s: maxEventsPerBatch = %v, want 1: a failed batch is redelivered whole", sub.Name, dp["maxEventsPerBatch"])
				}
				if p["eventDeliverySchema"] != c.schema {
					t.Errorf("%s: eventDeliverySchema = %v, want %s", sub.Name, p["eventDeliverySchema"], c.schema)
				}
				retry, _ := p["retryPolicy"].(map[string]any)
				if n, _ := retry["maxDeliveryAttempts"].(int64); n < 2 {
					t.Errorf("%s: retryPolicy = %v, want retries", sub.Name, retry)
				}
				if ttl, _ := retry["eventTimeToLiveInMinutes"].(int64); ttl != 1440 {
					t.Errorf("%s: event time to live = %v minutes, want 1440, like the device events", sub.Name, ttl)
				}
				if p["deadLetterDestination"] != nil {
					t.Errorf("%s: dead-letters with a key-based destination, want the topic's identity", sub.Name)
				}
				dl, _ := p["deadLetterWithResourceIdentity"].(map[string]any)
				dlIdentity, _ := dl["identity"].(map[string]any)
				dlDest, _ := dl["deadLetterDestination"].(map[string]any)
				dlp, _ := dlDest["properties"].(map[string]any)
				if dlIdentity["type"] != "SystemAssigned" || dlDest["endpointType"] != "StorageBlob" ||
					dlp["resourceId"] != rg+"/providers/Microsoft.Storage/storageAccounts/"+account.(string) {
					t.Errorf("%s: dead-lettering = %v, want blob storage in the app's account through the topic's identity", sub.Name, dl)
				}
				if container, _ := dlp["blobContainerName"].(string); container != "deadletter" || !slices.Contains(mainContainers, container) {
					t.Errorf("%s: dead-letter container %q, want deadletter, which main.json creates (%v)", sub.Name, container, mainContainers)
				}
				checkLifecycleFilter(t, sub, c.types)
			}
			if len(topics) != created {
				t.Errorf("events.json creates system topics %v, want one for each hub without an existing topic (%d)", names(topics), created)
			}
			sameGrants(t, "events.json "+c.name, grants(t, tm), wantGrants)
		})
	}

	t.Run("no hubs", func(t *testing.T) {
		tm := mustLoad(t, "events.json", "events.parameters.json", map[string]any{"iotHubs": noHubs})
		rs := evaluated(t, tm)
		if n := len(all(rs, "Microsoft.EventGrid/systemTopics")) + len(all(rs, "Microsoft.EventGrid/systemTopics/eventSubscriptions")); n != 0 {
			t.Errorf("with no hubs, events.json still deploys %d system topics or subscriptions", n)
		}
	})

	t.Run("telemetry is off by default", func(t *testing.T) {
		tm := mustLoad(t, "events.json", "", map[string]any{"functionAppName": "a", "storageAccountName": "s", "topicName": "ttt",
			"iotHubs": []any{hubA.param()}})
		if v, err := tm.parameter("lifecycleTelemetry"); err != nil || v != false {
			t.Errorf("lifecycleTelemetry defaults to %v (%v), want false", v, err)
		}
		sub := only(t, tm, evaluated(t, tm), "Microsoft.EventGrid/systemTopics/eventSubscriptions")
		checkLifecycleFilter(t, sub, lifecycleTypes)
	})

	t.Run("unknown delivery schema", func(t *testing.T) {
		tm := mustLoad(t, "events.json", "events.parameters.json", map[string]any{"lifecycleDeliverySchema": "CustomInputSchema"})
		if _, err := tm.resources(); err == nil || !strings.Contains(err.Error(), "allowedValues") {
			t.Errorf("lifecycleDeliverySchema CustomInputSchema: err = %v, want it refused by allowedValues", err)
		}
	})

	// The example parameters subscribe the hubs that main.parameters.json's app talks to.
	ev := mustLoad(t, "events.json", "events.parameters.json", nil)
	hubs, err := ev.parameter("iotHubs")
	if err != nil {
		t.Fatal(err)
	}
	hosts, err := mainT.parameter("iotHubHostNames")
	if err != nil {
		t.Fatal(err)
	}
	var fromIDs, fromHosts []string
	for _, h := range hubs.([]any) {
		id, _ := h.(map[string]any)["resourceId"].(string)
		if typ, name, err := typeAndName(id); err != nil || typ != "Microsoft.Devices/IotHubs" {
			t.Errorf("events.parameters.json: hub resourceId %q is not an IoT hub's resource id", id)
		} else {
			fromIDs = append(fromIDs, name)
		}
	}
	for _, h := range hosts.([]any) {
		name, _, _ := strings.Cut(h.(string), ".")
		fromHosts = append(fromHosts, name)
	}
	if fmt.Sprint(fromIDs) != fmt.Sprint(fromHosts) {
		t.Errorf("events.parameters.json subscribes hubs %v, but main.parameters.json's app uses %v", fromIDs, fromHosts)
	}
}

// findSystemTopic returns the name of the system topic created on hub h, checking it is one.
func findSystemTopic(t *testing.T, topics []resource, h lifecycleHub) string {
	t.Helper()
	var found []resource
	for _, r := range topics {
		if r.Properties["source"] == h.id {
			found = append(found, r)
		}
	}
	if len(found) != 1 {
		t.Errorf("events.json creates %d system topics on hub %s, want 1 (Event Grid allows one per source)", len(found), h.id)
		return ""
	}
	r := found[0]
	if r.Properties["topicType"] != "Microsoft.Devices.IoTHubs" {
		t.Errorf("system topic %s: topicType = %v, want Microsoft.Devices.IoTHubs", r.Name, r.Properties["topicType"])
	}
	if r.Raw["location"] != h.location {
		t.Errorf("system topic %s is in %v, its hub in %s: a system topic lives in its source's region", r.Name, r.Raw["location"], h.location)
	}
	if id, _ := r.Raw["identity"].(map[string]any); id["type"] != "SystemAssigned" {
		t.Errorf("system topic %s: identity = %v, want SystemAssigned (dead-lettering uses it)", r.Name, id)
	}
	return r.Name
}

// checkLifecycleFilter checks that a subscription delivers exactly the want event types, each
// one the handler records as a lifecycle event rather than reading as a deprovisioning request.
func checkLifecycleFilter(t *testing.T, sub resource, want []string) {
	t.Helper()
	filter, _ := sub.Properties["filter"].(map[string]any)
	list, ok := filter["includedEventTypes"].([]any)
	if !ok {
		t.Errorf("%s: no includedEventTypes filter (%v): the subscription would deliver every IoT Hub event", sub.Name, filter)
		return
	}
	var got []string
	for _, v := range list {
		typ, _ := v.(string)
		got = append(got, typ)
		if !handler.IsLifecycleEvent(typ) {
			t.Errorf("%s: event type %q is not an IoT Hub lifecycle event to the handler", sub.Name, typ)
		}
		if _, recorded, _ := handler.DecodeLifecycleEvent(handler.Event{Type: typ}); !recorded {
			t.Errorf("%s: event type %q is one the handler acknowledges without recording", sub.Name, typ)
		}
	}
	sort.Strings(got)
	w := slices.Clone(want)
	sort.Strings(w)
	if !slices.Equal(got, w) {
		t.Errorf("%s: delivers event types %v, want %v", sub.Name, got, w)
	}
}

func names(rs []resource) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Name)
	}
	return out
}
