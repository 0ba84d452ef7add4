// Package fake holds in-memory implementations of the deprovision ports (DPS, hubs, journal),
// for fast tests of the engine's logic. They are fakes below interfaces this project owns;
// every path they exercise also runs against the real emulator and Azurite
// (internal/scenario). They model the service rules the engine relies on: ETags (412 on a
// stale one, 409 on creating what exists), DPS's lookup order when a device provisions, and
// paging with continuation tokens.
package fake

import (
	"context"
	"fmt"
	"iter"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"dpsdeprov/deprovision"
)

// DPS is an in-memory DPS: individual enrollments, enrollment groups, registration states.
type DPS struct {
	mu          sync.Mutex
	seq         int
	enrollments map[string]deprovision.Enrollment
	groups      map[string]deprovision.Group
	groupKeys   map[string]deprovision.SymmetricKeys
	enKeys      map[string]deprovision.SymmetricKeys
	regs        map[string]deprovision.Registration
	regGroup    map[string]string // registration id -> group id, for group members
	// Writes counts every successful mutation, so tests can check nothing is applied twice.
	Writes []string
	// Pages counts the pages of registration states GroupRegistrations served (one DPS
	// operation each).
	Pages atomic.Int64
}

// NewDPS returns an empty DPS.
func NewDPS() *DPS {
	return &DPS{enrollments: map[string]deprovision.Enrollment{}, groups: map[string]deprovision.Group{},
		groupKeys: map[string]deprovision.SymmetricKeys{}, enKeys: map[string]deprovision.SymmetricKeys{}, regs: map[string]deprovision.Registration{}, regGroup: map[string]string{}}
}

func (d *DPS) etag() string { d.seq++; return `"` + strconv.Itoa(d.seq) + `"` }

func key(id string) string { return strings.ToLower(id) }

func match(stored, etag string) bool {
	return etag == "*" || strings.Trim(etag, `"`) == strings.Trim(stored, `"`)
}

// AddEnrollment stores e as is, its symmetric keys kept apart as DPS keeps them (test setup).
func (d *DPS) AddEnrollment(e deprovision.Enrollment) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e.ETag = d.etag()
	if e.PrimaryKey != "" || e.SecondaryKey != "" {
		d.enKeys[key(e.RegistrationID)] = deprovision.SymmetricKeys{Primary: e.PrimaryKey, Secondary: e.SecondaryKey}
	}
	e.CertificatePEM, e.PrimaryKey, e.SecondaryKey = "", "", ""
	d.enrollments[key(e.RegistrationID)] = e
}

// AddGroup stores g with its primary key; its secondary key is the primary (test setup).
func (d *DPS) AddGroup(g deprovision.Group, primaryKey string) {
	d.AddGroupKeys(g, deprovision.SymmetricKeys{Primary: primaryKey, Secondary: primaryKey})
}

// AddGroupKeys stores g with its two keys (test setup).
func (d *DPS) AddGroupKeys(g deprovision.Group, keys deprovision.SymmetricKeys) {
	d.mu.Lock()
	defer d.mu.Unlock()
	g.ETag = d.etag()
	d.groups[key(g.ID)] = g
	d.groupKeys[key(g.ID)] = keys
}

// AddRegistration stores a registration state; groupID is "" for an individual enrollment.
func (d *DPS) AddRegistration(r deprovision.Registration, groupID string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	r.ETag = d.etag()
	d.regs[key(r.RegistrationID)] = r
	if groupID != "" {
		d.regGroup[key(r.RegistrationID)] = key(groupID)
	}
}

// Enrollment returns a copy of the stored enrollment.
func (d *DPS) Enrollment(rid string) (deprovision.Enrollment, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e, ok := d.enrollments[key(rid)]
	return e, ok
}

// GroupState returns a copy of the stored group.
func (d *DPS) GroupState(id string) (deprovision.Group, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	g, ok := d.groups[key(id)]
	return g, ok
}

// HasRegistration reports whether a registration state exists.
func (d *DPS) HasRegistration(rid string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, ok := d.regs[key(rid)]
	return ok
}

