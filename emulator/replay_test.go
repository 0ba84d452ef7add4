package emulator_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"testing"

	"dpsdeprov/emulator"
	"dpsdeprov/internal/recorded"
	"dpsdeprov/internal/testenv"
)

// The replay test sends the emulator every request of the real traffic Microsoft's SDK tests
// recorded against IoT Hub and DPS (the shared reference recordings, read where they lie and
// never copied into the project) and compares its answers with what the services answered,
// entry by entry: status, error code, ETag header, paging headers and the JSON shape (every
// key the service filled must be in the emulator's answer; what the emulator adds is listed).
//
// Values are not compared: the deliberate differences (keys, certificates, etags, times,
// generation and tracking ids) are all values, listed in docs/emulator.md.
//
// Only values that cannot match are mapped: the requests are re-signed with the emulator's
// keys; the secrets the recorder sanitized ("Sanitized" device keys, "primaryKey" enrollment
// keys, "certificate" certificates) are replaced with the emulator's own or with valid ones;
// recorded etags and continuation tokens are replaced with the emulator's in later requests,
// and the pairing of recorded and emulated etags must stay one to one (a new etag where the
// service kept its etag, or the reverse, is a difference).

// exchange is one call to replay and what the service answered to it.
type exchange struct {
	method string
	// host is "dps", "hub" or "device" (the DPS device API).
	host   string
	path   string // escaped path and query
	header http.Header
	body   []byte // nil: none
	want   expectation
}

// expectation is what the service answered, reduced to what the emulator must reproduce.
type expectation struct {
	status int
	// codes are the error codes the answer carried: iothub-errorcode, the "ErrorCode:" of a
	// legacy hub body or the errorCode of a nested one, DPS's x-ms-error-code and errorCode,
	// and the errorCode of every item of a bulk result.
	codes []string
	// etag is the ETag header ("" for none).
	etag string
	// continuation, itemType and maxItemCount are the paging headers.
	continuation bool
	itemType     string
	maxItemCount bool
	// keys are the paths of every value the service filled (not null), "[]" standing for
	// the elements of an array.
	keys []string
	// bodyEtags maps the JSON paths of etag values in an object answer to the recorded
	// values, which must pair one to one with the emulator's.
	bodyEtags map[string]string
	// continuationToken is the recorded token, for later requests that send it back.
	continuationToken string
	// items is the number of items of an array answer, checked with the paging headers
	// when checkItems is set (the restated cases know it; the shared recordings' queries
	// also saw devices other tests had left on the hub).
	items      int
	checkItems bool
}

// replayFigures counts matches for one file.
type replayFigures struct {
	file                                              string
	entries, skipped                                  int
	status, codes, etags, paging, shapes, shapeExtras int
	missing                                           []string
}

func TestReplayRecordedTraffic(t *testing.T) {
	var all []replayFigures
	for _, set := range recorded.Sets(t, "") {
		ex := make([]exchange, 0, len(set.Entries))
		for i := range set.Entries {
			ex = append(ex, fromRecorded(&set.Entries[i]))
		}
		t.Run(set.Name, func(t *testing.T) {
			fig := replay(t, set.Name, ex)
			fig.skipped = set.Skipped // the Azure AD token calls of the Python recordings
			all = append(all, fig)
		})
	}
	report(t, all)
}

// report logs the figures and fails unless every status, error code and ETag header matches
// and at least 95% of shapes hold every key the service filled.
func report(t *testing.T, all []replayFigures) {
	t.Helper()
	var tot replayFigures
	var b strings.Builder
	fmt.Fprintf(&b, "%-72s %7s %7s %7s %7s %7s %7s %7s\n", "recording", "entries", "status", "codes", "etag", "paging", "shape", "extras")
	for _, f := range all {
		fmt.Fprintf(&b, "%-72s %7d %7d %7d %7d %7d %7d %7d\n", f.file, f.entries, f.status, f.codes, f.etags, f.paging, f.shapes, f.shapeExtras)
		tot.entries += f.entries
		tot.skipped += f.skipped
		tot.status += f.status
		tot.codes += f.codes
		tot.etags += f.etags
		tot.paging += f.paging
		tot.shapes += f.shapes
		tot.shapeExtras += f.shapeExtras
		tot.missing = append(tot.missing, f.missing...)
	}
	fmt.Fprintf(&b, "%-72s %7d %7d %7d %7d %7d %7d %7d\n", fmt.Sprintf("total (%d files, %d token calls skipped)", len(all), tot.skipped),
		tot.entries, tot.status, tot.codes, tot.etags, tot.paging, tot.shapes, tot.shapeExtras)
	t.Logf("replayed against the emulator (matches per column; extras = answers carrying keys the service did not fill):\n%s", b.String())
	if tot.entries == 0 {
		t.Fatal("nothing was replayed")
	}
	if tot.status != tot.entries || tot.codes != tot.entries || tot.etags != tot.entries || tot.paging != tot.entries {
		t.Errorf("status %d, error codes %d, ETag %d, paging %d of %d entries match; all must", tot.status, tot.codes, tot.etags, tot.paging, tot.entries)
	}
	if float64(tot.shapes) < 0.95*float64(tot.entries) {
		t.Errorf("%d of %d response shapes hold every key the service filled; at least 95%% must:\n%s", tot.shapes, tot.entries, strings.Join(tot.missing, "\n"))
	}
}

