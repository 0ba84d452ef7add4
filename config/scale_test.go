package config_test

import (
	"errors"
	"testing"

	"dpsdeprov/config"
)

func TestScaleSettings(t *testing.T) {
	c, err := config.Load(valid())
	if err != nil {
		t.Fatal(err)
	}
	if c.Scale.HubOpsPerMinute != config.DefaultHubOpsPerMinute || c.Scale.MaxDequeueCount != config.DefaultMaxDequeueCount || c.Scale.HubOpsPerMinuteByHub != nil {
		t.Fatalf("defaults: %+v", c.Scale)
	}
	env := valid()
	env[config.SettingHubOpsPerMinute] = "6000, BigHub.azure-devices.net=5000"
	env[config.SettingGroupWorkMaxDequeue] = "8"
	if c, err = config.Load(env); err != nil {
		t.Fatal(err)
	}
	if c.Scale.HubOpsPerMinute != 6000 || c.Scale.HubOpsPerMinuteByHub["bighub.azure-devices.net"] != 5000 || c.Scale.MaxDequeueCount != 8 {
		t.Fatalf("parsed: %+v", c.Scale)
	}
	env[config.SettingHubOpsPerMinute] = "OFF"
	if c, err = config.Load(env); err != nil || c.Scale.HubOpsPerMinute != 0 {
		t.Fatalf("off: %v %+v", err, c)
	}
	for setting, bad := range map[string][]string{
		config.SettingHubOpsPerMinute:     {"0", "fast", "100,200", "100,=5", "100,hub1=-1"},
		config.SettingGroupWorkMaxDequeue: {"0", "five"},
		config.SettingDPSOpsPerMinute:     {"0", "-1", "lots"},
		config.SettingDPSOpsShare:         {"0", "1.5", "-0.2", "half", "120%"},
		config.SettingDPSBulkCost:         {"items", "free"},
	} {
		for _, v := range bad {
			env := valid()
			env[setting] = v
			_, err := config.Load(env)
			var se *config.SettingError
			if !errors.As(err, &se) || se.Setting != setting {
				t.Errorf("%s=%q: %v, want an error naming the setting", setting, v, err)
			}
		}
	}
}

func TestDPSBudgetSettings(t *testing.T) {
	c, err := config.Load(valid())
	if err != nil {
		t.Fatal(err)
	}
	if c.Scale.DPSOpsPerMinute != 1000 || c.Scale.DPSOpsShare != 0.8 || c.Scale.DPSBulkCost != config.DPSBulkPerItem || c.Scale.DPSBudget() != 800 {
		t.Fatalf("defaults: %+v, budget %d", c.Scale, c.Scale.DPSBudget())
	}
	env := valid()
	env[config.SettingDPSOpsPerMinute] = "20000"
	env[config.SettingDPSOpsShare] = "50%"
	env[config.SettingDPSBulkCost] = "Call"
	if c, err = config.Load(env); err != nil {
		t.Fatal(err)
	}
	if c.Scale.DPSBudget() != 10000 || c.Scale.DPSBulkCost != config.DPSBulkPerCall {
		t.Fatalf("parsed: %+v, budget %d", c.Scale, c.Scale.DPSBudget())
	}
	env[config.SettingDPSOpsPerMinute] = "off"
	if c, err = config.Load(env); err != nil || c.Scale.DPSBudget() != 0 {
		t.Fatalf("off: %v, budget %d", err, c.Scale.DPSBudget())
	}
}
