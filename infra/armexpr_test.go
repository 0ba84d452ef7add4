package infra

import (
	"crypto/sha256"
	"encoding/base32"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"unicode"
)

// This file evaluates the ARM template expressions the templates use, so that the meaning
// tests compare concrete values (scopes, role ids, app settings) instead of expression text.
// It implements the functions the templates call, with ARM's semantics for them, and fails on
// any other function, so a template change that needs more is noticed rather than misread.
// Deployment-time values (subscription, resource group, identities' ids, endpoints) are
// fixed stand-ins, listed in deployment below.

// deployment is the stand-in for the place a template is deployed to.
type deployment struct {
	subscriptionID, resourceGroup, location string
}

var testDeployment = deployment{
	subscriptionID: "11111111-2222-3333-4444-555555555555",
	resourceGroup:  "rg-deprov",
	location:       "westeurope",
}

// The stand-in ids of the user-assigned identity that reference() returns.
const (
	stubClientID    = "c1c1c1c1-0000-4000-8000-000000000001"
	stubPrincipalID = "d2d2d2d2-0000-4000-8000-000000000002"
	stubTenantID    = "d3d3d3d3-0000-4000-8000-000000000003"
)

func (d deployment) resourceGroupID() string {
	return "/subscriptions/" + d.subscriptionID + "/resourceGroups/" + d.resourceGroup
}

// template is a parsed template with the parameter values of one deployment.
type template struct {
	name       string
	doc        map[string]any
	params     map[string]any // given values; defaults are evaluated on demand
	dep        deployment
	varCache   map[string]any
	paramCache map[string]any
}

// loadTemplate reads a template and, when paramsFile is not "", the values it gives.
// overrides replace or add parameter values.
func loadTemplate(name, paramsFile string, overrides map[string]any) (*template, error) {
	var doc map[string]any
	if err := readJSON(name, &doc); err != nil {
		return nil, err
	}
	t := &template{name: name, doc: doc, params: map[string]any{}, dep: testDeployment,
		varCache: map[string]any{}, paramCache: map[string]any{}}
	if paramsFile != "" {
		var pf struct {
			Parameters map[string]struct {
				Value any `json:"value"`
			} `json:"parameters"`
		}
		if err := readJSON(paramsFile, &pf); err != nil {
			return nil, err
		}
		declared, _ := doc["parameters"].(map[string]any)
		for k, v := range pf.Parameters {
			if _, ok := declared[k]; !ok {
				return nil, fmt.Errorf("%s sets parameter %q, which %s does not declare", paramsFile, k, name)
			}
			t.params[k] = v.Value
		}
	}
	for k, v := range overrides {
		t.params[k] = v
	}
	return t, nil
}

func readJSON(name string, v any) error {
	b, err := os.ReadFile(name)
	if err != nil {
		return err
	}
	d := json.NewDecoder(strings.NewReader(string(b)))
	d.UseNumber()
	if err := d.Decode(v); err != nil {
		return fmt.Errorf("parsing %s: %w", name, err)
	}
	return nil
}

// evalCtx is what an expression can see besides the template: the copy index of the
// resource being expanded.
type evalCtx struct {
	copyIndex int
	inCopy    bool
}

// value evaluates v deeply: expression strings, and expressions used as object keys.
func (t *template) value(v any, c evalCtx) (any, error) {
	switch x := v.(type) {
	case string:
		if isExpression(x) {
			return t.expr(x[1:len(x)-1], c)
		}
		if strings.HasPrefix(x, "[[") {
			return x[1:], nil
		}
		return x, nil
	case json.Number:
		return x.Int64()
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			ev, err := t.value(e, c)
			if err != nil {
				return nil, err
			}
			out[i] = ev
		}
		return out, nil
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			kv, err := t.value(k, c)
			if err != nil {
				return nil, err
			}
			ks, ok := kv.(string)
			if !ok {
				return nil, fmt.Errorf("object key %q evaluates to %T, not a string", k, kv)
			}
			ev, err := t.value(e, c)
			if err != nil {
				return nil, err
			}
			out[ks] = ev
		}
		return out, nil
	}
	return v, nil
}

