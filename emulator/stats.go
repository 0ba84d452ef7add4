package emulator

import (
	"strconv"
	"strings"
	"sync"
)

// Stats counts calls per hub, for DPS and per operation since start or the last reset.
type Stats struct {
	Hubs       map[string]HubStats `json:"hubs"`
	DPS        DPSStats            `json:"dps"`
	Operations map[string]OpStats  `json:"operations"`
}

// DPSStats counts the DPS instance's calls, service API and device API together.
type DPSStats struct {
	Calls         int64 `json:"calls"`         // every call routed to DPS
	Throttled     int64 `json:"throttled"`     // calls answered 429 (throttle or injected fault)
	Operations    int64 `json:"operations"`    // service operations charged (bulk items count one each)
	Registrations int64 `json:"registrations"` // device registrations charged
}

// HubStats counts one hub's calls.
type HubStats struct {
	Calls       int64 `json:"calls"`       // every call routed to the hub
	Throttled   int64 `json:"throttled"`   // calls answered 429 (throttle or injected fault)
	RegistryOps int64 `json:"registryOps"` // identity-registry operations charged (bulk items count one each)
}

// OpStats counts one operation's calls.
type OpStats struct {
	Calls     int64            `json:"calls"`
	Throttled int64            `json:"throttled"`
	Faults    int64            `json:"faults"`   // injected faults fired
	Statuses  map[string]int64 `json:"statuses"` // by HTTP status; "dropped" for dropped connections
}

type statsSet struct {
	mu  sync.Mutex
	hub map[string]*HubStats
	dps DPSStats
	op  map[string]*OpStats
}

func newStatsSet() *statsSet {
	return &statsSet{hub: map[string]*HubStats{}, op: map[string]*OpStats{}}
}

func (s *statsSet) opEntry(op string) *OpStats {
	o := s.op[op]
	if o == nil {
		o = &OpStats{Statuses: map[string]int64{}}
		s.op[op] = o
	}
	return o
}

func (s *statsSet) record(hub, op string, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.opEntry(op)
	o.Calls++
	key := strconv.Itoa(status)
	if status == 0 {
		key = "dropped"
	}
	o.Statuses[key]++
	if status == 429 {
		o.Throttled++
	}
	if strings.HasPrefix(op, "dps.") {
		s.dps.Calls++
		if status == 429 {
			s.dps.Throttled++
		}
	}
	if hub != "" {
		h := s.hub[hub]
		if h == nil {
			h = &HubStats{}
			s.hub[hub] = h
		}
		h.Calls++
		if status == 429 {
			h.Throttled++
		}
	}
}

func (s *statsSet) fault(op string) {
	s.mu.Lock()
	s.opEntry(op).Faults++
	s.mu.Unlock()
}

func (s *statsSet) charge(hub string, n int) {
	s.mu.Lock()
	h := s.hub[hub]
	if h == nil {
		h = &HubStats{}
		s.hub[hub] = h
	}
	h.RegistryOps += int64(n)
	s.mu.Unlock()
}

func (s *statsSet) chargeDPS(ops, registrations int) {
	s.mu.Lock()
	s.dps.Operations += int64(ops)
	s.dps.Registrations += int64(registrations)
	s.mu.Unlock()
}

// Stats returns a copy of the counters.
func (e *Emulator) Stats() Stats {
	s := e.stats
	s.mu.Lock()
	defer s.mu.Unlock()
	out := Stats{Hubs: map[string]HubStats{}, DPS: s.dps, Operations: map[string]OpStats{}}
	for k, v := range s.hub {
		out.Hubs[k] = *v
	}
	for k, v := range s.op {
		c := *v
		c.Statuses = make(map[string]int64, len(v.Statuses))
		for sk, sv := range v.Statuses {
			c.Statuses[sk] = sv
		}
		out.Operations[k] = c
	}
	return out
}

// ResetStats zeroes the counters.
func (e *Emulator) ResetStats() {
	e.stats.mu.Lock()
	e.stats.hub = map[string]*HubStats{}
	e.stats.dps = DPSStats{}
	e.stats.op = map[string]*OpStats{}
	e.stats.mu.Unlock()
}
