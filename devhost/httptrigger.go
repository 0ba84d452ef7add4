package devhost

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// routePrefix is extensions.http.routePrefix, "api" by default.
func (h *Host) routePrefix() string {
	if p := h.app.Host.Extensions.HTTP.RoutePrefix; p != nil {
		return strings.Trim(*p, "/")
	}
	return "api"
}

// matchRoute matches path segments against a route template such as "operations/{id}" or
// "devices/{deviceId?}" and returns the route values.
func matchRoute(template string, segs []string) (map[string]string, bool) {
	tsegs := strings.Split(strings.Trim(template, "/"), "/")
	params := map[string]string{}
	for i, t := range tsegs {
		if strings.HasPrefix(t, "{") && strings.HasSuffix(t, "}") {
			name := strings.TrimSuffix(strings.TrimPrefix(t, "{"), "}")
			optional := strings.HasSuffix(name, "?")
			name = strings.TrimSuffix(name, "?")
			if n, _, ok := strings.Cut(name, ":"); ok {
				name = n
			}
			if strings.HasPrefix(name, "*") {
				params[strings.TrimPrefix(name, "*")] = strings.Join(segs[min(i, len(segs)):], "/")
				return params, true
			}
			if i >= len(segs) {
				if optional {
					continue
				}
				return nil, false
			}
			params[name] = segs[i]
			continue
		}
		if i >= len(segs) || !strings.EqualFold(t, segs[i]) {
			return nil, false
		}
	}
	if len(segs) > len(tsegs) {
		return nil, false
	}
	return params, true
}

// findHTTPFunction finds the HTTP-triggered function whose route and methods match r.
func (h *Host) findHTTPFunction(r *http.Request) (*Function, map[string]string) {
	path := strings.Trim(r.URL.Path, "/")
	prefix := h.routePrefix()
	if prefix != "" {
		if path != prefix && !strings.HasPrefix(path, prefix+"/") {
			return nil, nil
		}
		path = strings.TrimPrefix(strings.TrimPrefix(path, prefix), "/")
	}
	segs := strings.Split(path, "/")
	if path == "" {
		segs = nil
	}
	for _, f := range h.app.Functions {
		if f.Disabled || !f.isTrigger(TypeHTTPTrigger) {
			continue
		}
		if m := f.Trigger.Strings("methods"); len(m) > 0 {
			ok := false
			for _, x := range m {
				ok = ok || strings.EqualFold(x, r.Method)
			}
			if !ok {
				continue
			}
		}
		route := f.Trigger.String("route")
		if route == "" {
			route = f.Name
		}
		if params, ok := matchRoute(route, segs); ok {
			return f, params
		}
	}
	return nil, nil
}

// isHTTPInAndOut reports whether f has exactly an httpTrigger and an http output, the only shape
// the host forwards when enableForwardingHttpRequest is on.
func (f *Function) isHTTPInAndOut() bool {
	if len(f.Bindings) != 2 || !f.isTrigger(TypeHTTPTrigger) {
		return false
	}
	for _, b := range f.Bindings {
		if b.Direction == "out" && strings.EqualFold(b.Type, TypeHTTP) {
			return true
		}
	}
	return false
}

// serveHTTPTrigger serves HTTP-triggered functions under the route prefix. Core Tools does not
// enforce function keys locally, and neither does devhost.
func (h *Host) serveHTTPTrigger(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/" {
		w.WriteHeader(http.StatusOK) // the host's root answers as a liveness page
		return
	}
	f, params := h.findHTTPFunction(r)
	if f == nil {
		http.NotFound(w, r)
		return
	}
	if h.app.Host.CustomHandler.EnableForwardingHTTPRequest && f.isHTTPInAndOut() {
		h.forwardHTTP(w, r, f)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "reading request body: "+err.Error(), http.StatusBadRequest)
		return
	}
	inv := newInvocation(f, time.Now())
	reqObj := h.requestObject(r, params, body)
	inv.Data[f.Trigger.Name], _ = marshalHost(reqObj)
	query := map[string]string{}
	for k, v := range r.URL.Query() {
		query[k] = strings.Join(v, ",")
	}
	headers := map[string]string{}
	for k, v := range r.Header {
		headers[k] = strings.Join(v, ",")
	}
	headers["Host"] = r.Host
	qb, _ := marshalHost(query)
	hb, _ := marshalHost(headers)
	inv.setMetadata("Query", qb)
	inv.setMetadata("Headers", hb)
	for k, v := range params {
		inv.setMetadata(k, hostString(v))
	}
	res, err := h.run(r.Context(), f, inv)
	if err != nil {
		http.Error(w, "function invocation failed: "+err.Error(), http.StatusInternalServerError)
		return
	}
	h.writeHTTPOutput(w, f, res)
}

