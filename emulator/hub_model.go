package emulator

import (
	"encoding/base64"
	"encoding/binary"
	"strconv"
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
	twinVersion    int64
}

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
		ConnectionState:            "Disconnected",
		Status:                     d.status,
		StatusReason:               strPtr(d.statusReason),
		ConnectionStateUpdatedTime: zeroTime,
		StatusUpdatedTime:          d.statusUpdated,
		LastActivityTime:           zeroTime,
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

// twinJSON is the Twin of the hub spec, as SELECT * and GET /twins return it.
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

func (d *device) twinJSON() twinJSON {
	return twinJSON{
		DeviceID:           d.id,
		Etag:               twinEtag(d.twinVersion),
		DeviceEtag:         d.etag,
		Status:             d.status,
		StatusReason:       d.statusReason,
		StatusUpdateTime:   d.statusUpdated,
		ConnectionState:    "Disconnected",
		LastActivityTime:   zeroTime,
		AuthenticationType: d.authType,
		X509Thumbprint:     thumbprintJSON{PrimaryThumbprint: strPtr(d.primaryThumb), SecondaryThumbprint: strPtr(d.secondaryThumb)},
		Version:            d.twinVersion,
		Tags:               d.tags,
		Properties:         twinPropertiesJSON{Desired: withVersion(d.desired, d.twinVersion), Reported: withVersion(d.reported, 1)},
		Capabilities:       deviceCapabilities{IotEdge: d.iotEdge},
		DeviceScope:        d.deviceScope,
		ParentScopes:       d.parentScopes,
	}
}

// twin returns the device's twin as a generic map, for query conditions and projections.
func (d *device) twin() map[string]any {
	t := map[string]any{
		"deviceId":                  d.id,
		"etag":                      twinEtag(d.twinVersion),
		"deviceEtag":                d.etag,
		"status":                    d.status,
		"statusUpdateTime":          d.statusUpdated,
		"connectionState":           "Disconnected",
		"lastActivityTime":          zeroTime,
		"cloudToDeviceMessageCount": 0,
		"authenticationType":        d.authType,
		"x509Thumbprint":            map[string]any{"primaryThumbprint": strPtr(d.primaryThumb), "secondaryThumbprint": strPtr(d.secondaryThumb)},
		"version":                   d.twinVersion,
		"capabilities":              map[string]any{"iotEdge": d.iotEdge},
		"properties": map[string]any{
			"desired":  withVersion(d.desired, d.twinVersion),
			"reported": withVersion(d.reported, 1),
		},
	}
	if d.statusReason != "" {
		t["statusReason"] = d.statusReason
	}
	if d.tags != nil {
		t["tags"] = d.tags
	}
	if d.deviceScope != "" {
		t["deviceScope"] = d.deviceScope
	}
	if len(d.parentScopes) > 0 {
		t["parentScopes"] = d.parentScopes
	}
	return t
}

func withVersion(m map[string]any, v int64) map[string]any {
	out := make(map[string]any, len(m)+1)
	for k, x := range m {
		out[k] = x
	}
	out["$version"] = v
	return out
}

var etagCounter atomic.Int64

func init() { etagCounter.Store(time.Now().UnixNano() % 1_000_000_000) }

// newDeviceEtag returns an opaque, unquoted etag like the hub's ("NTEwOTM0NjY0").
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
