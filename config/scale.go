package config

import (
	"strconv"
	"strings"
)

// Group-work and hub-budget settings (docs/app.md, "Scale").
const (
	SettingHubOpsPerMinute     = "HUB_OPS_PER_MINUTE"
	SettingGroupWorkMaxDequeue = "GROUP_WORK_MAX_DEQUEUE"
)

// Scale defaults: an S1 hub unit's identity-registry budget, and the queue extension's
// default maxDequeueCount.
const (
	DefaultHubOpsPerMinute = 100
	DefaultMaxDequeueCount = 5
)

// Scale is how group-wide work is paced and retried.
type Scale struct {
	// HubOpsPerMinute is each hub's identity-registry budget (operations a minute, every
	// device of a bulk call counting), shared by every instance of the app; 0 means no limit
	// (HUB_OPS_PER_MINUTE=off).
	HubOpsPerMinute int
	// HubOpsPerMinuteByHub overrides it per hub, by host name.
	HubOpsPerMinuteByHub map[string]int
	// MaxDequeueCount must equal host.json's extensions.queues.maxDequeueCount: on that
	// delivery a failing group-work batch is journaled as failed before it is poisoned.
	MaxDequeueCount int
}

// scale reads HUB_OPS_PER_MINUTE ("100", "100,bighub.azure-devices.net=5000", or "off") and
// GROUP_WORK_MAX_DEQUEUE.
func (l *loader) scale(c *Config) {
	c.Scale = Scale{HubOpsPerMinute: DefaultHubOpsPerMinute, MaxDequeueCount: DefaultMaxDequeueCount}
	if v := l.get(SettingHubOpsPerMinute); strings.EqualFold(v, "off") {
		c.Scale.HubOpsPerMinute = 0
	} else if v != "" {
		const form = "a budget in operations a minute, optionally followed by per-hub budgets, e.g. \"100\" or \"100,bighub.azure-devices.net=5000\" (or off)"
		for i, part := range strings.Split(v, ",") {
			part = strings.TrimSpace(part)
			host, num, perHub := strings.Cut(part, "=")
			if !perHub {
				num = part
			}
			n, err := strconv.Atoi(strings.TrimSpace(num))
			switch {
			case err != nil || n <= 0:
				l.bad(SettingHubOpsPerMinute, "%q: %q is not a positive whole number; the setting takes %s", v, num, form)
			case !perHub && i > 0:
				l.bad(SettingHubOpsPerMinute, "%q: only the first entry may be a bare number; the setting takes %s", v, form)
			case !perHub:
				c.Scale.HubOpsPerMinute = n
			case strings.TrimSpace(host) == "":
				l.bad(SettingHubOpsPerMinute, "%q: an entry names no hub; the setting takes %s", v, form)
			default:
				if c.Scale.HubOpsPerMinuteByHub == nil {
					c.Scale.HubOpsPerMinuteByHub = map[string]int{}
				}
				c.Scale.HubOpsPerMinuteByHub[strings.ToLower(strings.TrimSpace(host))] = n
			}
		}
	}
	if v := l.get(SettingGroupWorkMaxDequeue); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			l.bad(SettingGroupWorkMaxDequeue, "%q is not a whole number of 1 or more; set it to host.json's extensions.queues.maxDequeueCount", v)
		} else {
			c.Scale.MaxDequeueCount = n
		}
	}
}