func isExpression(s string) bool {
	return len(s) >= 2 && s[0] == '[' && s[len(s)-1] == ']' && !strings.HasPrefix(s, "[[")
}

func (t *template) parameter(name string) (any, error) {
	if v, ok := t.paramCache[name]; ok {
		return v, nil
	}
	decls, _ := t.doc["parameters"].(map[string]any)
	decl, ok := decls[name].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("parameters('%s'): %s declares no such parameter", name, t.name)
	}
	v, given := t.params[name]
	if !given {
		def, ok := decl["defaultValue"]
		if !ok {
			return nil, fmt.Errorf("parameter %q of %s has no value and no default", name, t.name)
		}
		var err error
		if v, err = t.value(def, evalCtx{}); err != nil {
			return nil, fmt.Errorf("default of parameter %q: %w", name, err)
		}
	} else {
		var err error
		if v, err = t.value(v, evalCtx{}); err != nil {
			return nil, err
		}
	}
	if allowed, ok := decl["allowedValues"].([]any); ok {
		found := false
		for _, a := range allowed {
			av, _ := t.value(a, evalCtx{})
			found = found || fmt.Sprint(av) == fmt.Sprint(v)
		}
		if !found {
			return nil, fmt.Errorf("parameter %q = %v is not among its allowedValues %v", name, v, allowed)
		}
	}
	t.paramCache[name] = v
	return v, nil
}

func (t *template) variable(name string) (any, error) {
	if v, ok := t.varCache[name]; ok {
		return v, nil
	}
	vars, _ := t.doc["variables"].(map[string]any)
	if name != "copy" {
		if loops, ok := vars["copy"].([]any); ok {
			for _, l := range loops {
				if loop, _ := l.(map[string]any); loop["name"] == name {
					v, err := t.variableLoop(loop)
					if err != nil {
						return nil, fmt.Errorf("variable %q: %w", name, err)
					}
					t.varCache[name] = v
					return v, nil
				}
			}
		}
	}
	raw, ok := vars[name]
	if !ok || name == "copy" {
		return nil, fmt.Errorf("variables('%s'): %s declares no such variable", name, t.name)
	}
	v, err := t.value(raw, evalCtx{})
	if err != nil {
		return nil, fmt.Errorf("variable %q: %w", name, err)
	}
	t.varCache[name] = v
	return v, nil
}

// variableLoop evaluates a variable declared in the variables' copy array: count inputs,
// each evaluated with copyIndex at its position.
func (t *template) variableLoop(loop map[string]any) ([]any, error) {
	cv, err := t.value(loop["count"], evalCtx{})
	if err != nil {
		return nil, fmt.Errorf("count: %w", err)
	}
	n, ok := cv.(int64)
	if !ok {
		return nil, fmt.Errorf("count is %T, not an int", cv)
	}
	out := make([]any, n)
	for i := range out {
		v, err := t.value(loop["input"], evalCtx{copyIndex: i, inCopy: true})
		if err != nil {
			return nil, fmt.Errorf("input %d: %w", i, err)
		}
		out[i] = v
	}
	return out, nil
}

// expr evaluates the inside of one "[...]" expression.
func (t *template) expr(src string, c evalCtx) (any, error) {
	p := &exprParser{src: src}
	n, err := p.parse()
	if err != nil {
		return nil, fmt.Errorf("expression [%s]: %w", src, err)
	}
	v, err := t.eval(n, c)
	if err != nil {
		return nil, fmt.Errorf("expression [%s]: %w", src, err)
	}
	return v, nil
}

// node is a parsed expression: a literal, or a call with accessors applied to its result.
type node struct {
	lit       any // string or int64 when fn == ""
	fn        string
	args      []*node
	accessors []accessor
}