// fromRecorded turns a recorded entry into an exchange.
func fromRecorded(en *recorded.Entry) exchange {
	x := exchange{method: en.Method, path: en.URL.EscapedPath(), header: http.Header{}, body: en.RequestBody}
	if en.URL.RawQuery != "" {
		x.path += "?" + en.URL.RawQuery
	}
	switch {
	case strings.HasSuffix(en.URL.Host, ".azure-devices-provisioning.net") && strings.HasPrefix(en.URL.Path, "/0ne"):
		x.host = "device"
	case strings.HasSuffix(en.URL.Host, ".azure-devices-provisioning.net"):
		x.host = "dps"
	default: // FakeHost.net and the hubs the .NET tests ran against
		x.host = "hub"
	}
	for _, k := range []string{"If-Match", "x-ms-max-item-count", "x-ms-continuation", "Content-Type"} {
		if v := en.RequestHeader.Get(k); v != "" {
			x.header.Set(k, v)
		}
	}
	x.want = expect(en.Status, en.Header, en.Body)
	return x
}

// expect reduces an answer (the service's or the emulator's) to an expectation.
func expect(status int, h http.Header, body []byte) expectation {
	x := expectation{
		status:            status,
		etag:              h.Get("ETag"),
		continuation:      h.Get("x-ms-continuation") != "",
		continuationToken: h.Get("x-ms-continuation"),
		itemType:          h.Get("x-ms-item-type"),
		maxItemCount:      h.Get("x-ms-max-item-count") != "",
	}
	if c := h.Get("iothub-errorcode"); c != "" {
		x.codes = append(x.codes, "header:"+c)
	}
	if c := h.Get("x-ms-error-code"); c != "" {
		x.codes = append(x.codes, "header:"+c)
	}
	var v any
	if len(body) > 0 && json.Unmarshal(body, &v) == nil {
		if a, ok := v.([]any); ok {
			x.items = len(a)
		}
		x.keys = recorded.Paths(v, func(v any) bool { return v != nil })
		x.codes = append(x.codes, bodyCodes(v)...)
		if m, ok := v.(map[string]any); ok {
			x.bodyEtags = map[string]string{}
			collectEtags(m, "", x.bodyEtags)
		}
	}
	sort.Strings(x.codes)
	return x
}

var legacyCodeRe = regexp.MustCompile(`^ErrorCode:([A-Za-z]+);`)

// bodyCodes finds the error codes in a body.
func bodyCodes(v any) []string {
	m, ok := v.(map[string]any)
	if !ok {
		return nil
	}
	var out []string
	if msg, ok := m["Message"].(string); ok {
		if sm := legacyCodeRe.FindStringSubmatch(msg); sm != nil {
			out = append(out, "body:"+sm[1])
		}
		var inner map[string]any
		if json.Unmarshal([]byte(msg), &inner) == nil && inner["errorCode"] != nil {
			out = append(out, "body:"+fmt.Sprint(inner["errorCode"]))
		}
	}
	if c, ok := m["errorCode"]; ok && c != nil {
		out = append(out, "body:"+fmt.Sprint(c))
	}
	if errs, ok := m["errors"].([]any); ok {
		for _, e := range errs {
			if em, ok := e.(map[string]any); ok && em["errorCode"] != nil {
				out = append(out, "item:"+fmt.Sprint(em["errorCode"]))
			}
		}
	}
	return out
}

func collectEtags(m map[string]any, prefix string, out map[string]string) {
	for k, v := range m {
		p := k
		if prefix != "" {
			p = prefix + "." + k
		}
		switch x := v.(type) {
		case string:
			if strings.EqualFold(k, "etag") || k == "deviceEtag" {
				out[p] = x
			}
		case map[string]any:
			collectEtags(x, p, out)
		}
	}
}