// CanProvision reports whether DPS would admit device rid, a member of groupID ("" if none),
// by the documented lookup order: an individual enrollment with the registration id decides;
// only without one does the group decide.
func (d *DPS) CanProvision(rid, groupID string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if e, ok := d.enrollments[key(rid)]; ok {
		return e.Enabled
	}
	if groupID == "" {
		return false
	}
	g, ok := d.groups[key(groupID)]
	return ok && g.Enabled
}

func (d *DPS) wrote(format string, args ...any) {
	d.Writes = append(d.Writes, fmt.Sprintf(format, args...))
}

func notFound(what string) error { return fmt.Errorf("%s: %w", what, deprovision.ErrNotFound) }

// GetEnrollment implements deprovision.Enrollments.
func (d *DPS) GetEnrollment(_ context.Context, rid string) (*deprovision.Enrollment, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e, ok := d.enrollments[key(rid)]
	if !ok {
		return nil, notFound("enrollment " + rid)
	}
	e.IoTHubs = append([]string(nil), e.IoTHubs...)
	return &e, nil
}

// PutEnrollment implements deprovision.Enrollments.
func (d *DPS) PutEnrollment(_ context.Context, e *deprovision.Enrollment, etag string) (*deprovision.Enrollment, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	cur, exists := d.enrollments[key(e.RegistrationID)]
	switch {
	case etag == "" && exists:
		return nil, fmt.Errorf("enrollment %s: %w", e.RegistrationID, deprovision.ErrConflict)
	case etag != "" && etag != "*" && !exists:
		return nil, notFound("enrollment " + e.RegistrationID)
	case etag != "" && exists && !match(cur.ETag, etag):
		return nil, fmt.Errorf("enrollment %s: %w", e.RegistrationID, deprovision.ErrPreconditionFailed)
	}
	n := *e
	if exists && len(n.ClientCerts) == 0 {
		n.ClientCerts = cur.ClientCerts
	}
	if n.CertificatePEM != "" {
		if certs, err := deprovision.ParseCertificates(n.CertificatePEM); err == nil {
			n.ClientCerts = []deprovision.CertInfo{deprovision.InfoOf(certs[0])}
		}
	}
	if n.PrimaryKey != "" || n.SecondaryKey != "" {
		d.enKeys[key(e.RegistrationID)] = deprovision.SymmetricKeys{Primary: n.PrimaryKey, Secondary: n.SecondaryKey}
	} else if !exists {
		delete(d.enKeys, key(e.RegistrationID))
	}
	n.CertificatePEM, n.PrimaryKey, n.SecondaryKey = "", "", ""
	n.ETag = d.etag()
	d.enrollments[key(e.RegistrationID)] = n
	d.wrote("put enrollment %s enabled=%v hubs=%v", e.RegistrationID, n.Enabled, n.IoTHubs)
	return &n, nil
}

// DeleteEnrollment implements deprovision.Enrollments.
func (d *DPS) DeleteEnrollment(_ context.Context, rid, etag string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	cur, ok := d.enrollments[key(rid)]
	if !ok {
		return notFound("enrollment " + rid)
	}
	if etag != "" && !match(cur.ETag, etag) {
		return fmt.Errorf("enrollment %s: %w", rid, deprovision.ErrPreconditionFailed)
	}
	delete(d.enrollments, key(rid))
	delete(d.enKeys, key(rid))
	d.wrote("delete enrollment %s", rid)
	return nil
}

// GetGroup implements deprovision.Enrollments.
func (d *DPS) GetGroup(_ context.Context, id string) (*deprovision.Group, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	g, ok := d.groups[key(id)]
	if !ok {
		return nil, notFound("enrollment group " + id)
	}
	return &g, nil
}

// PutGroup implements deprovision.Enrollments.
func (d *DPS) PutGroup(_ context.Context, g *deprovision.Group, etag string) (*deprovision.Group, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	cur, exists := d.groups[key(g.ID)]
	switch {
	case etag == "" && exists:
		return nil, fmt.Errorf("group %s: %w", g.ID, deprovision.ErrConflict)
	case etag != "" && etag != "*" && !exists:
		return nil, notFound("enrollment group " + g.ID)
	case etag != "" && exists && !match(cur.ETag, etag):
		return nil, fmt.Errorf("group %s: %w", g.ID, deprovision.ErrPreconditionFailed)
	}
	n := *g
	n.ETag = d.etag()
	d.groups[key(g.ID)] = n
	d.wrote("put group %s enabled=%v", g.ID, n.Enabled)
	return &n, nil
}