type accessor struct {
	prop  string
	index *node
}

type exprParser struct {
	src string
	pos int
}

func (p *exprParser) parse() (*node, error) {
	n, err := p.operand()
	if err != nil {
		return nil, err
	}
	p.space()
	if p.pos != len(p.src) {
		return nil, fmt.Errorf("unexpected %q at offset %d", p.src[p.pos:], p.pos)
	}
	return n, nil
}

func (p *exprParser) space() {
	for p.pos < len(p.src) && p.src[p.pos] == ' ' {
		p.pos++
	}
}

func (p *exprParser) operand() (*node, error) {
	p.space()
	if p.pos >= len(p.src) {
		return nil, fmt.Errorf("unexpected end")
	}
	ch := p.src[p.pos]
	switch {
	case ch == '\'':
		p.pos++
		var b strings.Builder
		for {
			if p.pos >= len(p.src) {
				return nil, fmt.Errorf("unterminated string")
			}
			if p.src[p.pos] == '\'' {
				if p.pos+1 < len(p.src) && p.src[p.pos+1] == '\'' {
					b.WriteByte('\'')
					p.pos += 2
					continue
				}
				p.pos++
				break
			}
			b.WriteByte(p.src[p.pos])
			p.pos++
		}
		return &node{lit: b.String()}, nil
	case ch == '-' || unicode.IsDigit(rune(ch)):
		start := p.pos
		p.pos++
		for p.pos < len(p.src) && unicode.IsDigit(rune(p.src[p.pos])) {
			p.pos++
		}
		n, err := strconv.ParseInt(p.src[start:p.pos], 10, 64)
		if err != nil {
			return nil, err
		}
		return &node{lit: n}, nil
	case unicode.IsLetter(rune(ch)):
		start := p.pos
		for p.pos < len(p.src) && (unicode.IsLetter(rune(p.src[p.pos])) || unicode.IsDigit(rune(p.src[p.pos]))) {
			p.pos++
		}
		n := &node{fn: p.src[start:p.pos]}
		p.space()
		if p.pos >= len(p.src) || p.src[p.pos] != '(' {
			return nil, fmt.Errorf("%s is not followed by (", n.fn)
		}
		p.pos++
		p.space()
		if p.pos < len(p.src) && p.src[p.pos] == ')' {
			p.pos++
		} else {
			for {
				a, err := p.operand()
				if err != nil {
					return nil, err
				}
				n.args = append(n.args, a)
				p.space()
				if p.pos < len(p.src) && p.src[p.pos] == ',' {
					p.pos++
					continue
				}
				if p.pos < len(p.src) && p.src[p.pos] == ')' {
					p.pos++
					break
				}
				return nil, fmt.Errorf("expected , or ) at offset %d", p.pos)
			}
		}
		for p.pos < len(p.src) {
			switch p.src[p.pos] {
			case '.':
				p.pos++
				start := p.pos
				for p.pos < len(p.src) && (unicode.IsLetter(rune(p.src[p.pos])) || unicode.IsDigit(rune(p.src[p.pos])) || p.src[p.pos] == '_') {
					p.pos++
				}
				n.accessors = append(n.accessors, accessor{prop: p.src[start:p.pos]})
				continue
			case '[':
				p.pos++
				idx, err := p.operand()
				if err != nil {
					return nil, err
				}
				p.space()
				if p.pos >= len(p.src) || p.src[p.pos] != ']' {
					return nil, fmt.Errorf("expected ] at offset %d", p.pos)
				}
				p.pos++
				n.accessors = append(n.accessors, accessor{index: idx})
				continue
			}
			break
		}
		return n, nil
	}
	return nil, fmt.Errorf("unexpected %q at offset %d", ch, p.pos)
}

