package emulator

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// hub is one emulated IoT hub: its identity registry (devices and their twins), its shared
// access policies (the five defaults of authenticate-authorize-sas.md, with their
// permissions) and its throttles.
type hub struct {
	e        *Emulator
	name     string
	host     string
	policies map[string]*policy
	bucket   *bucket // identity-registry operations
	qbucket  *bucket // queries

	mu      sync.RWMutex
	devices map[string]*device // by device id (case-sensitive)
	pager   *pager
}

func newHub(e *Emulator, name string, perMinute, queriesPerMinute int) *hub {
	return &hub{
		e:    e,
		name: name,
		host: name + hubDomain,
		policies: map[string]*policy{
			"iothubowner":       newPolicy("iothubowner", permRegistryRead|permRegistryWrite|permServiceConnect|permDeviceConnect),
			"service":           newPolicy("service", permServiceConnect),
			"device":            newPolicy("device", permDeviceConnect),
			"registryRead":      newPolicy("registryRead", permRegistryRead),
			"registryReadWrite": newPolicy("registryReadWrite", permRegistryRead|permRegistryWrite),
		},
		bucket:  newBucket(perMinute),
		qbucket: newBucket(queriesPerMinute),
		devices: map[string]*device{},
		pager:   newPager(),
	}
}

func (h *hub) connectionString(policyName string) string {
	p := h.policies[policyName]
	if p == nil {
		return ""
	}
	return "HostName=" + h.host + ";SharedAccessKeyName=" + p.name + ";SharedAccessKey=" + p.primary
}

func (h *hub) reset() {
	h.mu.Lock()
	h.devices = map[string]*device{}
	h.mu.Unlock()
	h.pager.reset()
}

// maxBulkDevices is the most devices one bulk registry call takes (hub spec,
// BulkRegistry_UpdateRegistry: "at most 100 devices").
const maxBulkDevices = 100

var importModes = map[string]string{}

func init() {
	for _, m := range []string{"create", "update", "updateIfMatchETag", "delete", "deleteIfMatchETag", "updateTwin", "updateTwinIfMatchETag"} {
		importModes[strings.ToLower(m)] = m
	}
}

