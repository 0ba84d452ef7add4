package config

import "strconv"

// Guardrail settings (docs/app.md, "Guardrails").
const (
	SettingMaxGroupDevices       = "MAX_GROUP_DEVICES"
	SettingMaxDestructivePerHour = "MAX_DESTRUCTIVE_PER_HOUR"
)

// Guardrail defaults: a group operation up to a thousand devices, and up to two hundred
// destructive operations an hour, run without a person; beyond, they wait for an approval.
const (
	DefaultMaxGroupDevices       = 1000
	DefaultMaxDestructivePerHour = 200
)

// guard reads the guardrail limits; 0 turns a limit off, which must be said explicitly.
func (l *loader) guard(c *Config) {
	c.Guard = Guardrails{MaxGroupDevices: DefaultMaxGroupDevices, MaxDestructivePerHour: DefaultMaxDestructivePerHour}
	for _, s := range []struct {
		name string
		dst  *int
	}{{SettingMaxGroupDevices, &c.Guard.MaxGroupDevices}, {SettingMaxDestructivePerHour, &c.Guard.MaxDestructivePerHour}} {
		v := l.get(s.name)
		if v == "" {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			l.bad(s.name, "%q is not a whole number of 0 or more (0 turns the limit off)", v)
			continue
		}
		*s.dst = n
	}
}
