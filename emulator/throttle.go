package emulator

import (
	"math"
	"sync"
	"time"
)

// bucket is a token bucket refilled continuously at perMinute/60 tokens a second and holding
// at most perMinute tokens: a per-minute budget, as the hub documents its identity-registry
// and query throttles (iot-hub-devguide-quotas-throttling.md, "Operation throttles": "100/min
// /unit", "5,000/min/unit") and DPS its operation and registration budgets
// (iot-dps-limits.md, "1,000/min/service"). Whether the services refill continuously or by
// fixed minute is not documented; a continuous refill never lets more than one minute's
// budget through in any minute, which is the reading the clients must cope with.
type bucket struct {
	mu        sync.Mutex
	perMinute int
	tokens    float64
	last      time.Time
}

func newBucket(perMinute int) *bucket {
	return &bucket{perMinute: perMinute, tokens: float64(perMinute), last: time.Now()}
}

// take consumes n tokens. It returns 0 when allowed, or the seconds to wait before a retry
// could succeed. A request larger than the whole budget is allowed once the bucket is full
// and leaves it in debt, so it can never be refused forever.
func (b *bucket) take(n int) int {
	_, wait := b.reserve(n, 0)
	return wait
}

// reserve consumes n tokens for a call that may wait up to maxWait for them, as the hub's
// traffic shaping holds calls over the budget in a backlog and serves them at the budget's
// rate. It returns how long the call must wait before it is served (0: at once), or, when
// it would have to wait longer than maxWait, retry > 0: the seconds after which a retry
// could be served, and nothing is consumed.
func (b *bucket) reserve(n int, maxWait time.Duration) (delay time.Duration, retry int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.perMinute <= 0 {
		return 0, 0
	}
	now := time.Now()
	rate := float64(b.perMinute) / 60
	b.tokens = math.Min(float64(b.perMinute), b.tokens+now.Sub(b.last).Seconds()*rate)
	b.last = now
	need := math.Min(float64(n), float64(b.perMinute))
	if b.tokens >= need {
		b.tokens -= float64(n)
		return 0, 0
	}
	wait := (need - b.tokens) / rate
	if maxWait > 0 && wait <= maxWait.Seconds() {
		// Queued: the tokens are spent now (the bucket goes into debt), so the calls that
		// queue behind this one wait longer, in arrival order.
		b.tokens -= float64(n)
		return time.Duration(wait * float64(time.Second)), 0
	}
	return 0, max(1, int(math.Ceil(wait)))
}

func (b *bucket) set(perMinute int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.perMinute = perMinute
	b.tokens = float64(perMinute)
	b.last = time.Now()
}

func (b *bucket) limit() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.perMinute
}