// serve serves the hub's registry API and returns the operation name. The operations and
// their paths are the hub service spec's (iothub-service.json, api-version 2021-04-12, as
// published with azure-iot-sdk-python).
func (h *hub) serve(w http.ResponseWriter, r *http.Request) string {
	// Errors take the shape of the call's api-version, malformed calls included.
	w = &hubWriter{ResponseWriter: w, legacy: hubLegacyErrors(r.URL.Query().Get("api-version"))}
	segs := pathSegments(r.URL)
	if segs == nil {
		hubError(w, http.StatusBadRequest, "ArgumentInvalid", "the request path is not correctly escaped")
		return "hub.invalid"
	}
	n := len(segs)
	res := ""
	if n > 0 {
		res = strings.ToLower(segs[0]) // resource names in paths are case-insensitive
	}
	var op string
	var need perm
	cost := 1
	var handler func()
	switch {
	case n == 1 && res == "devices" && r.Method == http.MethodPost:
		op, need = "hub.devices.bulk", permRegistryWrite
		var items []exportImportDevice
		if err := readJSON(r, &items); err != nil {
			if h.e.injectFault(w, r, op, h.name, true) {
				return op
			}
			hubError(w, http.StatusBadRequest, "ArgumentInvalid", "%v", err)
			return op
		}
		cost = max(1, len(items))
		handler = func() { h.bulk(w, items) }
	case n == 1 && res == "devices" && r.Method == http.MethodGet:
		op, need, handler = "hub.devices.list", permRegistryRead, func() { h.list(w, r) }
	case n == 2 && res == "devices" && strings.EqualFold(segs[1], "query") && r.Method == http.MethodPost:
		op, need, handler = "hub.devices.query", permServiceConnect, func() { h.query(w, r) }
	case n == 2 && res == "devices" && r.Method == http.MethodGet:
		op, need, handler = "hub.devices.get", permRegistryRead, func() { h.get(w, segs[1]) }
	case n == 2 && res == "devices" && r.Method == http.MethodPut:
		op, need, handler = "hub.devices.put", permRegistryWrite, func() { h.put(w, r, segs[1]) }
	case n == 2 && res == "devices" && r.Method == http.MethodDelete:
		op, need, handler = "hub.devices.delete", permRegistryWrite, func() { h.delete(w, r, segs[1]) }
	case n == 2 && res == "twins" && r.Method == http.MethodGet:
		op, need, cost, handler = "hub.twins.get", permServiceConnect, 0, func() { h.getTwin(w, segs[1]) }
	case n == 2 && res == "twins" && (r.Method == http.MethodPatch || r.Method == http.MethodPut):
		// Twin writes need ServiceConnect ("Access twins … and run queries",
		// authenticate-authorize-sas.md).
		op, need, cost = "hub.twins.update", permServiceConnect, 0
		handler = func() { h.updateTwin(w, r, segs[1], r.Method == http.MethodPatch) }
	}
	if handler == nil {
		hubError(w, http.StatusNotFound, "GenericNotFound", "no IoT Hub operation %s %s", r.Method, r.URL.Path)
		return "hub.invalid"
	}
	if h.e.injectFault(w, r, op, h.name, true) {
		return op
	}
	if _, err := checkAPIVersion(r); err != nil {
		hubError(w, http.StatusBadRequest, "ArgumentInvalid", "%v", err)
		return op
	}
	if reason, ok := h.e.authorize(r, h.host, HubAudience, h.policies, need); !ok {
		hubError(w, http.StatusUnauthorized, "IotHubUnauthorizedAccess", "unauthorized: %s", reason)
		return op
	}
	// Identity-registry operations and queries each have a per-minute budget
	// (iot-hub-devguide-quotas-throttling.md, "Operation throttles"); every device of a bulk
	// call counts ("the number of devices ... in the import or bulk call", same page). Twin
	// reads and updates have per-second throttles that are not modelled.
	b := h.bucket
	if op == "hub.devices.query" {
		b = h.qbucket
	}
	if cost > 0 || op == "hub.devices.query" {
		if !h.shape(w, r, b, max(cost, 1), op) {
			return op
		}
		if op != "hub.devices.query" {
			h.e.stats.charge(h.name, cost)
		}
	}
	handler()
	return op
}

// shape applies a budget to a call as the hub does: within the budget it is served at once;
// over it, with traffic shaping on ([Options.ThrottleBacklog]), it waits in the backlog until
// the budget's rate reaches it ("IoT Hub returns 429 ThrottlingException only after the
// limit has been violated for too long a period ... In the meantime, IoT Hub processes the
// messages at the operation throttle rate", iot-hub-troubleshoot-error-429001-
// throttlingexception.md), and is answered 429 ThrottlingBacklogTimeout (429003, "Requests
// that were backlogged due to throttling have timed out while waiting in the backlog queue",
// troubleshoot-error-codes.md) when it would wait longer than the backlog holds; with
// shaping off it is answered 429 ThrottlingException (429001) at once. The recorded text of
// the backlog refusal is "The request has been throttled. Wait 10 seconds and try again.
// Operation type: CRUD" (Azure-Samples/Iot-Telemetry-Simulator #39). Retry-After on the
// hub's 429 is UNCONFIRMED; the emulator sends it, in seconds, so that clients wait no
// longer than needed. It reports whether the call may go on.
func (h *hub) shape(w http.ResponseWriter, r *http.Request, b *bucket, cost int, op string) bool {
	backlog := time.Duration(h.e.backlog.Load())
	delay, retry := b.reserve(cost, backlog)
	if retry > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(retry))
		if backlog > 0 {
			hubError(w, http.StatusTooManyRequests, "ThrottlingBacklogTimeout",
				"The request has been throttled. Wait %d seconds and try again. Operation type: %s", retry, opType(op))
		} else {
			hubError(w, http.StatusTooManyRequests, "ThrottlingException",
				"throttled: %s needs %d operations and the hub allows %d a minute", op, cost, b.limit())
		}
		return false
	}
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return false
		}
	}
	return true
}

// opType names a throttled operation's class as the hub's throttle messages do.
func opType(op string) string {
	if op == "hub.devices.query" {
		return "Query"
	}
	return "CRUD"
}

