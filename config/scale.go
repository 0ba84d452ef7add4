package config

import (
	"strconv"
	"strings"
)

// Group-work, hub-budget and DPS-budget settings (docs/app.md, "Scale").
const (
	SettingHubOpsPerMinute     = "HUB_OPS_PER_MINUTE"
	SettingGroupWorkMaxDequeue = "GROUP_WORK_MAX_DEQUEUE"
	SettingDPSOpsPerMinute     = "DPS_OPS_PER_MINUTE"
	SettingDPSOpsShare         = "DPS_OPS_SHARE"
	SettingDPSBulkCost         = "DPS_BULK_COST"
)

// Scale defaults: an S1 hub unit's identity-registry budget, the queue extension's default
// maxDequeueCount, DPS's documented budget of service operations per instance (1,000 a
// minute), and the share of it the app takes, leaving a fifth to the customer's other tools.
const (
	DefaultHubOpsPerMinute = 100
	DefaultMaxDequeueCount = 5
	DefaultDPSOpsPerMinute = 1000
	DefaultDPSOpsShare     = 0.8
)

// How a DPS bulk enrollment operation is counted against the budget (DPS_BULK_COST).
const (
	// DPSBulkPerItem counts every item: DPS does not document how it counts a bulk call,
	// and this reading never takes more than the budget.
	DPSBulkPerItem = "item"
	// DPSBulkPerCall counts the call once, whatever its items.
	DPSBulkPerCall = "call"
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
	// DPSOpsPerMinute is the DPS instance's budget of service operations a minute (shared
	// with every other client of the instance); 0 means the app does not limit its DPS calls
	// (DPS_OPS_PER_MINUTE=off).
	DPSOpsPerMinute int
	// DPSOpsShare is the share of DPSOpsPerMinute the app's instances may use together.
	DPSOpsShare float64
	// DPSBulkCost is DPSBulkPerItem or DPSBulkPerCall.
	DPSBulkCost string
}

// DPSBudget is the app's DPS budget, operations a minute: the instance's budget times the
// app's share, at least 1; 0 when DPS calls are not limited.
func (s Scale) DPSBudget() int {
	if s.DPSOpsPerMinute <= 0 {
		return 0
	}
	return max(1, int(float64(s.DPSOpsPerMinute)*s.DPSOpsShare))
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
	l.dpsBudget(c)
	if v := l.get(SettingGroupWorkMaxDequeue); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			l.bad(SettingGroupWorkMaxDequeue, "%q is not a whole number of 1 or more; set it to host.json's extensions.queues.maxDequeueCount", v)
		} else {
			c.Scale.MaxDequeueCount = n
		}
	}
}

// dpsBudget reads DPS_OPS_PER_MINUTE ("1000" or "off"), DPS_OPS_SHARE (a fraction in (0, 1])
// and DPS_BULK_COST ("item" or "call").
func (l *loader) dpsBudget(c *Config) {
	c.Scale.DPSOpsPerMinute, c.Scale.DPSOpsShare, c.Scale.DPSBulkCost = DefaultDPSOpsPerMinute, DefaultDPSOpsShare, DPSBulkPerItem
	if v := l.get(SettingDPSOpsPerMinute); strings.EqualFold(v, "off") {
		c.Scale.DPSOpsPerMinute = 0
	} else if v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			l.bad(SettingDPSOpsPerMinute, "%q is not a positive whole number of operations a minute (DPS documents 1000 per instance), or off", v)
		} else {
			c.Scale.DPSOpsPerMinute = n
		}
	}
	if v := l.get(SettingDPSOpsShare); v != "" {
		f, err := strconv.ParseFloat(strings.TrimSuffix(v, "%"), 64)
		if err == nil && strings.HasSuffix(v, "%") {
			f /= 100
		}
		if err != nil || !(f > 0 && f <= 1) {
			l.bad(SettingDPSOpsShare, "%q is not a share between 0 (excluded) and 1, such as 0.8 or 80%%", v)
		} else {
			c.Scale.DPSOpsShare = f
		}
	}
	switch v := strings.ToLower(l.get(SettingDPSBulkCost)); v {
	case "":
	case DPSBulkPerItem, DPSBulkPerCall:
		c.Scale.DPSBulkCost = v
	default:
		l.bad(SettingDPSBulkCost, "%q: how DPS counts a bulk enrollment operation is item (every item, the default) or call (once)", v)
	}
}