func (t *template) eval(n *node, c evalCtx) (any, error) {
	if n.fn == "" {
		return n.lit, nil
	}
	args := make([]any, len(n.args))
	// if() evaluates only the branch it takes, as ARM does.
	if strings.EqualFold(n.fn, "if") {
		if len(n.args) != 3 {
			return nil, fmt.Errorf("if takes 3 arguments")
		}
		cond, err := t.eval(n.args[0], c)
		if err != nil {
			return nil, err
		}
		b, ok := cond.(bool)
		if !ok {
			return nil, fmt.Errorf("if: condition is %T", cond)
		}
		branch := n.args[2]
		if b {
			branch = n.args[1]
		}
		v, err := t.eval(branch, c)
		if err != nil {
			return nil, err
		}
		return access(v, n.accessors, t, c)
	}
	for i, a := range n.args {
		v, err := t.eval(a, c)
		if err != nil {
			return nil, err
		}
		args[i] = v
	}
	v, err := t.call(strings.ToLower(n.fn), args, c)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", n.fn, err)
	}
	return access(v, n.accessors, t, c)
}

func access(v any, accs []accessor, t *template, c evalCtx) (any, error) {
	for _, a := range accs {
		if a.index == nil {
			m, ok := v.(map[string]any)
			if !ok {
				return nil, fmt.Errorf(".%s on %T", a.prop, v)
			}
			// ARM property access is case-insensitive.
			found := false
			for k, e := range m {
				if strings.EqualFold(k, a.prop) {
					v, found = e, true
					break
				}
			}
			if !found {
				return nil, fmt.Errorf("no property %q", a.prop)
			}
			continue
		}
		iv, err := t.eval(a.index, c)
		if err != nil {
			return nil, err
		}
		switch x := v.(type) {
		case []any:
			i, ok := iv.(int64)
			if !ok || i < 0 || int(i) >= len(x) {
				return nil, fmt.Errorf("index %v out of range (length %d)", iv, len(x))
			}
			v = x[i]
		case map[string]any:
			s, _ := iv.(string)
			e, ok := x[s]
			if !ok {
				return nil, fmt.Errorf("no property %q", s)
			}
			v = e
		default:
			return nil, fmt.Errorf("index on %T", v)
		}
	}
	return v, nil
}