func (h *hub) get(w http.ResponseWriter, id string) {
	h.mu.RLock()
	d := h.devices[id]
	var out deviceJSON
	if d != nil {
		out = d.json()
	}
	h.mu.RUnlock()
	if d == nil {
		hubError(w, http.StatusNotFound, "DeviceNotFound", "device %s does not exist on %s", id, h.host)
		return
	}
	writeDevice(w, out)
}

// writeDevice answers with a device identity and its etag, quoted, in the ETag header, as
// every recorded device GET and PUT answer has it (Devices_Lifecycle.json,
// DevicesClient_IdentityLifecycle.json: ETag "\"ODc1MzM1OTg4\"" with "etag":"ODc1MzM1OTg4").
// Twin answers carry no ETag header (DevicesClient_TwinLifecycle.json).
func writeDevice(w http.ResponseWriter, d deviceJSON) {
	w.Header().Set("ETag", `"`+d.Etag+`"`)
	writeJSON(w, http.StatusOK, d)
}

func (h *hub) getTwin(w http.ResponseWriter, id string) {
	h.mu.RLock()
	d := h.devices[id]
	var out twinJSON
	if d != nil {
		out = d.twinJSON()
	}
	h.mu.RUnlock()
	if d == nil {
		hubError(w, http.StatusNotFound, "DeviceNotFound", "device %s does not exist on %s", id, h.host)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// list serves GET /devices?top=N: at most N devices, N outside 1 to 1000 read as 1000 (hub
// spec, Devices_GetDevices: "not recommended"; "any N outside 1–1000 is treated as 1000").
func (h *hub) list(w http.ResponseWriter, r *http.Request) {
	top := 1000
	if v := r.URL.Query().Get("top"); v != "" {
		if n, err := strconv.Atoi(v); err == nil && n >= 1 && n <= 1000 {
			top = n
		}
	}
	h.mu.RLock()
	keys := make([]string, 0, len(h.devices))
	for k := range h.devices {
		keys = append(keys, k)
	}
	h.mu.RUnlock()
	sortStrings(keys)
	keys = keys[:min(top, len(keys))]
	out := make([]deviceJSON, 0, len(keys))
	h.mu.RLock()
	for _, k := range keys {
		if d := h.devices[k]; d != nil {
			out = append(out, d.json())
		}
	}
	h.mu.RUnlock()
	writeJSON(w, http.StatusOK, out)
}

// checkDeviceIfMatch applies the hub's If-Match rules for an existing device: "*" or "\"*\""
// always matches (the C# SDK sends the quoted form, az CLI the bare one, the .NET service
// client "*" in DevicesClient_IdentityLifecycle.json); any other value must be the quoted
// current etag: an unquoted one was answered 412 "Invalid ETag" (azure-iot-sdk-java #292),
// and every SDK quotes it (azure-iot-sdk-node PR #613, azure-iot-sdk-python PR #754, C#
// InsertEtag).
func checkDeviceIfMatch(im ifMatch, d *device) (string, bool) {
	if !im.present || im.wildcard {
		return "", true
	}
	if !im.quoted {
		return "Invalid ETag: the If-Match value must be quoted", false
	}
	if im.value != d.etag {
		return fmt.Sprintf("etag %s does not match the current etag of device %s", im.value, d.id), false
	}
	return "", true
}

// put serves PUT /devices/{id}: without If-Match (or with "", which the .NET client sends)
// it creates, and an existing id is 409 DeviceAlreadyExists (azure-iot-sdks #711); with
// If-Match it updates (412 PreconditionFailed on a stale etag, recorded in
// DevicesClient_UpdateDevice_EtagDoesNotMatch.json). Device ids are case-sensitive with the
// characters of the hub spec's Device.deviceId (iot-hub-devguide-identity-registry.md, "Device
// identity properties"); a body id differing from the path's is refused (UNCONFIRMED).
func (h *hub) put(w http.ResponseWriter, r *http.Request, id string) {
	var body deviceJSON
	if err := readJSON(r, &body); err != nil {
		hubError(w, http.StatusBadRequest, "ArgumentInvalid", "%v", err)
		return
	}
	if err := validDeviceID(id); err != nil {
		hubError(w, http.StatusBadRequest, "ArgumentInvalid", "%v", err)
		return
	}
	if body.DeviceID == "" {
		body.DeviceID = id
	} else if body.DeviceID != id {
		hubError(w, http.StatusBadRequest, "ArgumentInvalid", "deviceId %q in the body differs from %q in the path (device ids are case-sensitive)", body.DeviceID, id)
		return
	}
	im := parseIfMatch(r.Header.Get("If-Match"))
	h.mu.Lock()
	defer h.mu.Unlock()
	old := h.devices[id]
	switch {
	case old == nil && im.present:
		// Updating a device that does not exist. UNCONFIRMED whether the hub creates it
		// under If-Match "*"; the SDKs report DeviceNotFound for updates of missing devices.
		hubError(w, http.StatusNotFound, "DeviceNotFound", "device %s does not exist on %s", id, h.host)
		return
	case old != nil && !im.present:
		hubError(w, http.StatusConflict, "DeviceAlreadyExists", "device %s already exists on %s", id, h.host)
		return
	case old != nil:
		if msg, ok := checkDeviceIfMatch(im, old); !ok {
			hubError(w, http.StatusPreconditionFailed, "PreconditionFailed", "%s", msg)
			return
		}
	}
	d, err := deviceFromJSON(&body, old)
	if err != nil {
		hubError(w, http.StatusBadRequest, "ArgumentInvalid", "%v", err)
		return
	}
	h.devices[id] = d
	writeDevice(w, d.json())
}

// deviceFromJSON builds the stored device from a request body, keeping what an update does
// not change (generation id, twin, unsent keys).
func deviceFromJSON(b *deviceJSON, old *device) (*device, error) {
	d := &device{id: b.DeviceID, status: b.Status}
	if old != nil {
		*d = *old
		d.status = b.Status
	}
	switch d.status {
	case "":
		d.status = "enabled"
	case "enabled", "disabled":
	default:
		return nil, fmt.Errorf("status %q is not enabled or disabled", b.Status)
	}
	reason := ""
	if b.StatusReason != nil {
		reason = *b.StatusReason
	}
	if len(reason) > 128 {
		return nil, fmt.Errorf("statusReason is longer than 128 characters")
	}
	// statusUpdatedTime is the zero time until the status changes (a created device answers
	// "0001-01-01T00:00:00"; disabling it sets the time: DevicesClient_IdentityLifecycle.json).
	if old != nil && (old.status != d.status || old.statusReason != reason) {
		d.statusUpdated = nowUTC()
	}
	d.statusReason = reason
	if err := setAuth(d, b.Authentication, old); err != nil {
		return nil, err
	}
	if b.Capabilities != nil {
		d.iotEdge = b.Capabilities.IotEdge
	}
	d.deviceScope = b.DeviceScope
	d.parentScopes = b.ParentScopes
	if old == nil {
		d.generationID = newGenerationID()
		d.twinVersion = 1
		d.twinCreated = nowUTC()
	}
	d.etag = newDeviceEtag()
	return d, nil
}

// setAuth applies an authentication mechanism. Without one, or with type sas and no keys,
// SAS keys are generated (hub spec, ExportImportDevice.authentication: "defaults to SAS ...
// keys are auto-generated"; recorded: every create without keys in the .NET recordings
// answers "type":"sas" with keys), or kept on update. Thumbprints are SHA-1 or SHA-256 hex
// (iot-hub-x509ca-overview.md); type selfSigned needs a primary.
func setAuth(d *device, a *authJSON, old *device) error {
	typ := "sas"
	var pk, sk, pt, st string
	if a != nil {
		if a.Type != "" {
			typ = a.Type
		}
		if a.SymmetricKey != nil {
			pk, sk = deref(a.SymmetricKey.PrimaryKey), deref(a.SymmetricKey.SecondaryKey)
		}
		if a.X509Thumbprint != nil {
			pt, st = deref(a.X509Thumbprint.PrimaryThumbprint), deref(a.X509Thumbprint.SecondaryThumbprint)
		}
		if a.Type == "" && pt != "" {
			typ = "selfSigned"
		}
	}
	d.authType = typ
	d.primaryKey, d.secondaryKey, d.primaryThumb, d.secondaryThumb = "", "", "", ""
	switch typ {
	case "sas":
		if pk == "" && sk == "" && old != nil && old.authType == "sas" {
			pk, sk = old.primaryKey, old.secondaryKey
		}
		if pk == "" {
			pk = newKey()
		}
		if sk == "" {
			sk = newKey()
		}
		for _, k := range []string{pk, sk} {
			raw, err := base64.StdEncoding.DecodeString(k)
			if err != nil || len(raw) < 16 || len(raw) > 64 {
				return fmt.Errorf("symmetric keys must be base64 of 16 to 64 bytes")
			}
		}
		d.primaryKey, d.secondaryKey = pk, sk
	case "selfSigned":
		if pt == "" {
			return fmt.Errorf("authentication type selfSigned needs x509Thumbprint.primaryThumbprint")
		}
		for _, t := range []string{pt, st} {
			if t == "" {
				continue
			}
			if _, err := hex.DecodeString(t); err != nil || (len(t) != 40 && len(t) != 64) {
				return fmt.Errorf("thumbprint %q is not a SHA-1 or SHA-256 hex digest", t)
			}
		}
		d.primaryThumb, d.secondaryThumb = strings.ToUpper(pt), strings.ToUpper(st)
	case "certificateAuthority", "none":
	default:
		return fmt.Errorf("authentication type %q is not sas, selfSigned, certificateAuthority or none", typ)
	}
	return nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// delete serves DELETE /devices/{id}: "*" (quoted or not) or the quoted etag; the twin goes
// with the device ("Device twins are implicitly created and deleted when a device identity
// is created or deleted", iot-hub-devguide-device-twins.md).
func (h *hub) delete(w http.ResponseWriter, r *http.Request, id string) {
	im := parseIfMatch(r.Header.Get("If-Match"))
	h.mu.Lock()
	defer h.mu.Unlock()
	d := h.devices[id]
	if d == nil {
		hubError(w, http.StatusNotFound, "DeviceNotFound", "device %s does not exist on %s", id, h.host)
		return
	}
	// A missing If-Match deletes unconditionally (an SDK maintainer's reading in
	// azure-sdk-for-net PR #12611; UNCONFIRMED by the docs).
	if msg, ok := checkDeviceIfMatch(im, d); !ok {
		hubError(w, http.StatusPreconditionFailed, "PreconditionFailed", "%s", msg)
		return
	}
	delete(h.devices, id) // the twin goes with the device
	w.WriteHeader(http.StatusNoContent)
}

// exportImportDevice is ExportImportDevice.
type exportImportDevice struct {
	ID             string         `json:"id"`
	ModuleID       string         `json:"moduleId,omitempty"`
	ETag           string         `json:"eTag,omitempty"`
	ImportMode     string         `json:"importMode"`
	Status         string         `json:"status,omitempty"`
	StatusReason   *string        `json:"statusReason,omitempty"`
	Authentication *authJSON      `json:"authentication,omitempty"`
	TwinETag       string         `json:"twinETag,omitempty"`
	Tags           map[string]any `json:"tags,omitempty"`
	Properties     *struct {
		Desired  map[string]any `json:"desired,omitempty"`
		Reported map[string]any `json:"reported,omitempty"`
	} `json:"properties,omitempty"`
	Capabilities *deviceCapabilities `json:"capabilities,omitempty"`
	DeviceScope  string              `json:"deviceScope,omitempty"`
	ParentScopes []string            `json:"parentScopes,omitempty"`
}

type bulkRegistryError struct {
	DeviceID    string `json:"deviceId"`
	ModuleID    string `json:"moduleId,omitempty"`
	ErrorCode   string `json:"errorCode"`
	ErrorStatus string `json:"errorStatus"`
	Operation   string `json:"operation,omitempty"`
}

type bulkRegistryResult struct {
	IsSuccessful bool                `json:"isSuccessful"`
	Errors       []bulkRegistryError `json:"errors"`
	Warnings     []json.RawMessage   `json:"warnings"`
}

// bulk serves POST /devices (BulkRegistry_UpdateRegistry). Items are applied one by one (a
// failing item does not undo the others; UNCONFIRMED but the likely behaviour); the answer
// is 200 when all succeed (recorded: DevicesClient_BulkCreation.json,
// DevicesClient_BulkUpdate.json, {"isSuccessful":true,"errors":[],"warnings":[]}) and 400
// with the same BulkRegistryOperationResult otherwise (the spec lists both). Error codes are
// the spec's names (DeviceJobErrorCode enum). Import modes are the spec's enum, matched
// without case since the Node SDK sends "Update" and "DeleteIfMatchETag".
func (h *hub) bulk(w http.ResponseWriter, items []exportImportDevice) {
	if len(items) == 0 {
		hubError(w, http.StatusBadRequest, "ArgumentInvalid", "the bulk request holds no devices")
		return
	}
	if len(items) > maxBulkDevices {
		// UNCONFIRMED which status the hub uses; the name is the documented TooManyDevices.
		hubError(w, http.StatusBadRequest, "TooManyDevices", "a bulk registry operation takes at most %d devices, got %d", maxBulkDevices, len(items))
		return
	}
	seen := make(map[string]bool, len(items))
	for i, it := range items {
		if it.ID == "" {
			hubError(w, http.StatusBadRequest, "ArgumentInvalid", "a bulk item has no id")
			return
		}
		// "Each device may appear only once" (hub spec); the error name for a repeat is
		// the C# SDK's DeviceDefinedMultipleTimes (400011), its status UNCONFIRMED.
		if seen[it.ID] {
			hubError(w, http.StatusBadRequest, "DeviceDefinedMultipleTimes", "device %s appears more than once in the bulk request", it.ID)
			return
		}
		seen[it.ID] = true
		if m, ok := importModes[strings.ToLower(it.ImportMode)]; ok {
			items[i].ImportMode = m
		} else {
			hubError(w, http.StatusBadRequest, "ArgumentInvalid", "importMode %q of device %s is not one of create, update, updateIfMatchETag, delete, deleteIfMatchETag, updateTwin, updateTwinIfMatchETag", it.ImportMode, it.ID)
			return
		}
	}
	res := bulkRegistryResult{IsSuccessful: true, Errors: []bulkRegistryError{}, Warnings: []json.RawMessage{}}
	h.mu.Lock()
	for i := range items {
		if code, msg := h.bulkItem(&items[i]); code != "" {
			res.IsSuccessful = false
			res.Errors = append(res.Errors, bulkRegistryError{DeviceID: items[i].ID, ModuleID: items[i].ModuleID, ErrorCode: code, ErrorStatus: msg, Operation: items[i].ImportMode})
		}
	}
	h.mu.Unlock()
	status := http.StatusOK
	if !res.IsSuccessful {
		status = http.StatusBadRequest
	}
	writeJSON(w, status, res)
}

// bulkItem applies one item with the meanings of iot-hub-bulk-identity-mgmt.md ("create:
// error if the device exists; update: error if it does not, the etag is ignored;
// updateIfMatchETag: the etag must match; delete: error if it does not exist;
// deleteIfMatchETag"): recorded, an update with eTags and a delete with stale eTags succeed
// (DevicesClient_BulkUpdate.json). The caller holds h.mu. It returns an error code name and
// text.
func (h *hub) bulkItem(it *exportImportDevice) (string, string) {
	if it.ModuleID != "" {
		return "ArgumentInvalid", "modules are not emulated"
	}
	if err := validDeviceID(it.ID); err != nil {
		return "ArgumentInvalid", err.Error()
	}
	old := h.devices[it.ID]
	etagOK := func(want, have string) bool { return unquote(want) == have }
	switch it.ImportMode {
	case "create":
		if old != nil {
			return "DeviceAlreadyExists", "device " + it.ID + " already exists"
		}
	case "update", "updateIfMatchETag", "updateTwin", "updateTwinIfMatchETag", "delete", "deleteIfMatchETag":
		if old == nil {
			return "DeviceNotFound", "device " + it.ID + " does not exist"
		}
	}
	switch it.ImportMode {
	case "updateIfMatchETag", "deleteIfMatchETag":
		if !etagOK(it.ETag, old.etag) {
			return "EtagDoesNotMatch", "eTag " + it.ETag + " does not match device " + it.ID
		}
	case "updateTwinIfMatchETag":
		if tv, _ := old.counters(); !etagOK(it.TwinETag, twinEtag(tv)) {
			return "EtagDoesNotMatch", "twinETag " + it.TwinETag + " does not match the twin of " + it.ID
		}
	}
	switch it.ImportMode {
	case "delete", "deleteIfMatchETag":
		delete(h.devices, it.ID)
		return "", ""
	case "updateTwin", "updateTwinIfMatchETag":
		d := *old
		applyTwin(&d, it, true)
		h.devices[it.ID] = &d
		return "", ""
	}
	d, err := deviceFromImport(it, old) // hub_import.go: the item replaces the identity
	if err != nil {
		return "ArgumentInvalid", err.Error()
	}
	applyTwin(d, it, old != nil)
	h.devices[it.ID] = d
	return "", ""
}

// applyTwin writes a bulk item's tags and desired properties, which replace the twin's ("If
// a twin already exists, it's overwritten", iot-hub-bulk-identity-mgmt.md). On a device the
// item creates they are the twin's first state: versions stay at their start, as recorded
// for a bulk create with desired properties (DevicesClient_BulkCreation_DeviceWithTwin.json:
// "$version":1, "etag":"AAAAAAAAAAE=").
func applyTwin(d *device, it *exportImportDevice, existed bool) {
	var desired map[string]any
	if it.Properties != nil {
		desired = it.Properties.Desired
	}
	if !existed {
		d.tags = it.Tags
		d.desired = nil
		for k, v := range desired {
			if d.desired == nil {
				d.desired = map[string]any{}
			}
			if !strings.HasPrefix(k, "$") && v != nil {
				d.desired[k] = v
			}
		}
		return
	}
	changed := false
	if it.Tags != nil {
		changed = d.setTags(it.Tags, false) || changed
	}
	if desired != nil {
		changed = d.setDesired(desired, false) || changed
	}
	if changed {
		d.twinVersion = max(d.twinVersion, 1) + 1
	}
}

// twinPatch is the body of PATCH and PUT /twins/{id}: a Twin, of which only the tags and
// the desired properties are written (the rest, sent back by clients that GET-modify-PATCH,
// is the service's: DevicesClient_TwinLifecycle.json sends the whole twin).
type twinPatch struct {
	Tags       map[string]any `json:"tags"`
	Properties *struct {
		Desired map[string]any `json:"desired"`
	} `json:"properties"`
}

// updateTwin serves PATCH /twins/{id} (patch: tags and desired properties merged, null
// removing) and PUT /twins/{id} (both replaced), the calls of the official samples (Node
// azure-iothub Registry.updateTwin and Twin.update in service/samples/twin.js of
// Azure/azure-iot-sdk-node before aac592d9; C# RegistryManager.UpdateTwinAsync and
// ReplaceTwinAsync). If-Match is the twin's etag, quoted, or "*": a stale one answers 412
// PreconditionFailed ("ETag mismatch for device ID '…'", recorded for a module twin in
// ModulesClient_UpdateModuleTwin_EtagDoesNotMatch.json; the device twin is assumed to
// answer alike). An unquoted etag was seen to be ignored (azure-iot-sdk-java #574) and a
// missing If-Match is unconditional (UNCONFIRMED). The answer is the updated twin, 200.
func (h *hub) updateTwin(w http.ResponseWriter, r *http.Request, id string, patch bool) {
	var body twinPatch
	if err := readJSON(r, &body); err != nil {
		hubError(w, http.StatusBadRequest, "ArgumentInvalid", "%v", err)
		return
	}
	im := parseIfMatch(r.Header.Get("If-Match"))
	h.mu.Lock()
	defer h.mu.Unlock()
	old := h.devices[id]
	if old == nil {
		hubError(w, http.StatusNotFound, "DeviceNotFound", "%s", id)
		return
	}
	if tv, _ := old.counters(); im.present && im.quoted && !im.wildcard && im.value != twinEtag(tv) {
		hubError(w, http.StatusPreconditionFailed, "PreconditionFailed", "ETag mismatch for device ID '%s'", id)
		return
	}
	d := *old
	changed := false
	if body.Tags != nil || !patch {
		changed = d.setTags(body.Tags, patch) || changed
	}
	if body.Properties != nil && (body.Properties.Desired != nil || !patch) {
		changed = d.setDesired(body.Properties.Desired, patch) || changed
	} else if !patch {
		changed = d.setDesired(nil, false) || changed
	}
	if changed {
		d.twinVersion = max(d.twinVersion, 1) + 1
	}
	h.devices[id] = &d
	writeJSON(w, http.StatusOK, d.twinJSON())
}
