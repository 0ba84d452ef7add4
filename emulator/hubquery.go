package emulator

import (
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"unicode"
)

func sortStrings(s []string) { sort.Strings(s) }

// twinQuery is the part of the IoT Hub query language (iot-hub-devguide-query-language.md)
// the emulator serves, which is every query the official SDKs' samples and e2e tests send to
// POST /devices/query (Azure/azure-iot-sdk-csharp e2e and iothub/service/samples; the Node
// service samples in Azure/azure-iot-sdk-node before aac592d9):
//
//	SELECT * FROM devices [WHERE cond]
//	SELECT path [AS alias][, ...] FROM devices [WHERE cond]      ("SELECT deviceId FROM devices")
//	SELECT COUNT() [AS alias] FROM devices [WHERE cond]          ("select count() AS numberOfDevices from devices")
//
// where cond combines, with AND, OR, NOT and parentheses, comparisons path op literal (op one
// of = != <> < <= > >=, literal a quoted string, a number, true, false or null), the list
// operators path IN [literal, ...] and path NIN [...], and the functions IS_DEFINED(path),
// STARTSWITH(path, 'x') and ENDSWITH(path, 'x'). A path names a
// twin field: deviceId, status, tags.a.b, properties.desired.x, properties.reported.x,
// capabilities.iotEdge. A comparison with a field the twin does not have is false.
// Anything else (GROUP BY, devices.modules, other functions) is refused with 400 naming it.
type twinQuery struct {
	star   bool
	count  string // COUNT() alias, "" when the projection is not an aggregate
	fields []projection
	where  qexpr // nil: every device
}

type projection struct {
	path  []string
	alias string
}

// qexpr is a condition evaluated on a device.
type qexpr interface {
	eval(d *device, t *lazyTwin) bool
}

// lazyTwin builds a device's twin map once, and only when a condition needs more than a
// plain field, which matters when a filter runs over 100,000 devices.
type lazyTwin struct {
	d *device
	m map[string]any
}

func (l *lazyTwin) get(path []string) (any, bool) {
	if v, ok := l.d.plainField(path); ok {
		return v, v != nil
	}
	if l.m == nil {
		l.m = l.d.twin()
	}
	return lookup(l.m, path)
}

type andExpr struct{ a, b qexpr }
type orExpr struct{ a, b qexpr }
type notExpr struct{ a qexpr }
type cmpExpr struct {
	path []string
	op   string
	val  any
}
type funcExpr struct {
	name string
	path []string
	arg  string
}

func (e andExpr) eval(d *device, t *lazyTwin) bool { return e.a.eval(d, t) && e.b.eval(d, t) }
func (e orExpr) eval(d *device, t *lazyTwin) bool  { return e.a.eval(d, t) || e.b.eval(d, t) }
func (e notExpr) eval(d *device, t *lazyTwin) bool { return !e.a.eval(d, t) }

func (e cmpExpr) eval(_ *device, t *lazyTwin) bool {
	v, ok := t.get(e.path)
	if !ok {
		return false
	}
	switch e.op {
	case "=":
		return equalValues(v, e.val)
	case "!=", "<>":
		return !equalValues(v, e.val)
	}
	c, ok := compareValues(v, e.val)
	if !ok {
		return false
	}
	switch e.op {
	case "<":
		return c < 0
	case "<=":
		return c <= 0
	case ">":
		return c > 0
	default: // ">="
		return c >= 0
	}
}

// inExpr is path IN [...] (NIN with neg): the query language's list operators
// (iot-hub-devguide-query-language.md); the engine reads a batch of devices with
// "deviceId IN [...]". A field the twin does not have matches neither.
type inExpr struct {
	path []string
	neg  bool
	vals []any
}

func (e inExpr) eval(_ *device, t *lazyTwin) bool {
	v, ok := t.get(e.path)
	if !ok {
		return false
	}
	for _, x := range e.vals {
		if equalValues(v, x) {
			return !e.neg
		}
	}
	return e.neg
}

// deviceIDs returns the ids a query selects by deviceId IN [...] (alone, or joined by AND),
// so that the hub looks them up instead of scanning every device; nil when it has no such list.
func deviceIDs(e qexpr) []string {
	switch x := e.(type) {
	case inExpr:
		if x.neg || len(x.path) != 1 || x.path[0] != "deviceId" {
			return nil
		}
		var out []string
		for _, v := range x.vals {
			if s, ok := v.(string); ok {
				out = append(out, s)
			}
		}
		return out
	case andExpr:
		if ids := deviceIDs(x.a); ids != nil {
			return ids
		}
		return deviceIDs(x.b)
	}
	return nil
}

