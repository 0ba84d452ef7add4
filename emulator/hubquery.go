package emulator

import (
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

func sortStrings(s []string) { sort.Strings(s) }

// twinQuery is the subset of the IoT Hub query language the emulator serves:
//
//	SELECT * FROM devices [WHERE cond [AND cond]...]
//	SELECT field[, field]... FROM devices [WHERE ...]   (raw projections of top-level fields)
//
// where cond is path (= | != | <>) literal, path being a twin field such as deviceId, status,
// authenticationType, capabilities.iotEdge, tags.a.b or properties.desired.x, and literal a
// quoted string, a number, true, false or null.
type twinQuery struct {
	fields []string // nil for *
	conds  []cond
}

type cond struct {
	path []string
	neg  bool
	val  any
}

var (
	selectRe = regexp.MustCompile(`(?is)^\s*select\s+(.+?)\s+from\s+devices\s*(?:where\s+(.+?))?\s*$`)
	condRe   = regexp.MustCompile(`(?is)^\s*([A-Za-z$][\w$.]*)\s*(=|!=|<>)\s*('(?:[^']*)'|"(?:[^"]*)"|-?[0-9.]+|true|false|null)\s*$`)
	andRe    = regexp.MustCompile(`(?i)\s+and\s+`)
)

func parseTwinQuery(q string) (*twinQuery, error) {
	m := selectRe.FindStringSubmatch(q)
	if m == nil {
		return nil, fmt.Errorf("query %q is not SELECT ... FROM devices [WHERE ...] (the emulator serves only that form)", q)
	}
	tq := &twinQuery{}
	if strings.TrimSpace(m[1]) != "*" {
		for _, f := range strings.Split(m[1], ",") {
			f = strings.TrimSpace(f)
			if f == "" || strings.ContainsAny(f, "() ") {
				return nil, fmt.Errorf("projection %q is not supported by the emulator (use * or plain field names)", m[1])
			}
			tq.fields = append(tq.fields, f)
		}
	}
	if m[2] != "" {
		for _, c := range andRe.Split(m[2], -1) {
			cm := condRe.FindStringSubmatch(c)
			if cm == nil {
				return nil, fmt.Errorf("condition %q is not supported by the emulator (use path = literal joined by AND)", c)
			}
			cd := cond{path: strings.Split(cm[1], "."), neg: cm[2] != "="}
			lit := cm[3]
			switch {
			case strings.HasPrefix(lit, "'") || strings.HasPrefix(lit, `"`):
				cd.val = lit[1 : len(lit)-1]
			case lit == "true" || lit == "false":
				cd.val = lit == "true"
			case lit == "null":
				cd.val = nil
			default:
				f, err := strconv.ParseFloat(lit, 64)
				if err != nil {
					return nil, fmt.Errorf("literal %q is not a number", lit)
				}
				cd.val = f
			}
			tq.conds = append(tq.conds, cd)
		}
	}
	return tq, nil
}

// lookup finds a path in a twin map.
func lookup(t map[string]any, path []string) any {
	var cur any = t
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[p]
	}
	if s, ok := cur.(*string); ok {
		if s == nil {
			return nil
		}
		return *s
	}
	return cur
}

func equalValues(a, b any) bool {
	switch x := a.(type) {
	case int:
		a = float64(x)
	case int64:
		a = float64(x)
	}
	return fmt.Sprint(a) == fmt.Sprint(b) && (a == nil) == (b == nil)
}

func (q *twinQuery) match(d *device) bool {
	var t map[string]any // built only when a condition needs more than a plain field
	for _, c := range q.conds {
		v, ok := d.plainField(c.path)
		if !ok {
			if t == nil {
				t = d.twin()
			}
			v = lookup(t, c.path)
		}
		if equalValues(v, c.val) == c.neg {
			return false
		}
	}
	return true
}

// plainField answers the common one-segment conditions without building the twin, which
// matters when a filter runs over 100,000 devices.
func (d *device) plainField(path []string) (any, bool) {
	if len(path) != 1 {
		return nil, false
	}
	switch path[0] {
	case "deviceId":
		return d.id, true
	case "status":
		return d.status, true
	case "authenticationType":
		return d.authType, true
	case "connectionState":
		return "Disconnected", true
	case "statusReason":
		if d.statusReason == "" {
			return nil, true
		}
		return d.statusReason, true
	}
	return nil, false
}

func (h *hub) query(w http.ResponseWriter, r *http.Request) {
	var spec querySpec
	if err := readJSON(r, &spec); err != nil {
		hubError(w, http.StatusBadRequest, "ArgumentInvalid", "%v", err)
		return
	}
	tq, err := parseTwinQuery(spec.Query)
	if err != nil {
		hubError(w, http.StatusBadRequest, "ArgumentInvalid", "%v", err)
		return
	}
	size, err := pageSize(r)
	if err != nil {
		hubError(w, http.StatusBadRequest, "ArgumentInvalid", "%v", err)
		return
	}
	keys, next, err := h.pager.page(r.Header.Get("x-ms-continuation"), size, func() []string {
		h.mu.RLock()
		defer h.mu.RUnlock()
		out := make([]string, 0, len(h.devices))
		for k, d := range h.devices {
			if tq.match(d) {
				out = append(out, k)
			}
		}
		return out
	})
	if err != nil {
		hubError(w, http.StatusBadRequest, "ArgumentInvalid", "%v", err)
		return
	}
	var twins []twinJSON
	var items []map[string]any
	h.mu.RLock()
	for _, k := range keys {
		d := h.devices[k]
		if d == nil {
			continue
		}
		if tq.fields == nil {
			twins = append(twins, d.twinJSON())
			continue
		}
		t := d.twin()
		p := make(map[string]any, len(tq.fields))
		for _, f := range tq.fields {
			path := strings.Split(f, ".")
			p[path[len(path)-1]] = lookup(t, path)
		}
		items = append(items, p)
	}
	h.mu.RUnlock()
	if tq.fields == nil {
		if twins == nil {
			twins = []twinJSON{}
		}
		writePage(w, "twin", size, next, twins)
		return
	}
	if items == nil {
		items = []map[string]any{}
	}
	writePage(w, "raw", size, next, items)
}
