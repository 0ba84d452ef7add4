package emulator

import (
	"math"
	"sync"
	"time"
)

// bucket is a token bucket refilled continuously at perMinute/60 tokens a second and holding
// at most perMinute tokens, like the hub's per-minute identity-registry throttle.
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
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.perMinute <= 0 {
		return 0
	}
	now := time.Now()
	rate := float64(b.perMinute) / 60
	b.tokens = math.Min(float64(b.perMinute), b.tokens+now.Sub(b.last).Seconds()*rate)
	b.last = now
	need := math.Min(float64(n), float64(b.perMinute))
	if b.tokens >= need {
		b.tokens -= float64(n)
		return 0
	}
	return max(1, int(math.Ceil((need-b.tokens)/rate)))
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