func (t *template) call(fn string, args []any, c evalCtx) (any, error) {
	str := func(i int) (string, error) {
		if i >= len(args) {
			return "", fmt.Errorf("missing argument %d", i+1)
		}
		s, ok := args[i].(string)
		if !ok {
			return "", fmt.Errorf("argument %d is %T, not a string", i+1, args[i])
		}
		return s, nil
	}
	strs := func(from int) ([]string, error) {
		var out []string
		for i := from; i < len(args); i++ {
			s, err := str(i)
			if err != nil {
				return nil, err
			}
			out = append(out, s)
		}
		return out, nil
	}
	switch fn {
	case "parameters":
		s, err := str(0)
		if err != nil {
			return nil, err
		}
		return t.parameter(s)
	case "variables":
		s, err := str(0)
		if err != nil {
			return nil, err
		}
		return t.variable(s)
	case "format":
		f, err := str(0)
		if err != nil {
			return nil, err
		}
		out := f
		for i := len(args) - 1; i >= 1; i-- {
			out = strings.ReplaceAll(out, "{"+strconv.Itoa(i-1)+"}", fmt.Sprint(args[i]))
		}
		return out, nil
	case "concat":
		if len(args) > 0 {
			if _, ok := args[0].([]any); ok {
				var out []any
				for _, a := range args {
					arr, ok := a.([]any)
					if !ok {
						return nil, fmt.Errorf("mixes arrays and %T", a)
					}
					out = append(out, arr...)
				}
				return out, nil
			}
		}
		var b strings.Builder
		for _, a := range args {
			b.WriteString(fmt.Sprint(a))
		}
		return b.String(), nil
	case "createarray":
		return append([]any{}, args...), nil
	case "createobject":
		if len(args)%2 != 0 {
			return nil, fmt.Errorf("takes name, value pairs")
		}
		out := map[string]any{}
		for i := 0; i < len(args); i += 2 {
			k, err := str(i)
			if err != nil {
				return nil, err
			}
			out[k] = args[i+1]
		}
		return out, nil
	case "join":
		arr, ok := args[0].([]any)
		if !ok || len(args) != 2 {
			return nil, fmt.Errorf("takes an array and a delimiter")
		}
		sep, err := str(1)
		if err != nil {
			return nil, err
		}
		parts := make([]string, len(arr))
		for i, a := range arr {
			s, ok := a.(string)
			if !ok {
				return nil, fmt.Errorf("element %d is %T, not a string", i, a)
			}
			parts[i] = s
		}
		return strings.Join(parts, sep), nil
	case "tolower":
		s, err := str(0)
		return strings.ToLower(s), err
	case "string":
		if len(args) != 1 {
			return nil, fmt.Errorf("takes 1 argument")
		}
		return fmt.Sprint(args[0]), nil
	case "empty":
		if len(args) != 1 {
			return nil, fmt.Errorf("takes 1 argument")
		}
		switch x := args[0].(type) {
		case nil:
			return true, nil
		case string:
			return x == "", nil
		case []any:
			return len(x) == 0, nil
		case map[string]any:
			return len(x) == 0, nil
		}
		return nil, fmt.Errorf("on %T", args[0])
	case "length":
		switch x := args[0].(type) {
		case string:
			return int64(len(x)), nil
		case []any:
			return int64(len(x)), nil
		case map[string]any:
			return int64(len(x)), nil
		}
		return nil, fmt.Errorf("on %T", args[0])
	case "not":
		b, ok := args[0].(bool)
		if !ok {
			return nil, fmt.Errorf("on %T", args[0])
		}
		return !b, nil
	case "equals":
		return fmt.Sprint(args[0]) == fmt.Sprint(args[1]), nil
	case "null":
		return nil, nil
	case "copyindex":
		if !c.inCopy {
			return nil, fmt.Errorf("outside a copy loop")
		}
		// copyIndex(['loopName',] [offset]): the templates never nest loops, so the name can
		// only be the loop being evaluated.
		rest := args
		if len(rest) > 0 {
			if _, named := rest[0].(string); named {
				rest = rest[1:]
			}
		}
		off := int64(0)
		if len(rest) > 0 {
			n, ok := rest[0].(int64)
			if !ok {
				return nil, fmt.Errorf("offset is %T, not an int", rest[0])
			}
			off = n
		}
		return int64(c.copyIndex) + off, nil
	case "contains":
		if len(args) != 2 {
			return nil, fmt.Errorf("takes a container and an item")
		}
		switch x := args[0].(type) {
		case map[string]any:
			// Object keys compare case-insensitively, like property access.
			k, err := str(1)
			if err != nil {
				return nil, err
			}
			for key := range x {
				if strings.EqualFold(key, k) {
					return true, nil
				}
			}
			return false, nil
		case []any:
			for _, e := range x {
				if fmt.Sprint(e) == fmt.Sprint(args[1]) {
					return true, nil
				}
			}
			return false, nil
		case string:
			sub, err := str(1)
			return strings.Contains(x, sub), err
		}
		return nil, fmt.Errorf("on %T", args[0])
	case "split":
		s, err := str(0)
		if err != nil {
			return nil, err
		}
		sep, err := str(1)
		if err != nil {
			return nil, err
		}
		var out []any
		for _, p := range strings.Split(s, sep) {
			out = append(out, p)
		}
		return out, nil
	case "last":
		switch x := args[0].(type) {
		case string:
			if x == "" {
				return "", nil
			}
			return x[len(x)-1:], nil
		case []any:
			if len(x) == 0 {
				return nil, fmt.Errorf("of an empty array")
			}
			return x[len(x)-1], nil
		}
		return nil, fmt.Errorf("on %T", args[0])
	case "resourcegroup":
		return map[string]any{"id": t.dep.resourceGroupID(), "name": t.dep.resourceGroup, "location": t.dep.location}, nil
	case "subscription":
		return map[string]any{"id": "/subscriptions/" + t.dep.subscriptionID, "subscriptionId": t.dep.subscriptionID, "tenantId": stubTenantID}, nil
	case "uniquestring":
		ss, err := strs(0)
		if err != nil {
			return nil, err
		}
		sum := sha256.Sum256([]byte(strings.Join(ss, "|")))
		return strings.ToLower(base32.StdEncoding.EncodeToString(sum[:]))[:13], nil
	case "guid":
		ss, err := strs(0)
		if err != nil {
			return nil, err
		}
		sum := sha256.Sum256([]byte(strings.Join(ss, "|")))
		h := fmt.Sprintf("%x", sum[:16])
		return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32], nil
	case "resourceid", "subscriptionresourceid":
		ss, err := strs(0)
		if err != nil {
			return nil, err
		}
		prefix := t.dep.resourceGroupID()
		if fn == "subscriptionresourceid" {
			prefix = "/subscriptions/" + t.dep.subscriptionID
		}
		return resourceID(prefix, ss)
	case "extensionresourceid":
		ss, err := strs(0)
		if err != nil {
			return nil, err
		}
		if len(ss) < 3 {
			return nil, fmt.Errorf("needs a resource id, a type and a name")
		}
		return resourceID(ss[0], ss[1:])
	case "reference":
		target, err := str(0)
		if err != nil {
			return nil, err
		}
		full := len(args) >= 3 && strings.EqualFold(fmt.Sprint(args[2]), "Full")
		return t.reference(target, full)
	}
	return nil, fmt.Errorf("the test's evaluator does not implement this function; add it with ARM's semantics")
}