// requestObject is the host's HttpRequestExtensions.GetRequestAsJObject.
func (h *Host) requestObject(r *http.Request, params map[string]string, body []byte) map[string]any {
	u := url.URL{Scheme: "http", Host: r.Host, Path: r.URL.Path, RawQuery: r.URL.RawQuery}
	query := map[string]string{}
	for k, v := range r.URL.Query() {
		query[k] = strings.Join(v, ",")
	}
	headers := map[string][]string{}
	for k, v := range r.Header {
		headers[k] = v
	}
	headers["Host"] = []string{r.Host}
	obj := map[string]any{
		"Url":        u.String(),
		"Method":     r.Method,
		"Query":      query,
		"Headers":    headers,
		"Identities": []any{},
	}
	if len(params) > 0 {
		obj["Params"] = params
	}
	if len(body) > 0 {
		mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
		if mt == "application/octet-stream" || strings.HasPrefix(mt, "multipart/") {
			obj["Body"] = base64.StdEncoding.EncodeToString(body)
		} else {
			obj["Body"] = string(body)
		}
	}
	return obj
}

// writeHTTPOutput writes the http output binding's value as the response (the host's
// HttpBinding.CreateResult).
func (h *Host) writeHTTPOutput(w http.ResponseWriter, f *Function, res *Result) {
	outs := outputValues(f, res)
	var v json.RawMessage
	for _, b := range f.Bindings {
		if b.Direction == "out" && strings.EqualFold(b.Type, TypeHTTP) {
			v = outs[b.Name]
		}
	}
	v = bytes.TrimSpace(v)
	if len(v) > 0 && v[0] == '"' {
		var s string
		_ = json.Unmarshal(v, &s)
		if !json.Valid([]byte(s)) {
			http.Error(w, "function's http output is a string that is not JSON", http.StatusInternalServerError)
			return
		}
		v = json.RawMessage(s)
	}
	var obj map[string]json.RawMessage
	if len(v) == 0 || string(v) == "null" {
		obj = map[string]json.RawMessage{}
	} else if err := json.Unmarshal(v, &obj); err != nil {
		http.Error(w, "function's http output is not an object: "+err.Error(), http.StatusInternalServerError)
		return
	}
	get := func(keys ...string) json.RawMessage {
		for k, x := range obj {
			for _, want := range keys {
				if strings.EqualFold(k, want) {
					return x
				}
			}
		}
		return nil
	}
	status := http.StatusOK
	if s := bytes.TrimSpace(get("statusCode", "status")); len(s) > 0 {
		str := strings.Trim(string(s), `"`)
		n, err := strconv.Atoi(str)
		if err != nil {
			http.Error(w, fmt.Sprintf("function's http output statusCode %s is not a number", s), http.StatusInternalServerError)
			return
		}
		status = n
	}
	var hdrs map[string]any
	_ = json.Unmarshal(get("headers"), &hdrs)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	keys := make([]string, 0, len(hdrs))
	for k := range hdrs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		w.Header().Set(k, fmt.Sprint(hdrs[k]))
	}
	var out []byte
	if b := bytes.TrimSpace(get("body")); len(b) > 0 && string(b) != "null" {
		if b[0] == '"' {
			var s string
			_ = json.Unmarshal(b, &s)
			out = []byte(s)
		} else {
			out = indentJSON(b)
		}
	} else if len(obj) == 0 {
		out = []byte("{}")
	}
	w.WriteHeader(status)
	_, _ = w.Write(out)
}

// forwardHTTP sends the original request to the handler with the host's headers and returns the
// handler's response as it is (the host's ProxyInvocationRequest).
func (h *Host) forwardHTTP(w http.ResponseWriter, r *http.Request, f *Function) {
	if err := h.worker.awaitReady(r.Context()); err != nil {
		http.Error(w, "function invocation failed: "+err.Error(), http.StatusInternalServerError)
		return
	}
	target, _ := url.Parse(h.worker.baseURL())
	invID := newGUID()
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.URL.Path = r.URL.Path
			pr.Out.URL.RawQuery = r.URL.RawQuery
			h.setHostHeaders(pr.Out.Header, invID)
		},
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			h.log.Warn("forwarded invocation failed", "function", f.Name, "err", err)
			http.Error(w, "function invocation failed: "+err.Error(), http.StatusInternalServerError)
		},
	}
	proxy.ServeHTTP(w, r)
}
