package config_test

import (
	"errors"
	"testing"

	"dpsdeprov/config"
)

func TestGuardrailSettings(t *testing.T) {
	c, err := config.Load(valid())
	if err != nil {
		t.Fatal(err)
	}
	if c.Guard.MaxGroupDevices != config.DefaultMaxGroupDevices || c.Guard.MaxDestructivePerHour != config.DefaultMaxDestructivePerHour {
		t.Fatalf("defaults: %+v", c.Guard)
	}
	env := valid()
	env[config.SettingMaxGroupDevices] = "50"
	env[config.SettingMaxDestructivePerHour] = "0"
	if c, err = config.Load(env); err != nil {
		t.Fatal(err)
	}
	if c.Guard.MaxGroupDevices != 50 || c.Guard.MaxDestructivePerHour != 0 {
		t.Fatalf("set: %+v", c.Guard)
	}
	for _, bad := range []string{"-1", "many", "1.5"} {
		env := valid()
		env[config.SettingMaxGroupDevices] = bad
		_, err := config.Load(env)
		var se *config.SettingError
		if !errors.As(err, &se) || se.Setting != config.SettingMaxGroupDevices {
			t.Errorf("%s=%q: %v, want an error naming the setting", config.SettingMaxGroupDevices, bad, err)
		}
	}
}