func (e funcExpr) eval(_ *device, t *lazyTwin) bool {
	v, ok := t.get(e.path)
	switch e.name {
	case "IS_DEFINED":
		return ok
	case "STARTSWITH":
		s, isStr := v.(string)
		return ok && isStr && strings.HasPrefix(s, e.arg)
	default: // ENDSWITH
		s, isStr := v.(string)
		return ok && isStr && strings.HasSuffix(s, e.arg)
	}
}

// lookup finds a path in a twin map; ok is false where the twin has no such field.
func lookup(t map[string]any, path []string) (any, bool) {
	var cur any = t
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		cur, ok = m[p]
		if !ok {
			return nil, false
		}
	}
	if s, ok := cur.(*string); ok {
		if s == nil {
			return nil, true
		}
		return *s, true
	}
	return cur, true
}

func normalizeNumber(v any) any {
	switch x := v.(type) {
	case int:
		return float64(x)
	case int64:
		return float64(x)
	}
	return v
}

func equalValues(a, b any) bool {
	a, b = normalizeNumber(a), normalizeNumber(b)
	if (a == nil) != (b == nil) {
		return false
	}
	return fmt.Sprint(a) == fmt.Sprint(b) && fmt.Sprintf("%T", a) == fmt.Sprintf("%T", b)
}

// compareValues orders two numbers or two strings.
func compareValues(a, b any) (int, bool) {
	a, b = normalizeNumber(a), normalizeNumber(b)
	switch x := a.(type) {
	case float64:
		y, ok := b.(float64)
		if !ok {
			return 0, false
		}
		switch {
		case x < y:
			return -1, true
		case x > y:
			return 1, true
		}
		return 0, true
	case string:
		y, ok := b.(string)
		if !ok {
			return 0, false
		}
		return strings.Compare(x, y), true
	}
	return 0, false
}

// plainField answers the common one-segment conditions without building the twin.
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
		return d.connectionState(), true
	case "statusReason":
		if d.statusReason == "" {
			return nil, true
		}
		return d.statusReason, true
	}
	return nil, false
}

// --- parsing ---

type qtoken struct {
	kind string // "id", "str", "num", "sym"
	text string
}

func tokenize(q string) ([]qtoken, error) {
	var out []qtoken
	rs := []rune(q)
	for i := 0; i < len(rs); {
		c := rs[i]
		switch {
		case unicode.IsSpace(c):
			i++
		case c == '\'' || c == '"':
			j := i + 1
			for j < len(rs) && rs[j] != c {
				j++
			}
			if j >= len(rs) {
				return nil, fmt.Errorf("unterminated string literal at %d", i)
			}
			out = append(out, qtoken{"str", string(rs[i+1 : j])})
			i = j + 1
		case unicode.IsDigit(c) || c == '-' && i+1 < len(rs) && unicode.IsDigit(rs[i+1]):
			j := i + 1
			for j < len(rs) && (unicode.IsDigit(rs[j]) || rs[j] == '.' || rs[j] == 'e' || rs[j] == 'E') {
				j++
			}
			out = append(out, qtoken{"num", string(rs[i:j])})
			i = j
		case unicode.IsLetter(c) || c == '_' || c == '$':
			j := i + 1
			for j < len(rs) && (unicode.IsLetter(rs[j]) || unicode.IsDigit(rs[j]) || rs[j] == '_' || rs[j] == '$' || rs[j] == '.') {
				j++
			}
			out = append(out, qtoken{"id", string(rs[i:j])})
			i = j
		default:
			two := ""
			if i+1 < len(rs) {
				two = string(rs[i : i+2])
			}
			switch two {
			case "!=", "<>", "<=", ">=":
				out = append(out, qtoken{"sym", two})
				i += 2
				continue
			}
			if strings.ContainsRune("()*,=<>[]", c) {
				out = append(out, qtoken{"sym", string(c)})
				i++
				continue
			}
			return nil, fmt.Errorf("unexpected %q at %d", c, i)
		}
	}
	return out, nil
}

type qparser struct {
	toks []qtoken
	i    int
	q    string
}

func (p *qparser) peek() qtoken {
	if p.i < len(p.toks) {
		return p.toks[p.i]
	}
	return qtoken{}
}

func (p *qparser) keyword(k string) bool {
	t := p.peek()
	if t.kind == "id" && strings.EqualFold(t.text, k) {
		p.i++
		return true
	}
	return false
}