// replayer sends exchanges to a fresh emulator and compares the answers.
type replayer struct {
	t     *testing.T
	e     *emulator.Emulator
	http  *http.Client
	etags map[string]string // recorded etag → emulator etag
	back  map[string]string // emulator etag → recorded etag
	conts map[string]string // recorded continuation → emulator continuation
	// keys holds the last keys the emulator answered with for a device or enrollment.
	keys map[string][2]string
	// certs holds a generated certificate per sanitized placeholder.
	certs map[string]string
	// symGroups are the symmetric-key groups created so far, for devices the recorded test
	// registered with the device SDK between its service calls.
	symGroups  []string
	registered map[string]bool
}

func newReplayer(t *testing.T) *replayer {
	e := testenv.StartEmulator(t, emulator.Options{Hubs: []string{"hub1"}})
	return &replayer{t: t, e: e, http: testenv.EmulatorHTTPClient(e), etags: map[string]string{}, back: map[string]string{},
		conts: map[string]string{}, keys: map[string][2]string{}, certs: map[string]string{}, registered: map[string]bool{}}
}

func replay(t *testing.T, name string, ex []exchange) replayFigures {
	r := newReplayer(t)
	fig := replayFigures{file: strings.TrimSuffix(name, ".json"), entries: len(ex)}
	for i, x := range ex {
		got, gotBody := r.send(x)
		ok := r.compare(fmt.Sprintf("%s #%d %s %s", name, i, x.method, x.path), x, got, gotBody)
		fig.add(ok)
	}
	return fig
}

// matches records which parts of one answer matched.
type matches struct {
	status, codes, etag, paging, shape, extras bool
	missing                                    []string
}

func (f *replayFigures) add(m matches) {
	count := func(b bool, n *int) {
		if b {
			*n++
		}
	}
	count(m.status, &f.status)
	count(m.codes, &f.codes)
	count(m.etag, &f.etags)
	count(m.paging, &f.paging)
	count(m.shape, &f.shapes)
	count(m.extras, &f.shapeExtras)
	f.missing = append(f.missing, m.missing...)
}

