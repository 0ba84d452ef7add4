package emulator

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"time"
)

// Page sizes for the query operations. DPS pages 100 items when the caller sets no
// x-ms-max-item-count (recorded: test_individual_enrollment_paging of
// azure-sdk-for-python's DPS tests, 150 enrollments in pages of 100 and 50); the hub's default
// and both maximums are undocumented and the emulator's choice (UNCONFIRMED).
const (
	defaultPageSize = 100
	maxPageSize     = 1000
	maxSnapshots    = 64
	snapshotTTL     = 15 * time.Minute
)

// pager serves continuation-token paging over a sorted snapshot of keys. The tokens are
// opaque to clients, as the services' are (DPS's hold a Cosmos DB continuation, recorded in
// test_individual_enrollment_paging), and go only in the x-ms-continuation headers. A token
// names the snapshot, an offset into it and the last key served; if the snapshot has been
// evicted the keys are listed again and paging resumes after the last key, so paging never
// fails because of eviction and never repeats an item. (The services page in their storage's
// order, not in id order; clients must not depend on either.)
type pager struct {
	mu    sync.Mutex
	snaps map[string]*snapshot
	order []string
}

type snapshot struct {
	keys    []string
	created time.Time
}

type contToken struct {
	S string `json:"s"`
	O int    `json:"o"`
	K string `json:"k"`
}

func newPager() *pager { return &pager{snaps: map[string]*snapshot{}} }

// pageSize reads x-ms-max-item-count.
func pageSize(r *http.Request) (int, error) {
	v := r.Header.Get("x-ms-max-item-count")
	if v == "" {
		return defaultPageSize, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("x-ms-max-item-count %q is not a positive integer", v)
	}
	return min(n, maxPageSize), nil
}

// page returns the keys of the requested page and the continuation token for the next one
// ("" when this is the last page). list returns every key (any order) and is called only
// for a first page or after eviction.
func (p *pager) page(token string, size int, list func() []string) ([]string, string, error) {
	var snap *snapshot
	var id string
	off := 0
	if token != "" {
		raw, err := base64.RawURLEncoding.DecodeString(token)
		var t contToken
		if err == nil {
			err = json.Unmarshal(raw, &t)
		}
		if err != nil {
			return nil, "", fmt.Errorf("x-ms-continuation %q was not issued by this service", token)
		}
		p.mu.Lock()
		snap = p.snaps[t.S]
		p.mu.Unlock()
		if snap != nil && t.O <= len(snap.keys) {
			id, off = t.S, t.O
		} else {
			snap = nil
			keys := list()
			sort.Strings(keys)
			i := sort.SearchStrings(keys, t.K)
			if i < len(keys) && keys[i] == t.K {
				i++
			}
			snap = &snapshot{keys: keys, created: time.Now()}
			off = i
		}
	} else {
		keys := list()
		sort.Strings(keys)
		snap = &snapshot{keys: keys, created: time.Now()}
	}
	end := min(off+size, len(snap.keys))
	out := snap.keys[off:end]
	if end >= len(snap.keys) {
		return out, "", nil
	}
	if id == "" {
		id = randomHex(8)
		p.store(id, snap)
	}
	b, _ := json.Marshal(contToken{S: id, O: end, K: snap.keys[end-1]})
	return out, base64.RawURLEncoding.EncodeToString(b), nil
}

func (p *pager) store(id string, s *snapshot) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	for len(p.order) > 0 && (len(p.order) >= maxSnapshots || now.Sub(p.snaps[p.order[0]].created) > snapshotTTL) {
		delete(p.snaps, p.order[0])
		p.order = p.order[1:]
	}
	p.snaps[id] = s
	p.order = append(p.order, id)
}

func (p *pager) reset() {
	p.mu.Lock()
	p.snaps = map[string]*snapshot{}
	p.order = nil
	p.mu.Unlock()
}