// DeleteGroup implements deprovision.Enrollments.
func (d *DPS) DeleteGroup(_ context.Context, id, etag string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	cur, ok := d.groups[key(id)]
	if !ok {
		return notFound("enrollment group " + id)
	}
	if etag != "" && !match(cur.ETag, etag) {
		return fmt.Errorf("group %s: %w", id, deprovision.ErrPreconditionFailed)
	}
	delete(d.groups, key(id))
	d.wrote("delete group %s", id)
	return nil
}

// Groups implements deprovision.Enrollments.
func (d *DPS) Groups(context.Context) iter.Seq2[*deprovision.Group, error] {
	d.mu.Lock()
	var gs []deprovision.Group
	for _, g := range d.groups {
		gs = append(gs, g)
	}
	d.mu.Unlock()
	sort.Slice(gs, func(i, j int) bool { return gs[i].ID < gs[j].ID })
	return func(yield func(*deprovision.Group, error) bool) {
		for i := range gs {
			if !yield(&gs[i], nil) {
				return
			}
		}
	}
}

// GroupKeys implements deprovision.Enrollments.
func (d *DPS) GroupKeys(_ context.Context, id string) (deprovision.SymmetricKeys, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	k, ok := d.groupKeys[key(id)]
	if !ok || k.Primary == "" {
		return deprovision.SymmetricKeys{}, notFound("symmetric keys of group " + id)
	}
	return k, nil
}

// EnrollmentKeys implements deprovision.Enrollments.
func (d *DPS) EnrollmentKeys(_ context.Context, rid string) (deprovision.SymmetricKeys, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.enrollments[key(rid)]; !ok {
		return deprovision.SymmetricKeys{}, notFound("enrollment " + rid)
	}
	return d.enKeys[key(rid)], nil
}

// IndividualEnrollments implements deprovision.Enrollments.
func (d *DPS) IndividualEnrollments(_ context.Context) iter.Seq2[*deprovision.Enrollment, error] {
	d.mu.Lock()
	var es []deprovision.Enrollment
	for _, e := range d.enrollments {
		es = append(es, e)
	}
	d.mu.Unlock()
	sort.Slice(es, func(i, j int) bool { return key(es[i].RegistrationID) < key(es[j].RegistrationID) })
	return func(yield func(*deprovision.Enrollment, error) bool) {
		for i := range es {
			if !yield(&es[i], nil) {
				return
			}
		}
	}
}

// GetRegistration implements deprovision.Registrations.
func (d *DPS) GetRegistration(_ context.Context, rid string) (*deprovision.Registration, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	r, ok := d.regs[key(rid)]
	if !ok {
		return nil, notFound("registration " + rid)
	}
	return &r, nil
}

// DeleteRegistration implements deprovision.Registrations.
func (d *DPS) DeleteRegistration(_ context.Context, rid, etag string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	cur, ok := d.regs[key(rid)]
	if !ok {
		return notFound("registration " + rid)
	}
	if etag != "" && !match(cur.ETag, etag) {
		return fmt.Errorf("registration %s: %w", rid, deprovision.ErrPreconditionFailed)
	}
	delete(d.regs, key(rid))
	delete(d.regGroup, key(rid))
	d.wrote("delete registration %s", rid)
	return nil
}

// GroupRegistrations implements deprovision.Registrations. The continuation token is the last
// registration id of the previous page, so deleting records while paging skips nothing.
func (d *DPS) GroupRegistrations(_ context.Context, groupID, continuation string, pageSize int) iter.Seq2[deprovision.RegistrationPage, error] {
	return func(yield func(deprovision.RegistrationPage, error) bool) {
		after := continuation
		for {
			d.mu.Lock()
			var ids []string
			for rid, g := range d.regGroup {
				if g == key(groupID) && rid > after {
					ids = append(ids, rid)
				}
			}
			sort.Strings(ids)
			page := deprovision.RegistrationPage{}
			for i, rid := range ids {
				if i == pageSize {
					page.Next = page.Items[len(page.Items)-1].RegistrationID
					break
				}
				page.Items = append(page.Items, d.regs[rid])
			}
			d.mu.Unlock()
			if page.Next != "" {
				page.Next = key(page.Next)
			}
			d.Pages.Add(1)
			if !yield(page, nil) || page.Next == "" {
				return
			}
			after = page.Next
		}
	}
}