// resourceID builds {prefix}/providers/{namespace}/{type1}/{name1}/{type2}/{name2}...
func resourceID(prefix string, typeAndNames []string) (string, error) {
	if len(typeAndNames) < 2 {
		return "", fmt.Errorf("needs a type and a name")
	}
	segs := strings.Split(typeAndNames[0], "/")
	names := typeAndNames[1:]
	if len(segs) < 2 || len(segs)-1 != len(names) {
		return "", fmt.Errorf("type %s takes %d names, got %d", typeAndNames[0], len(segs)-1, len(names))
	}
	id := prefix + "/providers/" + segs[0]
	for i, n := range names {
		id += "/" + segs[i+1] + "/" + n
	}
	return id, nil
}

// reference returns the runtime state that the templates read from their resources.
func (t *template) reference(id string, full bool) (any, error) {
	typ, name, err := typeAndName(id)
	if err != nil {
		return nil, err
	}
	var props map[string]any
	switch strings.ToLower(typ) {
	case "microsoft.managedidentity/userassignedidentities":
		props = map[string]any{"clientId": stubClientID, "principalId": stubPrincipalID, "tenantId": "t"}
	case "microsoft.storage/storageaccounts":
		props = map[string]any{"primaryEndpoints": map[string]any{
			"blob":  "https://" + name + ".blob.core.windows.net/",
			"queue": "https://" + name + ".queue.core.windows.net/",
			"table": "https://" + name + ".table.core.windows.net/",
		}}
	case "microsoft.insights/components":
		props = map[string]any{"ConnectionString": "InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=https://" + t.dep.location + ".in.applicationinsights.azure.com/"}
	case "microsoft.eventgrid/topics":
		props = map[string]any{"endpoint": "https://" + name + "." + t.dep.location + "-1.eventgrid.azure.net/api/events"}
	case "microsoft.eventgrid/systemtopics":
		props = map[string]any{"metricResourceId": "00000000-0000-0000-0000-0000000000ff"}
	default:
		return nil, fmt.Errorf("the test's evaluator has no stand-in state for a %s", typ)
	}
	if full {
		return map[string]any{"properties": props, "identity": map[string]any{"principalId": "principal-of-" + name}}, nil
	}
	return props, nil
}

