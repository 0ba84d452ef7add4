package emulator

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// device is a stored hub device identity with its twin.
type device struct {
	id             string
	generationID   string
	etag           string
	status         string
	statusReason   string
	statusUpdated  string
	authType       string
	primaryKey     string
	secondaryKey   string
	primaryThumb   string
	secondaryThumb string
	iotEdge        bool
	deviceScope    string
	parentScopes   []string
	tags           map[string]any
	desired        map[string]any
	reported       map[string]any
	// twinVersion counts the twin's changes: 1 when the device is created, one more on every
	// change of tags or desired properties. The twin's etag is its 8-byte big-endian base64
	// and its version one more ("etag":"AAAAAAAAAAE=" with "version":2 on a new device,
	// "AAAAAAAAAAI=" and 3 after one PATCH, as recorded in DevicesClient_TwinLifecycle.json
	// and DevicesClient_DeviceTwinLifecycle.json of Azure/azure-sdk-for-net,
	// sdk/iot/Azure.IoT.Hub.Service/tests/SessionRecords/DevicesClientTests).
	twinVersion int64
	// desiredVersion is the desired properties' $version (1 on a new device, one more per
	// change of them; 0 reads as 1).
	desiredVersion int64
	// twinCreated is when the twin was created ($metadata.$lastUpdated of properties never
	// written; "" reads as the zero time).
	twinCreated string
	// desiredUpdated and desiredUpdatedVersion are the desired properties' last change
	// ($metadata.$lastUpdated and $lastUpdatedVersion), desiredMeta the same per property.
	desiredUpdated        string
	desiredUpdatedVersion int64
	desiredMeta           map[string]propMeta
	act                   *Activity // what the device's own traffic set (activity.go)
}

// propMeta is the $metadata of one desired property.
type propMeta struct {
	updated string
	version int64
}

// zeroTime is how the hub writes a time that never was (connectionStateUpdatedTime,
// lastActivityTime, statusUpdatedTime of a device whose status never changed: every device
// answer in the recordings).
const zeroTime = "0001-01-01T00:00:00Z"

// Wire types of the IoT Hub registry API (api-version 2021-04-12).

type deviceJSON struct {
	DeviceID                   string              `json:"deviceId"`
	GenerationID               string              `json:"generationId"`
	Etag                       string              `json:"etag"`
	ConnectionState            string              `json:"connectionState"`
	Status                     string              `json:"status"`
	StatusReason               *string             `json:"statusReason"`
	ConnectionStateUpdatedTime string              `json:"connectionStateUpdatedTime"`
	StatusUpdatedTime          string              `json:"statusUpdatedTime"`
	LastActivityTime           string              `json:"lastActivityTime"`
	CloudToDeviceMessageCount  int                 `json:"cloudToDeviceMessageCount"`
	Authentication             *authJSON           `json:"authentication"`
	Capabilities               *deviceCapabilities `json:"capabilities"`
	DeviceScope                string              `json:"deviceScope,omitempty"`
	ParentScopes               []string            `json:"parentScopes,omitempty"`
}

type authJSON struct {
	SymmetricKey   *symmetricKeyJSON `json:"symmetricKey"`
	X509Thumbprint *thumbprintJSON   `json:"x509Thumbprint"`
	Type           string            `json:"type"`
}

type symmetricKeyJSON struct {
	PrimaryKey   *string `json:"primaryKey"`
	SecondaryKey *string `json:"secondaryKey"`
}

type thumbprintJSON struct {
	PrimaryThumbprint   *string `json:"primaryThumbprint"`
	SecondaryThumbprint *string `json:"secondaryThumbprint"`
}

type deviceCapabilities struct {
	IotEdge bool `json:"iotEdge"`
}