// HubDevices is an in-memory set of IoT hubs' identity registries.
type HubDevices struct {
	mu      sync.Mutex
	seq     int
	devices map[string]map[string]deprovision.Device
	// Writes counts every successful mutation.
	Writes []string
	// BulkCalls counts bulk calls and their sizes.
	BulkCalls []int
	// RegistryOps counts the registry operations a hub would charge: every call, and the read
	// a PutDevice makes first when it is not given the device as read (deprovision.PutDeviceReads).
	RegistryOps int
	// Queries counts query calls (Identities), which the hub charges to its query budget.
	Queries int
}

// asRead is the Identity of a device this fake returned from GetDevice: like the hub adapter,
// PutDevice writes such a device back without reading it again.
type asRead struct{ hub, id, etag string }

// NewHubDevices returns hubs with the given host names and no devices.
func NewHubDevices(names ...string) *HubDevices {
	h := &HubDevices{devices: map[string]map[string]deprovision.Device{}}
	for _, n := range names {
		h.devices[strings.ToLower(n)] = map[string]deprovision.Device{}
	}
	return h
}

// AddDevice stores d (test setup).
func (h *HubDevices) AddDevice(d deprovision.Device) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seq++
	d.ETag = `"` + strconv.Itoa(h.seq) + `"`
	h.devices[strings.ToLower(d.Hub)][d.DeviceID] = d
}

// Device returns a copy of a stored device.
func (h *HubDevices) Device(hub, id string) (deprovision.Device, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	d, ok := h.devices[strings.ToLower(hub)][id]
	return d, ok
}

func (h *HubDevices) reg(hub string) (map[string]deprovision.Device, error) {
	r, ok := h.devices[strings.ToLower(hub)]
	if !ok {
		return nil, fmt.Errorf("hub %s is not configured", hub)
	}
	return r, nil
}

// GetDevice implements deprovision.Devices.
func (h *HubDevices) GetDevice(_ context.Context, hub, id string) (*deprovision.Device, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r, err := h.reg(hub)
	if err != nil {
		return nil, err
	}
	h.RegistryOps++
	d, ok := r[id]
	if !ok {
		return nil, notFound("device " + id)
	}
	d.Identity = asRead{strings.ToLower(hub), id, d.ETag}
	return &d, nil
}

// PutDevice implements deprovision.Devices.
func (h *HubDevices) PutDevice(_ context.Context, d *deprovision.Device, etag string) (*deprovision.Device, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r, err := h.reg(d.Hub)
	if err != nil {
		return nil, err
	}
	h.RegistryOps++
	if etag != "" && (etag == "*" || d.Identity != (asRead{strings.ToLower(d.Hub), d.DeviceID, etag})) {
		h.RegistryOps++ // the read the hub adapter makes to keep the identity's keys
	}
	cur, ok := r[d.DeviceID]
	switch {
	case !ok && etag != "":
		return nil, notFound("device " + d.DeviceID)
	case ok && etag == "":
		return nil, fmt.Errorf("device %s: %w", d.DeviceID, deprovision.ErrConflict)
	case ok && !match(cur.ETag, etag):
		return nil, fmt.Errorf("device %s: %w", d.DeviceID, deprovision.ErrPreconditionFailed)
	}
	h.seq++
	n := *d
	n.ETag = `"` + strconv.Itoa(h.seq) + `"`
	n.Identity = nil
	r[d.DeviceID] = n
	h.Writes = append(h.Writes, fmt.Sprintf("put %s/%s enabled=%v", d.Hub, d.DeviceID, n.Enabled))
	return &n, nil
}

// DeleteDevice implements deprovision.Devices.
func (h *HubDevices) DeleteDevice(_ context.Context, hub, id, etag string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	r, err := h.reg(hub)
	if err != nil {
		return err
	}
	h.RegistryOps++
	cur, ok := r[id]
	if !ok {
		return notFound("device " + id)
	}
	if etag != "" && !match(cur.ETag, etag) {
		return fmt.Errorf("device %s: %w", id, deprovision.ErrPreconditionFailed)
	}
	delete(r, id)
	h.Writes = append(h.Writes, fmt.Sprintf("delete %s/%s", hub, id))
	return nil
}