func (p *qparser) sym(s string) bool {
	if t := p.peek(); t.kind == "sym" && t.text == s {
		p.i++
		return true
	}
	return false
}

func (p *qparser) unsupported(what string) error {
	return fmt.Errorf("query %q: %s is not supported by the emulator (it serves SELECT *, field lists and COUNT() FROM devices, with WHERE conditions of comparisons, IN and NIN lists, IS_DEFINED, STARTSWITH and ENDSWITH joined by AND, OR and NOT)", p.q, what)
}

func parseTwinQuery(q string) (*twinQuery, error) {
	toks, err := tokenize(q)
	if err != nil {
		return nil, fmt.Errorf("query %q: %w", q, err)
	}
	p := &qparser{toks: toks, q: q}
	if !p.keyword("SELECT") {
		return nil, fmt.Errorf("query %q is not a SELECT", q)
	}
	tq := &twinQuery{}
	if p.sym("*") {
		tq.star = true
	} else {
		for {
			t := p.peek()
			if t.kind != "id" {
				return nil, p.unsupported(fmt.Sprintf("the projection %q", t.text))
			}
			p.i++
			if strings.EqualFold(t.text, "COUNT") {
				if !p.sym("(") || !p.sym(")") {
					return nil, p.unsupported("COUNT with an argument")
				}
				tq.count = "$1"
				if p.keyword("AS") {
					a := p.peek()
					if a.kind != "id" {
						return nil, p.unsupported("an alias that is not a name")
					}
					p.i++
					tq.count = a.text
				}
			} else {
				if p.peek().text == "(" {
					return nil, p.unsupported("the function " + t.text)
				}
				pr := projection{path: strings.Split(t.text, ".")}
				pr.alias = pr.path[len(pr.path)-1]
				if p.keyword("AS") {
					a := p.peek()
					if a.kind != "id" {
						return nil, p.unsupported("an alias that is not a name")
					}
					p.i++
					pr.alias = a.text
				}
				tq.fields = append(tq.fields, pr)
			}
			if !p.sym(",") {
				break
			}
		}
		if tq.count != "" && len(tq.fields) > 0 {
			return nil, p.unsupported("COUNT() alongside fields")
		}
	}
	if !p.keyword("FROM") {
		return nil, fmt.Errorf("query %q has no FROM devices", q)
	}
	if t := p.peek(); t.kind != "id" || !strings.EqualFold(t.text, "devices") {
		return nil, p.unsupported("FROM " + t.text)
	}
	p.i++
	if p.keyword("WHERE") {
		if tq.where, err = p.or(); err != nil {
			return nil, err
		}
	}
	if p.i < len(p.toks) {
		return nil, p.unsupported(fmt.Sprintf("%q", p.toks[p.i].text))
	}
	return tq, nil
}

func (p *qparser) or() (qexpr, error) {
	a, err := p.and()
	if err != nil {
		return nil, err
	}
	for p.keyword("OR") {
		b, err := p.and()
		if err != nil {
			return nil, err
		}
		a = orExpr{a, b}
	}
	return a, nil
}

func (p *qparser) and() (qexpr, error) {
	a, err := p.not()
	if err != nil {
		return nil, err
	}
	for p.keyword("AND") {
		b, err := p.not()
		if err != nil {
			return nil, err
		}
		a = andExpr{a, b}
	}
	return a, nil
}

func (p *qparser) not() (qexpr, error) {
	if p.keyword("NOT") {
		a, err := p.not()
		if err != nil {
			return nil, err
		}
		return notExpr{a}, nil
	}
	return p.primary()
}