// typeAndName splits a resource id into its full type and last name.
func typeAndName(id string) (typ, name string, err error) {
	_, rest, ok := strings.Cut(id, "/providers/")
	if !ok {
		return "", "", fmt.Errorf("%q is not a resource id", id)
	}
	segs := strings.Split(rest, "/")
	if len(segs) < 3 || len(segs)%2 != 1 {
		return "", "", fmt.Errorf("%q is not a resource id", id)
	}
	typ = segs[0]
	for i := 1; i < len(segs); i += 2 {
		typ += "/" + segs[i]
	}
	return typ, segs[len(segs)-1], nil
}

// resource is one deployed resource after evaluation (copy loops expanded, false
// conditions dropped).
type resource struct {
	Type, APIVersion, Name string
	// Scope is the full id of the resource an extension resource applies to, "" otherwise.
	Scope      string
	Properties map[string]any
	Raw        map[string]any
}

// resources evaluates every resource the template deploys.
func (t *template) resources() ([]resource, error) {
	rs, _ := t.doc["resources"].([]any)
	var out []resource
	for i, r := range rs {
		m, ok := r.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("resource %d is not an object", i)
		}
		count, loop := 1, false
		if cp, ok := m["copy"].(map[string]any); ok {
			cv, err := t.value(cp["count"], evalCtx{})
			if err != nil {
				return nil, fmt.Errorf("resource %d copy count: %w", i, err)
			}
			n, ok := cv.(int64)
			if !ok {
				return nil, fmt.Errorf("resource %d copy count is %T", i, cv)
			}
			count, loop = int(n), true
		}
		for k := 0; k < count; k++ {
			c := evalCtx{copyIndex: k, inCopy: loop}
			if cond, ok := m["condition"]; ok {
				cv, err := t.value(cond, c)
				if err != nil {
					return nil, fmt.Errorf("resource %d condition: %w", i, err)
				}
				if b, ok := cv.(bool); ok && !b {
					continue
				}
			}
			ev, err := t.value(m, c)
			if err != nil {
				return nil, fmt.Errorf("resource %d (%v): %w", i, m["type"], err)
			}
			em := ev.(map[string]any)
			res := resource{Raw: em}
			res.Type, _ = em["type"].(string)
			res.APIVersion, _ = em["apiVersion"].(string)
			res.Name, _ = em["name"].(string)
			res.Properties, _ = em["properties"].(map[string]any)
			if s, ok := em["scope"].(string); ok {
				res.Scope = s
				if !strings.HasPrefix(s, "/") {
					// A relative scope names a resource of the deployment's resource group.
					res.Scope = t.dep.resourceGroupID() + "/providers/" + s
				}
			}
			out = append(out, res)
			// Child resources nested in the parent's "resources" deploy as resources of their
			// own: type and name under the parent's, dropped when their condition is false.
			children, _ := em["resources"].([]any)
			for j, ch := range children {
				cm, ok := ch.(map[string]any)
				if !ok {
					return nil, fmt.Errorf("resource %d child %d is not an object", i, j)
				}
				if b, ok := cm["condition"].(bool); ok && !b {
					continue
				}
				child := resource{Raw: cm}
				typ, _ := cm["type"].(string)
				name, _ := cm["name"].(string)
				child.Type, child.Name = res.Type+"/"+typ, res.Name+"/"+name
				child.APIVersion, _ = cm["apiVersion"].(string)
				child.Properties, _ = cm["properties"].(map[string]any)
				out = append(out, child)
			}
		}
	}
	return out, nil
}

// id returns the resource's full id in the deployment's resource group.
func (t *template) id(r resource) string {
	segs := strings.Split(r.Type, "/")
	names := strings.Split(r.Name, "/")
	id, err := resourceID(t.dep.resourceGroupID(), append([]string{r.Type}, names...))
	if err != nil || len(segs)-1 != len(names) {
		return ""
	}
	return id
}
