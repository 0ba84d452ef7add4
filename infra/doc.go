// Package infra holds the ARM templates that deploy the function app to Azure (main.json,
// iot-access.json, events.json and their parameters files) and the tests that check them: each
// file against Microsoft's published ARM JSON schemas, offline, and each template's meaning
// (role assignments, app settings, the Event Grid subscriptions) against the code it deploys.
// See README.md in this folder for the deployment steps.
package infra
