package main

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"dpsdeprov/azure/sas"
	"dpsdeprov/cleanup"
	"dpsdeprov/config"
	"dpsdeprov/deprovision"
	"dpsdeprov/handler"
)

// settings are the app's settings as config read them, and what each package built of them
// before the handler listens. config reads values and knows no package of the app; the checks
// only a package can make (a connection string its client cannot use, an intent name the
// handler does not know) happen here, and stop start-up naming the setting, as config's do.
type settings struct {
	*config.Config
	// dpsEndpoint is DPS's https://{host}, from DPS_ENDPOINT or the connection string.
	dpsEndpoint string
	// hubHosts are the managed hubs' host names, from IOT_HUBS or the connection strings.
	hubHosts []string
	// hubConnections holds each hub's connection string by host name (connection strings only).
	hubConnections map[string]config.Secret
	admission      handler.Admission
	access         handler.Access
	guard          deprovision.Guardrails
	cleanup        cleanup.Options
}

// newSettings builds the packages' own types from cfg, reporting every refusal at once.
func newSettings(cfg *config.Config) (*settings, error) {
	s := &settings{Config: cfg, dpsEndpoint: cfg.DPS.Endpoint, hubHosts: cfg.Hubs.Hosts, hubConnections: map[string]config.Secret{}}
	var errs []error
	bad := func(setting string, err error) {
		errs = append(errs, &config.SettingError{Setting: setting, Problem: err.Error()})
	}
	if cs := cfg.DPS.ConnectionString; cfg.DPS.Credential == config.CredentialConnectionString && cs != "" {
		parsed, err := sas.ParseConnectionString(cs.Reveal())
		switch {
		case err != nil:
			bad(config.SettingDPSConnection, err)
		case s.dpsEndpoint != "" && !strings.EqualFold(s.dpsEndpoint, "https://"+parsed.HostName):
			bad(config.SettingDPSEndpoint, fmt.Errorf("%q names another host than %s (%s); drop one of them", s.dpsEndpoint, config.SettingDPSConnection, parsed.HostName))
		default:
			s.dpsEndpoint = "https://" + parsed.HostName
		}
	}
	if cfg.Hubs.Credential == config.CredentialConnectionString {
		s.hubHosts = nil
		for _, name := range sortedKeys(cfg.Hubs.ConnectionStrings) {
			parsed, err := sas.ParseConnectionString(cfg.Hubs.ConnectionStrings[name].Reveal())
			if err != nil {
				bad(name, err)
				continue
			}
			host := strings.ToLower(parsed.HostName)
			if _, dup := s.hubConnections[host]; dup {
				bad(name, fmt.Errorf("names hub %s, which another %s<NAME> setting names too", host, config.SettingHubConnection))
				continue
			}
			s.hubConnections[host] = cfg.Hubs.ConnectionStrings[name]
			s.hubHosts = append(s.hubHosts, host)
		}
	}

	// Events naming a hub outside this list are refused before any call.
	admission, err := handler.NewAdmission(cfg.Admission, s.hubHosts)
	if err != nil {
		errs = append(errs, err)
	}
	s.admission = admission
	if s.access, err = handler.NewAccess(cfg.Auth); err != nil {
		errs = append(errs, err)
	}
	s.guard = deprovision.Guardrails{MaxGroupDevices: cfg.Guard.MaxGroupDevices, MaxDestructivePerHour: cfg.Guard.MaxDestructivePerHour}
	s.cleanup = cleanupOptions(cfg, s.hubHosts)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return s, nil
}

// loadSettings reads the settings from environ ("NAME=value") and builds the app's parts of them.
func loadSettings(environ []string) (*settings, error) {
	cfg, err := config.FromEnviron(environ)
	if err != nil {
		return nil, err
	}
	return newSettings(cfg)
}

// summary describes the settings for the start-up log line: no secrets.
func (s *settings) summary() []any {
	return append([]any{"dps", s.dpsEndpoint, "hubs", s.hubHosts}, s.Summary()...)
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