// send replays one exchange and returns the emulator's answer.
func (r *replayer) send(x exchange) (*http.Response, []byte) {
	t := r.t
	t.Helper()
	info := r.e.Info()
	var host, auth string
	switch x.host {
	case "dps":
		host, auth = sasFor(t, info.DPS.ConnectionString)
	case "hub":
		host, auth = sasFor(t, info.Hubs[0].ConnectionString)
	default:
		t.Fatalf("device API calls are not replayed (%s)", x.path)
	}
	r.beforeSend(x)
	body := r.mapBody(x)
	req, err := http.NewRequest(x.method, "https://"+host+x.path, bytesReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", auth)
	for k, v := range x.header {
		val := v[0]
		switch strings.ToLower(k) {
		case "if-match":
			val = r.mapEtagHeader(val)
		case "x-ms-continuation":
			if c, ok := r.conts[val]; ok {
				val = c
			}
		}
		req.Header.Set(k, val)
	}
	res, err := r.http.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", x.method, x.path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	r.afterAnswer(x, res, b)
	return res, b
}

func bytesReader(b []byte) io.Reader {
	if b == nil {
		return nil
	}
	return bytes.NewReader(b)
}

// beforeSend registers, through the device API, a device the recorded test registered with
// the device SDK between its service calls: a recorded 200 to GET /registrations/{id}
// (test_device_registration_lifecycle) needs the device to have registered, and the
// recording holds only the service calls.
func (r *replayer) beforeSend(x exchange) {
	if x.host != "dps" || x.method != http.MethodGet || x.want.status != http.StatusOK {
		return
	}
	segs := strings.Split(strings.Trim(strings.SplitN(x.path, "?", 2)[0], "/"), "/")
	if len(segs) != 2 || !strings.EqualFold(segs[0], "registrations") || r.registered[segs[1]] {
		return
	}
	regID, _ := url.PathUnescape(segs[1])
	for _, g := range r.symGroups {
		host, auth := sasFor(r.t, r.e.Info().DPS.ConnectionString)
		res := (&client{t: r.t, e: r.e, http: r.http}).call("POST", host, "/enrollmentGroups/"+url.PathEscape(g)+"/attestationmechanism?api-version=2021-10-01", auth, nil)
		var att struct{ SymmetricKey struct{ PrimaryKey string } }
		if res.status != http.StatusOK || json.Unmarshal(res.body, &att) != nil {
			continue
		}
		dk, err := emulator.DeriveDeviceKey(att.SymmetricKey.PrimaryKey, regID)
		if err != nil {
			r.t.Fatal(err)
		}
		if _, st := registerDevice(r.t, r.e, regID, dk, nil); st != nil {
			r.registered[segs[1]] = true
			r.t.Logf("registered device %s through group %s, as the recorded test did with the device SDK", regID, g)
			return
		}
	}
}

// mapEtagHeader replaces a recorded etag in an If-Match value with the emulator's, keeping
// the client's quoting.
func (r *replayer) mapEtagHeader(v string) string {
	quoted := len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"'
	inner := strings.Trim(v, `"`)
	if e, ok := r.etags[inner]; ok {
		inner = e
	}
	if quoted {
		return `"` + inner + `"`
	}
	return inner
}

// entity names what a request body is about, for the keys the emulator gave it.
func entity(path string) string {
	p := strings.SplitN(path, "?", 2)[0]
	segs := strings.Split(strings.Trim(p, "/"), "/")
	if len(segs) >= 2 {
		id, _ := url.PathUnescape(segs[1])
		return strings.ToLower(segs[0]) + "/" + id
	}
	return ""
}

// mapBody rewrites a recorded request body: etags to the emulator's, sanitized secrets to
// the emulator's or to valid stand-ins.
func (r *replayer) mapBody(x exchange) []byte {
	if x.body == nil {
		return nil
	}
	var v any
	if json.Unmarshal(x.body, &v) != nil {
		return x.body
	}
	v = r.mapValue(v, "", entity(x.path))
	b, err := json.Marshal(v)
	if err != nil {
		r.t.Fatal(err)
	}
	return b
}

func (r *replayer) mapValue(v any, key, ent string) any {
	switch x := v.(type) {
	case map[string]any:
		// A bulk item names its device or enrollment itself.
		for _, k := range []string{"id", "registrationId", "enrollmentGroupId"} {
			if id, ok := x[k].(string); ok && id != "" {
				switch k {
				case "id":
					ent = "devices/" + id
				case "registrationId":
					ent = "enrollments/" + id
				default:
					ent = "enrollmentgroups/" + id
				}
			}
		}
		for k, e := range x {
			x[k] = r.mapValue(e, k, ent)
		}
		return x
	case []any:
		for i, e := range x {
			x[i] = r.mapValue(e, key, ent)
		}
		return x
	case string:
		switch key {
		case "etag", "eTag", "deviceEtag":
			if e, ok := r.etags[x]; ok {
				return e
			}
		case "primaryKey", "secondaryKey":
			return r.secret(x, key, ent)
		case "certificate":
			return r.certificate(x)
		}
	}
	return v
}

// secret returns the key to send for a recorded one: the emulator's current key of the
// device or enrollment when the recorder sanitized it ("Sanitized"), a key derived from the
// placeholder when the recorded value is not a valid key ("primaryKey"), else the recorded
// key itself.
func (r *replayer) secret(v, field, ent string) string {
	if raw, err := base64.StdEncoding.DecodeString(v); err == nil && len(raw) >= 16 && len(raw) <= 64 {
		return v
	}
	if k, ok := r.keys[strings.ToLower(ent)]; ok {
		if field == "primaryKey" && k[0] != "" {
			return k[0]
		}
		if field == "secondaryKey" && k[1] != "" {
			return k[1]
		}
	}
	sum := sha256.Sum256([]byte(v + "/" + field))
	return base64.StdEncoding.EncodeToString(sum[:])
}

// certificate returns a generated certificate for a sanitized one.
func (r *replayer) certificate(v string) string {
	if strings.Contains(v, "BEGIN CERTIFICATE") || len(v) > 200 {
		return v
	}
	if c, ok := r.certs[v]; ok {
		return c
	}
	ca, err := emulator.NewTestCA("replay-" + v)
	if err != nil {
		r.t.Fatal(err)
	}
	r.certs[v] = string(ca.CertPEM)
	return r.certs[v]
}

// afterAnswer learns from an answer: the etag pairing, continuation tokens, keys, groups.
func (r *replayer) afterAnswer(x exchange, res *http.Response, body []byte) {
	if c := res.Header.Get("x-ms-continuation"); c != "" && x.want.continuationToken != "" {
		r.conts[x.want.continuationToken] = c
	}
	got := expect(res.StatusCode, res.Header, body)
	if x.want.etag != "" && got.etag != "" {
		r.pair(strings.Trim(x.want.etag, `"`), strings.Trim(got.etag, `"`))
	}
	for p, rv := range x.want.bodyEtags {
		if gv, ok := got.bodyEtags[p]; ok {
			r.pair(rv, gv)
		}
	}
	var m map[string]any
	if json.Unmarshal(body, &m) == nil {
		ent := entity(x.path)
		if a, ok := m["authentication"].(map[string]any); ok {
			r.learnKeys(ent, a["symmetricKey"])
		}
		if a, ok := m["attestation"].(map[string]any); ok {
			r.learnKeys(ent, a["symmetricKey"])
			if a["type"] == "symmetricKey" && strings.HasPrefix(ent, "enrollmentgroups/") && x.method == http.MethodPut && res.StatusCode == http.StatusOK {
				r.symGroups = append(r.symGroups, strings.TrimPrefix(ent, "enrollmentgroups/"))
			}
		}
	}
}

func (r *replayer) learnKeys(ent string, sk any) {
	k, ok := sk.(map[string]any)
	if !ok {
		return
	}
	p, _ := k["primaryKey"].(string)
	s, _ := k["secondaryKey"].(string)
	if p != "" || s != "" {
		r.keys[strings.ToLower(ent)] = [2]string{p, s}
	}
}

// pair records that a recorded etag is the emulator's etag; a recorded etag already paired
// with another emulator etag (or the reverse) breaks the one-to-one pairing and is reported
// by compare.
func (r *replayer) pair(recorded, emulated string) bool {
	if e, ok := r.etags[recorded]; ok && e != emulated {
		return false
	}
	if b, ok := r.back[emulated]; ok && b != recorded {
		return false
	}
	r.etags[recorded], r.back[emulated] = emulated, recorded
	return true
}

// compare checks the emulator's answer against the expectation and reports every
// difference as a test error.
func (r *replayer) compare(label string, x exchange, res *http.Response, body []byte) matches {
	t := r.t
	t.Helper()
	got := expect(res.StatusCode, res.Header, body)
	want := x.want
	m := matches{}
	m.status = got.status == want.status
	if !m.status {
		t.Errorf("%s: status %d, the service answered %d (%s)", label, got.status, want.status, truncate(body))
	}
	m.codes = strings.Join(got.codes, ",") == strings.Join(want.codes, ",")
	if !m.codes {
		t.Errorf("%s: error codes %v, the service answered %v (%s)", label, got.codes, want.codes, truncate(body))
	}
	m.etag = (got.etag == "") == (want.etag == "") && quotedOrEmpty(got.etag) == quotedOrEmpty(want.etag) && r.etagsPaired(want, got)
	if !m.etag {
		t.Errorf("%s: ETag header %q (body etags %v), the service answered %q (body etags %v)", label, got.etag, got.bodyEtags, want.etag, want.bodyEtags)
	}
	m.paging = got.continuation == want.continuation && got.itemType == want.itemType && got.maxItemCount == want.maxItemCount &&
		(!want.checkItems || got.items == want.items)
	if !m.paging {
		t.Errorf("%s: paging headers continuation=%v item-type=%q max-item-count=%v (%d items), the service answered %v %q %v (%d items)",
			label, got.continuation, got.itemType, got.maxItemCount, got.items, want.continuation, want.itemType, want.maxItemCount, want.items)
	}
	have := map[string]bool{}
	for _, k := range got.keys {
		have[k] = true
	}
	var missing []string
	for _, k := range want.keys {
		if !have[k] {
			missing = append(missing, k)
		}
	}
	m.shape = len(missing) == 0
	if !m.shape {
		m.missing = []string{label + ": " + strings.Join(missing, ", ")}
		t.Logf("%s: the answer lacks keys the service filled: %v", label, missing)
	}
	wantSet := map[string]bool{}
	for _, k := range want.keys {
		wantSet[k] = true
	}
	var extra []string
	for _, k := range got.keys {
		if !wantSet[k] {
			extra = append(extra, k)
		}
	}
	m.extras = len(extra) > 0
	if m.extras {
		t.Logf("%s: the emulator adds %v", label, extra)
	}
	return m
}

// etagsPaired checks that the etags of an object answer pair one to one with the recorded
// ones (arrays are not paired: their items need not come in the same order).
func (r *replayer) etagsPaired(want, got expectation) bool {
	for p, rv := range want.bodyEtags {
		gv, ok := got.bodyEtags[p]
		if !ok || r.etags[rv] != gv || r.back[gv] != rv {
			return false
		}
	}
	if want.etag != "" && got.etag != "" {
		rv, gv := strings.Trim(want.etag, `"`), strings.Trim(got.etag, `"`)
		if r.etags[rv] != gv || r.back[gv] != rv {
			return false
		}
	}
	return true
}

func quotedOrEmpty(s string) bool { return s == "" || len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' }

func truncate(b []byte) string {
	if len(b) > 400 {
		return string(b[:400]) + "…"
	}
	return string(b)
}