// Identities implements deprovision.Devices: the devices as the hub's query shows them,
// without keys.
func (h *HubDevices) Identities(_ context.Context, hub string, ids []string) ([]*deprovision.Device, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(ids) > 100 {
		return nil, fmt.Errorf("query of %d devices: at most 100", len(ids))
	}
	r, err := h.reg(hub)
	if err != nil {
		return nil, err
	}
	h.Queries++
	var out []*deprovision.Device
	for _, id := range ids {
		if d, ok := r[id]; ok {
			d.Keys = deprovision.SymmetricKeys{}
			d.Identity = asRead{strings.ToLower(hub), id, d.ETag}
			out = append(out, &d)
		}
	}
	return out, nil
}

// Bulk implements deprovision.Devices.
func (h *HubDevices) Bulk(_ context.Context, hub string, mode deprovision.BulkMode, items []deprovision.BulkItem) ([]deprovision.BulkItemResult, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(items) > 100 {
		return nil, fmt.Errorf("bulk of %d devices: at most 100", len(items))
	}
	r, err := h.reg(hub)
	if err != nil {
		return nil, err
	}
	h.BulkCalls = append(h.BulkCalls, len(items))
	h.RegistryOps += len(items)
	out := make([]deprovision.BulkItemResult, len(items))
	for i, it := range items {
		out[i].DeviceID = it.DeviceID
		d, ok := r[it.DeviceID]
		if !ok {
			out[i].Err = notFound("device " + it.DeviceID)
			continue
		}
		switch mode {
		case deprovision.BulkDelete:
			delete(r, it.DeviceID)
			h.Writes = append(h.Writes, fmt.Sprintf("delete %s/%s", hub, it.DeviceID))
		case deprovision.BulkDisable:
			// Like the hub adapter: the item must carry the identity as read, its etag current.
			switch {
			case it.Device == nil || it.Device.Identity != (asRead{strings.ToLower(hub), it.DeviceID, it.Device.ETag}):
				out[i].Err = fmt.Errorf("bulk disable of %s without the identity as read", it.DeviceID)
				continue
			case it.Device.ETag != d.ETag:
				out[i].Err = fmt.Errorf("device %s: %w", it.DeviceID, deprovision.ErrPreconditionFailed)
				continue
			case d.AuthType == "sas" && it.Device.Keys != d.Keys:
				out[i].Err = fmt.Errorf("bulk disable of SAS device %s without its keys would give it new ones", it.DeviceID)
				continue
			}
			if d.Enabled {
				d.Enabled, d.StatusReason = false, it.StatusReason
				h.seq++
				d.ETag = `"` + strconv.Itoa(h.seq) + `"`
				r[it.DeviceID] = d
				h.Writes = append(h.Writes, fmt.Sprintf("put %s/%s enabled=false", hub, it.DeviceID))
			}
		}
	}
	return out, nil
}

// Snapshot renders the DPS state (without ETags and secrets) for comparing two runs.
func (d *DPS) Snapshot() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var lines []string
	for _, e := range d.enrollments {
		var tps []string
		for _, c := range e.ClientCerts {
			tps = append(tps, c.SHA1Thumbprint)
		}
		lines = append(lines, fmt.Sprintf("enrollment %s %s enabled=%v hubs=%v alloc=%s certs=%v", key(e.RegistrationID), e.Attestation, e.Enabled, e.IoTHubs, e.AllocationPolicy, tps))
	}
	for _, g := range d.groups {
		lines = append(lines, fmt.Sprintf("group %s enabled=%v", key(g.ID), g.Enabled))
	}
	for k, r := range d.regs {
		lines = append(lines, fmt.Sprintf("registration %s hub=%s device=%s group=%s", k, r.AssignedHub, r.DeviceID, d.regGroup[k]))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// Snapshot renders every hub's devices (without ETags) for comparing two runs.
func (h *HubDevices) Snapshot() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var lines []string
	for hub, r := range h.devices {
		for id, d := range r {
			lines = append(lines, fmt.Sprintf("%s/%s enabled=%v reason=%q", hub, id, d.Enabled, d.StatusReason))
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}