func (p *qparser) primary() (qexpr, error) {
	if p.sym("(") {
		e, err := p.or()
		if err != nil {
			return nil, err
		}
		if !p.sym(")") {
			return nil, fmt.Errorf("query %q: a parenthesis is not closed", p.q)
		}
		return e, nil
	}
	t := p.peek()
	if t.kind != "id" {
		return nil, p.unsupported(fmt.Sprintf("the condition starting %q", t.text))
	}
	p.i++
	if p.sym("(") {
		name := strings.ToUpper(t.text)
		switch name {
		case "IS_DEFINED", "STARTSWITH", "ENDSWITH":
		default:
			return nil, p.unsupported("the function " + t.text)
		}
		a := p.peek()
		if a.kind != "id" {
			return nil, p.unsupported(name + " of something that is not a field")
		}
		p.i++
		f := funcExpr{name: name, path: strings.Split(a.text, ".")}
		if name != "IS_DEFINED" {
			if !p.sym(",") || p.peek().kind != "str" {
				return nil, p.unsupported(name + " without a string")
			}
			f.arg = p.peek().text
			p.i++
		}
		if !p.sym(")") {
			return nil, fmt.Errorf("query %q: %s( is not closed", p.q, name)
		}
		return f, nil
	}
	if p.keyword("IN") || p.keyword("NIN") {
		in := inExpr{path: strings.Split(t.text, "."), neg: strings.EqualFold(p.toks[p.i-1].text, "NIN")}
		if !p.sym("[") {
			return nil, p.unsupported(fmt.Sprintf("%s without a [list]", p.toks[p.i-1].text))
		}
		for !p.sym("]") {
			v, err := p.literal()
			if err != nil {
				return nil, err
			}
			in.vals = append(in.vals, v)
			if !p.sym(",") && p.peek().text != "]" {
				return nil, fmt.Errorf("query %q: the list of %s is not literals separated by commas", p.q, t.text)
			}
		}
		return in, nil
	}
	op := p.peek()
	if op.kind != "sym" || !strings.Contains(" = != <> < <= > >= ", " "+op.text+" ") {
		return nil, p.unsupported(fmt.Sprintf("the operator %q", op.text))
	}
	p.i++
	c := cmpExpr{path: strings.Split(t.text, "."), op: op.text}
	v, err := p.literal()
	if err != nil {
		return nil, err
	}
	c.val = v
	return c, nil
}

// literal reads a quoted string, a number, true, false or null.
func (p *qparser) literal() (any, error) {
	lit := p.peek()
	p.i++
	switch {
	case lit.kind == "str":
		return lit.text, nil
	case lit.kind == "num":
		f, err := strconv.ParseFloat(lit.text, 64)
		if err != nil {
			return nil, fmt.Errorf("query %q: %q is not a number", p.q, lit.text)
		}
		return f, nil
	case lit.kind == "id" && strings.EqualFold(lit.text, "true"):
		return true, nil
	case lit.kind == "id" && strings.EqualFold(lit.text, "false"):
		return false, nil
	case lit.kind == "id" && strings.EqualFold(lit.text, "null"):
		return nil, nil
	}
	return nil, p.unsupported(fmt.Sprintf("comparing with %q (only literals)", lit.text))
}

func (q *twinQuery) match(d *device) bool {
	return q.where == nil || q.where.eval(d, &lazyTwin{d: d})
}

// query serves POST /devices/query. Pages are chained by x-ms-continuation as for DPS; the
// item type is "Twin" for SELECT * and "Raw" for projections and aggregates: the hub sends
// "Twin" (DevicesClient_Query_GetTwins.json), and the C# SDK parses the header with
// Enum.Parse on its member names Twin and Raw (iothub/service/src/Query/QueryResult.cs of
// Azure/azure-iot-sdk-csharp), so "Raw" is its spelling of the other.
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
	if tq.count != "" {
		n := 0
		h.mu.RLock()
		for _, d := range h.devices {
			if tq.match(d) {
				n++
			}
		}
		h.mu.RUnlock()
		writePage(w, "Raw", "", []map[string]any{{tq.count: n}})
		return
	}
	keys, next, err := h.pager.page(r.Header.Get("x-ms-continuation"), size, func() []string {
		h.mu.RLock()
		defer h.mu.RUnlock()
		if ids := deviceIDs(tq.where); ids != nil {
			out := make([]string, 0, len(ids))
			seen := make(map[string]bool, len(ids))
			for _, id := range ids {
				if d := h.devices[id]; d != nil && !seen[id] && tq.match(d) {
					seen[id] = true
					out = append(out, id)
				}
			}
			return out
		}
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
	twins := []twinJSON{}
	items := []map[string]any{}
	h.mu.RLock()
	for _, k := range keys {
		d := h.devices[k]
		if d == nil {
			continue
		}
		if tq.star {
			twins = append(twins, d.twinJSON())
			continue
		}
		t := d.twin()
		p := make(map[string]any, len(tq.fields))
		for _, f := range tq.fields {
			if v, ok := lookup(t, f.path); ok {
				p[f.alias] = v
			}
		}
		items = append(items, p)
	}
	h.mu.RUnlock()
	if tq.star {
		writePage(w, "Twin", next, twins)
		return
	}
	writePage(w, "Raw", next, items)
}