func strPtr(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func (d *device) json() deviceJSON {
	out := deviceJSON{
		DeviceID:                   d.id,
		GenerationID:               d.generationID,
		Etag:                       d.etag,
		ConnectionState:            d.connectionState(),
		Status:                     d.status,
		StatusReason:               strPtr(d.statusReason),
		ConnectionStateUpdatedTime: d.connectionStateUpdated(),
		StatusUpdatedTime:          orZero(d.statusUpdated),
		LastActivityTime:           d.lastActivity(),
		Authentication: &authJSON{
			SymmetricKey:   &symmetricKeyJSON{PrimaryKey: strPtr(d.primaryKey), SecondaryKey: strPtr(d.secondaryKey)},
			X509Thumbprint: &thumbprintJSON{PrimaryThumbprint: strPtr(d.primaryThumb), SecondaryThumbprint: strPtr(d.secondaryThumb)},
			Type:           d.authType,
		},
		Capabilities: &deviceCapabilities{IotEdge: d.iotEdge},
		DeviceScope:  d.deviceScope,
		ParentScopes: d.parentScopes,
	}
	return out
}

// twinJSON is the Twin of the hub spec, as SELECT *, GET /twins and PATCH /twins return it
// (field for field as in the recorded twins of DevicesClient_TwinLifecycle.json and
// DevicesClient_Query_GetTwins.json).
type twinJSON struct {
	DeviceID                  string             `json:"deviceId"`
	Etag                      string             `json:"etag"`
	DeviceEtag                string             `json:"deviceEtag"`
	Status                    string             `json:"status"`
	StatusReason              string             `json:"statusReason,omitempty"`
	StatusUpdateTime          string             `json:"statusUpdateTime"`
	ConnectionState           string             `json:"connectionState"`
	LastActivityTime          string             `json:"lastActivityTime"`
	CloudToDeviceMessageCount int                `json:"cloudToDeviceMessageCount"`
	AuthenticationType        string             `json:"authenticationType"`
	X509Thumbprint            thumbprintJSON     `json:"x509Thumbprint"`
	Version                   int64              `json:"version"`
	Tags                      map[string]any     `json:"tags,omitempty"`
	Properties                twinPropertiesJSON `json:"properties"`
	Capabilities              deviceCapabilities `json:"capabilities"`
	DeviceScope               string             `json:"deviceScope,omitempty"`
	ParentScopes              []string           `json:"parentScopes,omitempty"`
}

type twinPropertiesJSON struct {
	Desired  map[string]any `json:"desired"`
	Reported map[string]any `json:"reported"`
}

func orZero(t string) string {
	if t == "" {
		return zeroTime
	}
	return t
}

func (d *device) counters() (twin, desired int64) {
	return max(d.twinVersion, 1), max(d.desiredVersion, 1)
}

// desiredJSON is the desired properties as the hub answers with them: the properties, then
// "$metadata" ({"$lastUpdated"} while none was ever set; "$lastUpdatedVersion" and one
// {"$lastUpdated","$lastUpdatedVersion"} per property once some are) and "$version".
func (d *device) desiredJSON() map[string]any {
	_, dv := d.counters()
	out := make(map[string]any, len(d.desired)+2)
	// Properties written with the device (a bulk create's, an enrollment's initial twin)
	// carry the zero time (DevicesClient_BulkCreation_DeviceWithTwin.json).
	last := firstSet(d.desiredUpdated, d.twinCreated)
	if d.desiredUpdated == "" && len(d.desired) > 0 {
		last = zeroTime
	}
	meta := map[string]any{"$lastUpdated": orZero(last)}
	if len(d.desired) > 0 || d.desiredUpdatedVersion > 0 {
		meta["$lastUpdatedVersion"] = max(d.desiredUpdatedVersion, dv)
	}
	for k, v := range d.desired {
		out[k] = v
		m, ok := d.desiredMeta[k]
		if !ok {
			m = propMeta{updated: orZero(d.desiredUpdated), version: dv}
		}
		meta[k] = map[string]any{"$lastUpdated": orZero(m.updated), "$lastUpdatedVersion": m.version}
	}
	out["$metadata"] = meta
	out["$version"] = dv
	return out
}

// reportedJSON is the reported properties; only devices write them, and no device connects
// to the emulator, so they are always empty.
func (d *device) reportedJSON() map[string]any {
	out := make(map[string]any, len(d.reported)+2)
	for k, v := range d.reported {
		out[k] = v
	}
	out["$metadata"] = map[string]any{"$lastUpdated": orZero(d.twinCreated)}
	out["$version"] = int64(1)
	return out
}

func firstSet(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func (d *device) twinJSON() twinJSON {
	tv, _ := d.counters()
	return twinJSON{
		DeviceID:           d.id,
		Etag:               twinEtag(tv),
		DeviceEtag:         d.etag,
		Status:             d.status,
		StatusReason:       d.statusReason,
		StatusUpdateTime:   orZero(d.statusUpdated),
		ConnectionState:    d.connectionState(),
		LastActivityTime:   d.twinLastActivity(),
		AuthenticationType: d.authType,
		X509Thumbprint:     thumbprintJSON{PrimaryThumbprint: strPtr(d.primaryThumb), SecondaryThumbprint: strPtr(d.secondaryThumb)},
		Version:            tv + 1,
		Tags:               d.tags,
		Properties:         twinPropertiesJSON{Desired: d.desiredJSON(), Reported: d.reportedJSON()},
		Capabilities:       deviceCapabilities{IotEdge: d.iotEdge},
		DeviceScope:        d.deviceScope,
		ParentScopes:       d.parentScopes,
	}
}

// twin returns the device's twin as a generic map, for query conditions and projections.
func (d *device) twin() map[string]any {
	b, _ := json.Marshal(d.twinJSON())
	var t map[string]any
	_ = json.Unmarshal(b, &t)
	return t
}

// setDesired replaces (patch false) or merges (patch true) the desired properties with p,
// as PATCH and PUT /twins and the twin modes of bulk calls do: keys starting with "$" are
// the service's own and ignored; in a patch, null removes a property and objects merge
// (iot-hub-devguide-device-twins.md, "Back-end operations"). It reports whether anything
// changed and bumps the versions and metadata when it did.
func (d *device) setDesired(p map[string]any, patch bool) bool {
	next := map[string]any{}
	if patch {
		for k, v := range d.desired {
			next[k] = v
		}
	}
	for k, v := range p {
		if strings.HasPrefix(k, "$") {
			continue
		}
		if patch {
			mergeProp(next, k, v)
		} else if v != nil {
			next[k] = v
		}
	}
	if jsonEqual(next, d.desired) {
		return false
	}
	_, dv := d.counters()
	d.desiredVersion = dv + 1
	now := nowUTC()
	meta := map[string]propMeta{}
	for k := range next {
		if m, ok := d.desiredMeta[k]; ok && valueEqual(next[k], d.desired[k]) {
			meta[k] = m
			continue
		}
		meta[k] = propMeta{updated: now, version: d.desiredVersion}
	}
	d.desired, d.desiredMeta = next, meta
	d.desiredUpdated, d.desiredUpdatedVersion = now, d.desiredVersion
	return true
}

// setTags replaces or merges the twin's tags (same rules as setDesired) and reports whether
// they changed.
func (d *device) setTags(p map[string]any, patch bool) bool {
	next := map[string]any{}
	if patch {
		for k, v := range d.tags {
			next[k] = v
		}
	}
	for k, v := range p {
		if patch {
			mergeProp(next, k, v)
		} else if v != nil {
			next[k] = v
		}
	}
	if jsonEqual(next, d.tags) {
		return false
	}
	if len(next) == 0 {
		next = nil
	}
	d.tags = next
	return true
}

// mergeProp applies one key of a JSON merge patch to m.
func mergeProp(m map[string]any, k string, v any) {
	if v == nil {
		delete(m, k)
		return
	}
	pv, ok := v.(map[string]any)
	cur, ok2 := m[k].(map[string]any)
	if !ok || !ok2 {
		m[k] = v
		return
	}
	merged := make(map[string]any, len(cur))
	for ck, cv := range cur {
		merged[ck] = cv
	}
	for pk, pvv := range pv {
		mergeProp(merged, pk, pvv)
	}
	m[k] = merged
}

func valueEqual(a, b any) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

func jsonEqual(a, b map[string]any) bool {
	if len(a) == 0 && len(b) == 0 {
		return true
	}
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

var etagCounter atomic.Int64

func init() { etagCounter.Store(time.Now().UnixNano() % 1_000_000_000) }

// newDeviceEtag returns an opaque, unquoted etag like the hub's: base64 of a decimal counter
// that grows by one per write ("MzQzMDYwMzU2" then "MzQzMDYwMzU3", recorded in
// DevicesClient_UpdateDevice_EtagDoesNotMatch.json).
func newDeviceEtag() string {
	return base64.StdEncoding.EncodeToString([]byte(strconv.FormatInt(etagCounter.Add(1), 10)))
}

func twinEtag(v int64) string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(v))
	return base64.StdEncoding.EncodeToString(b[:])
}

func newGenerationID() string {
	return "6" + strconv.FormatInt(time.Now().UnixNano()%1e17, 10)
}
