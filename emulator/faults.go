package emulator

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Fault makes matching operations fail. Operation names are listed in docs/emulator.md
// (for example "dps.enrollments.put", "hub.devices.bulk"); Op may also be "*" (every
// operation) or a prefix ending in "*" ("hub.*").
//
// A fault fires on every matching call, or, with Count > 0, on the next Count matching calls,
// and, with Probability in (0,1], only on that fraction of them.
type Fault struct {
	Op  string `json:"op"`
	Hub string `json:"hub,omitempty"` // restrict to one hub (name); empty = any
	// Action is "status" (answer with Status), "drop" (close the connection without an
	// answer) or "slow" (wait Delay, then serve normally). Default "status".
	Action      string   `json:"action,omitempty"`
	Status      int      `json:"status,omitempty"`     // 429, 500 or 503 (any 4xx/5xx is allowed)
	RetryAfter  int      `json:"retryAfter,omitempty"` // seconds, sent with 429 and 503; default 1
	Delay       Duration `json:"delay,omitempty"`      // for "slow"
	Probability float64  `json:"probability,omitempty"`
	Count       int      `json:"count,omitempty"`
}

// Duration is a time.Duration that reads and writes JSON as a Go duration string ("1.5s")
// or a number of milliseconds.
type Duration time.Duration

// MarshalJSON writes the duration as a string such as "1.5s".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads "1.5s" or a number of milliseconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("duration %q: %w", s, err)
		}
		*d = Duration(v)
		return nil
	}
	var ms float64
	if err := json.Unmarshal(b, &ms); err != nil {
		return fmt.Errorf("duration must be a string like \"2s\" or milliseconds: %w", err)
	}
	*d = Duration(time.Duration(ms * float64(time.Millisecond)))
	return nil
}

func (f *Fault) validate() error {
	if f.Op == "" {
		return fmt.Errorf("fault needs op (an operation name, a prefix ending in *, or *)")
	}
	switch f.Action {
	case "", "status":
		f.Action = "status"
		if f.Status < 400 || f.Status > 599 {
			return fmt.Errorf("fault action status needs status 400-599, got %d", f.Status)
		}
	case "drop":
	case "slow":
		if f.Delay <= 0 {
			return fmt.Errorf("fault action slow needs a positive delay")
		}
	default:
		return fmt.Errorf("fault action %q is not status, drop or slow", f.Action)
	}
	if f.Probability < 0 || f.Probability > 1 {
		return fmt.Errorf("fault probability %v is not within [0,1]", f.Probability)
	}
	if f.Count < 0 {
		return fmt.Errorf("fault count %d is negative", f.Count)
	}
	return nil
}

func (f *Fault) matches(op, hub string) bool {
	if f.Hub != "" && !strings.EqualFold(f.Hub, hub) {
		return false
	}
	switch {
	case f.Op == "*":
		return true
	case strings.HasSuffix(f.Op, "*"):
		return strings.HasPrefix(op, strings.TrimSuffix(f.Op, "*"))
	default:
		return f.Op == op
	}
}

type faultEntry struct {
	Fault
	remaining int // for Count faults
}

type faultSet struct {
	mu     sync.Mutex
	faults []*faultEntry
}

func newFaultSet() *faultSet { return &faultSet{} }

// AddFault installs a fault; it applies to calls that start after it returns.
func (e *Emulator) AddFault(f Fault) error {
	if err := f.validate(); err != nil {
		return err
	}
	e.faults.mu.Lock()
	defer e.faults.mu.Unlock()
	e.faults.faults = append(e.faults.faults, &faultEntry{Fault: f, remaining: f.Count})
	return nil
}

// ClearFaults removes every fault.
func (e *Emulator) ClearFaults() {
	e.faults.mu.Lock()
	e.faults.faults = nil
	e.faults.mu.Unlock()
}

// Faults returns the installed faults; Count holds the calls left for count-limited ones.
func (e *Emulator) Faults() []Fault {
	e.faults.mu.Lock()
	defer e.faults.mu.Unlock()
	out := make([]Fault, 0, len(e.faults.faults))
	for _, f := range e.faults.faults {
		c := f.Fault
		if c.Count > 0 {
			c.Count = f.remaining
		}
		out = append(out, c)
	}
	return out
}

func (s *faultSet) pick(op, hub string) *Fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, f := range s.faults {
		if !f.matches(op, hub) {
			continue
		}
		if f.Probability > 0 && rand.Float64() >= f.Probability {
			continue
		}
		if f.Count > 0 {
			f.remaining--
			if f.remaining <= 0 {
				s.faults = append(s.faults[:i:i], s.faults[i+1:]...)
			}
		}
		c := f.Fault
		return &c
	}
	return nil
}

// injectFault applies a matching fault to the call. It returns true when the call has been
// answered (or dropped) and must not be served.
func (e *Emulator) injectFault(w http.ResponseWriter, r *http.Request, op, hubName string, hubStyle bool) bool {
	f := e.faults.pick(op, hubName)
	if f == nil {
		return false
	}
	e.stats.fault(op)
	switch f.Action {
	case "drop":
		// The call never returns to ServeHTTP, so it is counted here. ErrAbortHandler makes
		// net/http close the connection without a response.
		e.stats.record(hubName, op, 0)
		panic(http.ErrAbortHandler)
	case "slow":
		select {
		case <-time.After(time.Duration(f.Delay)):
		case <-r.Context().Done():
			// The call ended before the delay: close the connection without an answer.
			// Returning would let net/http answer an empty 200, which the service never does.
			e.stats.record(hubName, op, 0)
			panic(http.ErrAbortHandler)
		}
		return false
	}
	if f.Status == http.StatusTooManyRequests || f.Status == http.StatusServiceUnavailable {
		ra := f.RetryAfter
		if ra <= 0 {
			ra = 1
		}
		w.Header().Set("Retry-After", strconv.Itoa(ra))
	}
	msg := fmt.Sprintf("injected fault for %s", op)
	if hubStyle {
		name := map[int]string{429: "ThrottlingException", 500: "ServerError", 503: "ServiceUnavailable"}[f.Status]
		if name == "" {
			name = "GenericError"
		}
		hubError(w, f.Status, name, "%s", msg)
	} else {
		dpsError(w, f.Status, 0, "%s", msg)
	}
	return true
}
