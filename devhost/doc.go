// Package devhost is a local stand-in for the Azure Functions host (runtime v4) running a custom
// handler, together with an Event Grid topic stand-in that delivers to it. It exists because the
// real host (Core Tools) cannot be installed everywhere, and it is only worth having if it behaves
// as the real host does, so every rule it follows is taken from the host's own code as recorded
// in the project's reference notes on the custom-handler protocol:
//
//   - it reads host.json and one function.json per function folder under the app root;
//   - it starts the handler executable with FUNCTIONS_CUSTOMHANDLER_PORT (and the other variables
//     the host sets), and waits until GET / answers;
//   - it invokes a function with POST /<FunctionName>, the host's headers and a
//     {"Data":…,"Metadata":…} body whose values are encoded as the host encodes them (Event Grid
//     events and timer info as objects, queue text and metadata strings double-encoded, numbers
//     as strings, a "sys" entry);
//   - it requires a JSON answer with a JSON content type, treats any other status as a failed
//     invocation, and applies http and queue output bindings;
//   - it serves the Event Grid webhook (/runtime/webhooks/eventgrid?functionName=…), including the
//     subscription validation handshakes, splitting a POST into one concurrent invocation per
//     event and answering 202 or 500;
//   - it fires timer triggers from their six-field NCRONTAB schedules, and feeds queue triggers
//     from Storage queues (Azurite) with dequeue counts, visibility timeouts and a poison queue;
//   - it serves HTTP triggers under /api in the default payload mode (or forwards them when
//     host.json asks for it).
//
// Its Event Grid topics accept what azeventgrid publishes (POST …/api/events?api-version=2018-01-01,
// Event Grid schema or CloudEvents 1.0, single events or batches, aeg-sas-key or aeg-sas-token) and
// deliver each event to the subscribed functions' webhook with Event Grid's retry schedule
// (compressed in time by a configurable factor), writing events that run out of attempts or time
// to a dead-letter file. A topic without subscriptions keeps what it receives, which is how
// devhost stands in for a topic the app publishes to.
//
// devhost knows nothing about the app it runs: it depends only on the app folder, its settings and
// the Azure SDK's storage client.
package devhost
