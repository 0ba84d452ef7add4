package deprovision_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	d "dpsdeprov/deprovision"
	"dpsdeprov/deprovision/fake"
)

const hub1, hub2 = "hub1.azure-devices.net", "hub2.azure-devices.net"

var (
	root   = fake.NewCA("contoso-root")
	inter  = root.Issue("contoso-intermediate", true)
	leaf   = inter.Issue("sensor-042", false)
	other  = fake.NewCA("fabrikam-root")
	direct = root.Issue("sensor-043", false) // signed by the root itself
	t0     = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
)

func individual(att d.AttestationType, enabled bool) *d.Resolved {
	r := &d.Resolved{Kind: d.KindIndividual, RegistrationID: "sensor-042", Attestation: att,
		Enrollment:   &d.Enrollment{RegistrationID: "sensor-042", Attestation: att, Enabled: enabled},
		Registration: &d.Registration{RegistrationID: "sensor-042", DeviceID: "sensor-042", AssignedHub: hub1},
		Hub:          hub1, DeviceID: "sensor-042",
		Device: &d.Device{Hub: hub1, DeviceID: "sensor-042", Enabled: true}}
	if att == d.AttestationX509 {
		r.Enrollment.ClientCerts = []d.CertInfo{leaf.Info()}
	}
	return r
}

func member(att d.AttestationType, withCert bool, group *d.Group) *d.Resolved {
	r := &d.Resolved{Kind: d.KindGroupMember, RegistrationID: "sensor-042", Attestation: att, Group: group,
		Registration: &d.Registration{RegistrationID: "sensor-042", DeviceID: "sensor-042", AssignedHub: hub1},
		Hub:          hub1, DeviceID: "sensor-042",
		Device: &d.Device{Hub: hub1, DeviceID: "sensor-042", Enabled: true}}
	if withCert {
		i := leaf.Info()
		r.Leaf = &i
	}
	return r
}

func x509Group(id string, enabled bool, ca *fake.Cert) *d.Group {
	return &d.Group{ID: id, Attestation: d.AttestationX509, Enabled: enabled, SigningCerts: []d.CertInfo{ca.Info()}}
}

func req(i d.Intent) d.Request {
	return d.Request{EventID: "e1", Source: "test", Intent: i, RegistrationID: "sensor-042", EventTime: t0.Add(time.Hour)}
}

func prior(i d.Intent, blocking bool, hubAction string) *d.DeviceState {
	return &d.DeviceState{RegistrationID: "sensor-042", Intent: i, OperationID: "op-prev", EventTime: t0,
		BlockingEnrollment: blocking, HubAction: hubAction, Hub: hub1, DeviceID: "sensor-042"}
}

func kinds(p *d.Plan) []d.StepKind {
	var out []d.StepKind
	for _, s := range p.Steps {
		out = append(out, s.Kind)
	}
	return out
}

type K = []d.StepKind

const (
	disEn   = d.StepDisableEnrollment
	enEn    = d.StepEnableEnrollment
	delEn   = d.StepDeleteEnrollment
	block   = d.StepCreateBlockingEnrollment
	unblock = d.StepDeleteBlockingEnrollment
	retgt   = d.StepRetargetEnrollment
	moveEn  = d.StepCreateMoveEnrollment
	delReg  = d.StepDeleteRegistration
	disGrp  = d.StepDisableGroup
	delGrp  = d.StepDeleteGroup
	members = d.StepGroupMembers
	delRegs = d.StepDeleteGroupRegistrations
	disDev  = d.StepDisableDevice
	enDev   = d.StepEnableDevice
	delDev  = d.StepDeleteDevice
	await   = d.StepAwaitMove
)

// TestPolicyMatrix has one case per row of docs/policy.md (and per invariant under it).
func TestPolicyMatrix(t *testing.T) {
	type tc struct {
		name    string
		r       *d.Resolved
		req     d.Request
		prior   *d.DeviceState
		want    K
		path    string
		refused string // substring of the refusal reason
		note    string // substring of a note
		check   func(t *testing.T, p *d.Plan)
	}
	withAction := func(r d.Request, a d.Action) d.Request { r.Action = a; return r }
	withCert := func(r d.Request, pem string) d.Request { r.CertificatePEM = pem; return r }
	withTarget := func(r d.Request, h string) d.Request { r.TargetHub = h; return r }
	at := func(r d.Request, tm time.Time) d.Request { r.EventTime = tm; return r }
	withGroups := func(r *d.Resolved, gs ...*d.Group) *d.Resolved { r.Groups = gs; return r }
	noHub := func(r *d.Resolved) *d.Resolved { r.Hub, r.Registration, r.Device = "", nil, nil; return r }
	withMembership := func(r *d.Resolved, m d.Membership) *d.Resolved { r.Membership = m; return r }
	skGroup := &d.Group{ID: "sk-group", Attestation: d.AttestationSymmetricKey, Enabled: true}
	groupReq := func(i d.Intent) d.Request {
		return d.Request{EventID: "g1", Source: "test", Intent: i, EnrollmentGroupID: "g"}
	}
	grp := func(g *d.Group, all ...*d.Group) *d.Resolved {
		return &d.Resolved{Kind: d.KindGroup, Group: g, Attestation: g.Attestation, Groups: all}
	}

	var cases []tc
	// Row: individual TPM or symmetric key, lost/stolen/compromised.
	for _, att := range []d.AttestationType{d.AttestationTPM, d.AttestationSymmetricKey} {
		for _, i := range []d.Intent{d.IntentLost, d.IntentStolen, d.IntentCompromised} {
			cases = append(cases, tc{name: "individual " + string(att) + " " + string(i), r: individual(att, true), req: req(i),
				want: K{disEn, disDev}, path: "individual/" + string(att) + "/revoke",
				check: func(t *testing.T, p *d.Plan) {
					if got := p.Steps[1].Params[d.ParamStatusReason]; !strings.Contains(got, string(i)) {
						t.Errorf("statusReason %q does not name the intent", got)
					}
				}})
		}
		// Row: individual TPM or symmetric key, sold/retired.
		for _, i := range []d.Intent{d.IntentSold, d.IntentRetired} {
			cases = append(cases, tc{name: "individual " + string(att) + " " + string(i), r: individual(att, true), req: req(i),
				want: K{delEn, delReg, delDev}, path: "individual/" + string(att) + "/remove"})
		}
	}
	// Row: individual X.509, sold/retired: delete only when no enabled group covers the chain.
	cases = append(cases,
		tc{name: "x509 sold, no group", r: withGroups(individual(d.AttestationX509, true)), req: req(d.IntentSold),
			want: K{delEn, delReg, delDev}, path: "individual/x509/remove"},
		tc{name: "x509 sold, group on the issuer (info only)", r: withGroups(individual(d.AttestationX509, true), x509Group("g-inter", true, inter)),
			req: req(d.IntentSold), want: K{disEn, delReg, delDev}, check: reasonHas(0, "g-inter")},
		tc{name: "x509 retired, disabled group on the issuer", r: withGroups(individual(d.AttestationX509, true), x509Group("g-inter", false, inter)),
			req: req(d.IntentRetired), want: K{delEn, delReg, delDev}},
		tc{name: "x509 retired, unrelated group, no chain: cannot rule out", r: withGroups(individual(d.AttestationX509, true), x509Group("g-other", true, other)),
			req: req(d.IntentRetired), want: K{disEn, delReg, delDev}, check: reasonHas(0, "full certificate chain")},
		tc{name: "x509 retired, unrelated group, verified chain to the root", r: withGroups(individual(d.AttestationX509, true), x509Group("g-other", true, other)),
			req: withCert(req(d.IntentRetired), leaf.ChainPEM), want: K{delEn, delReg, delDev}, check: reasonHas(0, "self-signed root")},
		tc{name: "x509 retired, root group above the intermediate (verified chain)", r: withGroups(individual(d.AttestationX509, true), x509Group("g-root", true, root)),
			req: withCert(req(d.IntentRetired), leaf.ChainPEM), want: K{disEn, delReg, delDev}, check: reasonHas(0, "g-root")},
		tc{name: "x509 retired, group with a DPS-registered CA", r: withGroups(individual(d.AttestationX509, true),
			&d.Group{ID: "g-ca", Attestation: d.AttestationX509, Enabled: true, CAReferences: []string{"ca1"}}),
			req: req(d.IntentRetired), want: K{disEn, delReg, delDev}, check: reasonHas(0, "g-ca")},
		tc{name: "x509 retired, forged chain is not trusted", r: withGroups(individual(d.AttestationX509, true), x509Group("g-other", true, other)),
			// The bundle claims a chain to fabrikam's root, but no signature links it to the leaf.
			req: withCert(req(d.IntentRetired), leaf.PEM+other.PEM), want: K{disEn, delReg, delDev}},
	)
	// Row: individual X.509, lost/stolen/compromised.
	for _, i := range []d.Intent{d.IntentLost, d.IntentStolen, d.IntentCompromised} {
		cases = append(cases, tc{name: "x509 " + string(i), r: individual(d.AttestationX509, true), req: req(i),
			want: K{disEn, disDev}, path: "individual/x509/revoke"})
	}
	// Rows: group members, every revoking intent.
	for _, i := range []d.Intent{d.IntentLost, d.IntentStolen, d.IntentCompromised} {
		cases = append(cases,
			tc{name: "x509 member with cert " + string(i), r: member(d.AttestationX509, true, nil), req: withCert(req(i), leaf.PEM),
				want: K{block, disDev}, path: "group-member/x509/revoke", check: paramIs(0, d.ParamAttestation, "x509")},
			tc{name: "x509 member without cert " + string(i), r: member(d.AttestationX509, false, nil), req: req(i),
				want: K{block, disDev}, check: paramIs(0, d.ParamAttestation, "symmetricKey")},
			tc{name: "sk member " + string(i), r: member(d.AttestationSymmetricKey, false, skGroup), req: req(i),
				want: K{block, disDev}, path: "group-member/symmetricKey/revoke", check: paramIs(0, d.ParamAttestation, "symmetricKey")},
		)
	}
	for _, i := range []d.Intent{d.IntentSold, d.IntentRetired} {
		cases = append(cases,
			tc{name: "x509 member " + string(i), r: member(d.AttestationX509, true, nil), req: withCert(req(i), leaf.PEM),
				want: K{block, delReg, delDev}, path: "group-member/x509/remove", note: "never delete the blocking enrollment"},
			tc{name: "sk member " + string(i), r: member(d.AttestationSymmetricKey, false, skGroup), req: req(i),
				want: K{block, delReg, delDev}},
		)
	}
	cases = append(cases,
		tc{name: "x509 member, cert CN is not the registration id", r: func() *d.Resolved {
			r := member(d.AttestationX509, true, nil)
			i := direct.Info()
			r.Leaf = &i
			return r
		}(), req: withCert(req(d.IntentLost), direct.PEM), want: K{block, disDev}, note: "is not the registration id",
			check: paramIs(0, d.ParamAttestation, "symmetricKey")},
		tc{name: "member never provisioned (group hint only)", r: noHub(member(d.AttestationSymmetricKey, false, skGroup)), req: req(d.IntentLost),
			want: K{block}, note: "no assigned hub"},
		// Requested actions, where policy allows a choice.
		tc{name: "compromised with action delete", r: individual(d.AttestationTPM, true), req: withAction(req(d.IntentCompromised), d.ActionDelete),
			want: K{disEn, delDev}},
		tc{name: "lost with action delete is refused", r: individual(d.AttestationTPM, true), req: withAction(req(d.IntentLost), d.ActionDelete),
			refused: "reversible"},
		tc{name: "retired with action disable", r: individual(d.AttestationTPM, true), req: withAction(req(d.IntentRetired), d.ActionDisable),
			want: K{delEn, delReg, disDev}},
		tc{name: "recovered with an action is refused", r: individual(d.AttestationTPM, false), req: withAction(req(d.IntentRecovered), d.ActionDisable),
			prior: prior(d.IntentLost, false, "disabled"), refused: "takes no action"},
	)
	// Rows: moved.
	cases = append(cases,
		tc{name: "individual moved", r: individual(d.AttestationTPM, true), req: withTarget(req(d.IntentMoved), hub2),
			want: K{retgt, await}, path: "individual/tpm/move", check: func(t *testing.T, p *d.Plan) {
				paramIs(0, d.ParamTargetHub, hub2)(t, p)
				paramIs(1, d.ParamTargetHub, hub2)(t, p)
				paramIs(1, d.ParamHub, hub1)(t, p)
				paramIs(1, d.ParamAction, string(d.ActionDelete))(t, p)
			}},
		tc{name: "individual never provisioned moved", r: noHub(individual(d.AttestationTPM, true)), req: withTarget(req(d.IntentMoved), hub2),
			want: K{retgt}, note: "no hub identity to leave"},
		tc{name: "moved to its own hub", r: individual(d.AttestationTPM, true), req: withTarget(req(d.IntentMoved), hub1), refused: "already assigned"},
		tc{name: "x509 member moved", r: withGroups(member(d.AttestationX509, true, nil), x509Group("g-inter", true, inter)), req: withTarget(withCert(req(d.IntentMoved), leaf.PEM), hub2),
			want: K{moveEn, await}, path: "group-member/x509/move"},
		tc{name: "x509 member moved, its group above the issuer (verified chain)", r: withGroups(member(d.AttestationX509, true, nil), x509Group("g-root", true, root)),
			req: withTarget(withCert(req(d.IntentMoved), leaf.ChainPEM), hub2), want: K{moveEn, await}},
		tc{name: "x509 member moved, its group disabled", r: withGroups(member(d.AttestationX509, true, nil), x509Group("g-root", true, root), x509Group("g-inter", false, inter)),
			req: withTarget(withCert(req(d.IntentMoved), leaf.ChainPEM), hub2), refused: "group g-inter, which admits sensor-042, is disabled"},
		tc{name: "x509 member moved, no group known in the leaf's chain", r: withGroups(member(d.AttestationX509, true, nil), x509Group("g-root", true, root)),
			req: withTarget(withCert(req(d.IntentMoved), leaf.PEM), hub2), refused: "cannot tell"},
		tc{name: "x509 member moved, a disabled group trusts a DPS-registered CA", r: withGroups(member(d.AttestationX509, true, nil), x509Group("g-inter", true, inter),
			&d.Group{ID: "by-ref", Attestation: d.AttestationX509, CAReferences: []string{"ca1"}}),
			req: withTarget(withCert(req(d.IntentMoved), leaf.PEM), hub2), refused: "disabled group trusting a DPS-registered CA"},
		tc{name: "sk member moved, its group disabled", r: withMembership(member(d.AttestationSymmetricKey, false, &d.Group{ID: "sk-off", Attestation: d.AttestationSymmetricKey}), d.MemberConfirmed),
			req: withTarget(req(d.IntentMoved), hub2), refused: "group sk-off is disabled"},
		tc{name: "sk member moved", r: withMembership(member(d.AttestationSymmetricKey, false, skGroup), d.MemberConfirmed), req: withTarget(req(d.IntentMoved), hub2),
			want: K{moveEn, await}, path: "group-member/symmetricKey/move", check: paramIs(0, d.ParamGroupID, "sk-group")},
		tc{name: "sk member moved, not the named group's member", r: withMembership(member(d.AttestationSymmetricKey, false, skGroup), d.MemberMismatch),
			req: withTarget(req(d.IntentMoved), hub2), refused: "is not a member of group sk-group"},
		tc{name: "sk member moved, membership cannot be checked", r: withMembership(member(d.AttestationSymmetricKey, false, skGroup), d.MemberUnknown),
			req: withTarget(req(d.IntentMoved), hub2), refused: "cannot confirm"},
		tc{name: "sk member moved without group", r: member(d.AttestationSymmetricKey, false, nil), req: withTarget(req(d.IntentMoved), hub2),
			refused: "needs enrollmentGroupId"},
		tc{name: "member of unknown attestation moved without cert", r: member("", false, nil), req: withTarget(req(d.IntentMoved), hub2),
			refused: "needs its leaf certificate"},
		tc{name: "moved with action disable", r: individual(d.AttestationTPM, true), req: withAction(withTarget(req(d.IntentMoved), hub2), d.ActionDisable),
			want: K{retgt, await}, check: paramIs(1, d.ParamAction, string(d.ActionDisable))},
	)
	// Row: recovered.
	cases = append(cases,
		tc{name: "individual recovered after lost", r: individual(d.AttestationTPM, false), req: req(d.IntentRecovered),
			prior: prior(d.IntentLost, false, "disabled"), want: K{enEn, enDev}, path: "individual/recover"},
		tc{name: "member recovered after stolen", r: func() *d.Resolved {
			r := individual(d.AttestationSymmetricKey, false) // the blocking enrollment
			return r
		}(), req: req(d.IntentRecovered), prior: prior(d.IntentStolen, true, "disabled"), want: K{unblock, enDev}, path: "group-member/recover"},
		tc{name: "recovered without a record", r: individual(d.AttestationTPM, false), req: req(d.IntentRecovered), refused: "nothing to recover"},
		tc{name: "recovered twice", r: individual(d.AttestationTPM, true), req: req(d.IntentRecovered),
			prior: prior(d.IntentRecovered, false, "enabled"), refused: "nothing to recover"},
		tc{name: "recovered after moved", r: individual(d.AttestationTPM, true), req: req(d.IntentRecovered),
			prior: prior(d.IntentMoved, false, "deleted"), refused: "not a lost or stolen"},
	)
	// Rows: whole groups.
	cases = append(cases,
		tc{name: "group-compromised", r: grp(x509Group("g", true, root)), req: groupReq(d.IntentGroupCompromised),
			want: K{disGrp, members}, path: "group/x509/compromised", check: paramIs(1, d.ParamAction, "disable")},
		tc{name: "group-compromised, delete asked", r: grp(x509Group("g", true, root)), req: withAction(groupReq(d.IntentGroupCompromised), d.ActionDelete),
			want: K{disGrp, members}, check: paramIs(1, d.ParamAction, "delete")},
		tc{name: "group-retired, symmetric key", r: grp(&d.Group{ID: "g", Attestation: d.AttestationSymmetricKey, Enabled: true}), req: groupReq(d.IntentGroupRetired),
			want: K{disGrp, members, delRegs, delGrp}, check: paramIs(1, d.ParamAction, "delete")},
		tc{name: "group-retired, self-signed root, other groups unrelated", r: grp(x509Group("g", true, root), x509Group("g", true, root), x509Group("o", true, other)),
			req: groupReq(d.IntentGroupRetired), want: K{disGrp, members, delRegs, delGrp}},
		tc{name: "group-retired, signed by another enabled group", r: grp(x509Group("g", true, inter), x509Group("g", true, inter), x509Group("g-root", true, root)),
			req: groupReq(d.IntentGroupRetired), want: K{disGrp, members, delRegs}, note: "kept, disabled"},
		tc{name: "group-retired, the other group is disabled", r: grp(x509Group("g", true, inter), x509Group("g", true, inter), x509Group("g-root", false, root)),
			req: groupReq(d.IntentGroupRetired), want: K{disGrp, members, delRegs, delGrp}},
		tc{name: "group-retired, another enabled group has the same CA", r: grp(x509Group("g", true, root), x509Group("g", true, root), x509Group("twin", true, root)),
			req: groupReq(d.IntentGroupRetired), want: K{disGrp, members, delRegs}, note: "twin"},
		tc{name: "group missing", r: &d.Resolved{Kind: d.KindUnknown}, req: groupReq(d.IntentGroupRetired), refused: "does not exist"},
		// A DPS-registered CA may be the retired group's own root: the group stays.
		tc{name: "group-retired, self-signed root, another group trusts a DPS-registered CA", r: grp(x509Group("g", true, root), x509Group("g", true, root),
			&d.Group{ID: "by-ref", Attestation: d.AttestationX509, Enabled: true, CAReferences: []string{"ca1"}}),
			req: groupReq(d.IntentGroupRetired), want: K{disGrp, members, delRegs}, note: "by-ref"},
		// After a symmetric-key group's compromise, enrollments keyed from its keys go too.
		tc{name: "group-compromised, symmetric key", r: grp(&d.Group{ID: "g", Attestation: d.AttestationSymmetricKey, Enabled: true}), req: groupReq(d.IntentGroupCompromised),
			want: K{disGrp, d.StepDisableDerivedEnrollments, members}, check: paramIs(1, d.ParamGroupID, "g")},
		tc{name: "group-retired, symmetric key, moved members keep their enrollments", r: grp(&d.Group{ID: "g", Attestation: d.AttestationSymmetricKey, Enabled: true}),
			req: groupReq(d.IntentGroupRetired), want: K{disGrp, members, delRegs, delGrp}},
	)
	// Sold and retired of an individual enrollment that a group could stand behind: what DPS
	// and the hub show (evidence.go) decides between delete and disable.
	evidence := func(r *d.Resolved, e d.Evidence, gs ...*d.Group) *d.Resolved { r.Evidence, r.Groups = &e, gs; return r }
	disabledBy := func(i d.Intent) *d.DeviceState {
		p := prior(i, false, "disabled")
		p.EnrollmentAction = "disabled"
		return p
	}
	x509Grp := x509Group("g-x", true, other)
	cases = append(cases,
		tc{name: "x509 retired, complete chain, a group trusts a DPS-registered CA", r: withGroups(individual(d.AttestationX509, true),
			&d.Group{ID: "by-ref", Attestation: d.AttestationX509, Enabled: true, CAReferences: []string{"ca1"}}),
			req: withCert(req(d.IntentRetired), leaf.ChainPEM), want: K{disEn, delReg, delDev}, check: reasonHas(0, "by-ref")},
		tc{name: "sk sold, keys derived from an enabled group", r: evidence(individual(d.AttestationSymmetricKey, true),
			d.Evidence{Group: d.Cover{Covered: true, Group: "sk-group", Reason: "derived from sk-group"}}, skGroup),
			req: req(d.IntentSold), want: K{disEn, delReg, delDev}, check: reasonHas(0, "derived from sk-group")},
		tc{name: "tpm sold, hub identity of an X.509 group member", r: evidence(individual(d.AttestationTPM, true),
			d.Evidence{Group: d.Cover{Covered: true, Reason: "certificateAuthority"}}, x509Grp),
			req: req(d.IntentSold), want: K{disEn, delReg, delDev}, check: reasonHas(0, "certificateAuthority")},
		tc{name: "sk sold, disabled by hand while a group is enabled", r: evidence(individual(d.AttestationSymmetricKey, false), d.Evidence{}, x509Grp),
			req: req(d.IntentSold), want: K{disEn, delReg, delDev}, check: reasonHas(0, "blocked by hand")},
		tc{name: "sk sold, disabled by this system (lost before)", r: evidence(individual(d.AttestationSymmetricKey, false), d.Evidence{}, skGroup),
			prior: disabledBy(d.IntentLost), req: at(req(d.IntentSold), t0.Add(2*time.Hour)), want: K{delEn, delReg, delDev}},
		tc{name: "sk sold, disabled, the identity carries its own keys", r: evidence(individual(d.AttestationSymmetricKey, false), d.Evidence{Own: true}, skGroup),
			req: req(d.IntentSold), want: K{delEn, delReg, delDev}, check: reasonHas(0, "own keys")},
		tc{name: "sk retired, disabled, no group enabled", r: evidence(individual(d.AttestationSymmetricKey, false), d.Evidence{}, &d.Group{ID: "off", Attestation: d.AttestationSymmetricKey}),
			req: req(d.IntentRetired), want: K{delEn, delReg, delDev}, check: reasonHas(0, "no enrollment group is enabled")},
		tc{name: "tpm sold, enabled, groups enabled, no evidence", r: evidence(individual(d.AttestationTPM, true), d.Evidence{}, skGroup, x509Grp),
			req: req(d.IntentSold), want: K{delEn, delReg, delDev}},
	)
	// Invariants and precedence.
	cases = append(cases,
		tc{name: "unknown device", r: &d.Resolved{Kind: d.KindUnknown, RegistrationID: "x"}, req: req(d.IntentLost), refused: "unknown device"},
		tc{name: "blocking enrollment is never deleted by sold", r: individual(d.AttestationSymmetricKey, false), req: req(d.IntentSold),
			prior: prior(d.IntentLost, true, "disabled"), want: K{disEn, delReg, delDev}, path: "group-member/blocked/remove"},
		tc{name: "a moved group member's enrollment is never deleted", r: individual(d.AttestationSymmetricKey, true), req: req(d.IntentRetired),
			prior: func() *d.DeviceState {
				p := prior(d.IntentMoved, false, "deleted")
				p.GroupMember = true
				return p
			}(), want: K{disEn, delReg, delDev}, path: "group-member/blocked/remove"},
		tc{name: "an individual enrollment beside an enabled named group is not deleted", r: func() *d.Resolved {
			r := individual(d.AttestationSymmetricKey, true)
			r.Group = skGroup
			return r
		}(), req: req(d.IntentRetired), want: K{disEn, delReg, delDev}},
		tc{name: "compromised keeps evidence by default", r: individual(d.AttestationTPM, true), req: req(d.IntentCompromised), want: K{disEn, disDev}},
		tc{name: "compromised is never undone by recovered", r: individual(d.AttestationTPM, false), req: req(d.IntentRecovered),
			prior: prior(d.IntentCompromised, false, "disabled"), refused: "never undoes a compromise"},
		tc{name: "compromised outranks lost", r: individual(d.AttestationTPM, false), req: req(d.IntentLost),
			prior: prior(d.IntentCompromised, false, "disabled"), refused: "outranks"},
		tc{name: "compromised device is not moved", r: individual(d.AttestationTPM, false), req: withTarget(req(d.IntentMoved), hub2),
			prior: prior(d.IntentCompromised, false, "disabled"), refused: "not moved"},
		tc{name: "lost device is not moved", r: individual(d.AttestationTPM, false), req: withTarget(req(d.IntentMoved), hub2),
			prior: prior(d.IntentLost, false, "disabled"), refused: "device-recovered"},
		tc{name: "compromised after lost", r: individual(d.AttestationTPM, false), req: req(d.IntentCompromised),
			prior: prior(d.IntentLost, false, "disabled"), want: K{disEn, disDev}},
		tc{name: "sold is final for recovered", r: individual(d.AttestationTPM, false), req: req(d.IntentRecovered),
			prior: prior(d.IntentSold, false, "deleted"), refused: "final"},
		tc{name: "retired is final for lost", r: individual(d.AttestationTPM, false), req: req(d.IntentLost),
			prior: prior(d.IntentRetired, false, "deleted"), refused: "final"},
		tc{name: "sold while lost", r: individual(d.AttestationTPM, false), req: req(d.IntentSold),
			prior: prior(d.IntentLost, false, "disabled"), want: K{delEn, delReg, delDev}},
		tc{name: "compromised after sold finds nothing", r: &d.Resolved{Kind: d.KindUnknown, RegistrationID: "sensor-042"}, req: req(d.IntentCompromised),
			prior: prior(d.IntentSold, false, "deleted"), want: nil, note: "nothing is left to revoke"},
		tc{name: "stale lost", r: individual(d.AttestationTPM, true), req: at(req(d.IntentLost), t0.Add(-time.Minute)),
			prior: prior(d.IntentRecovered, false, "enabled"), refused: "stale event"},
		tc{name: "stale compromised still outranks lost", r: individual(d.AttestationTPM, false), req: at(req(d.IntentCompromised), t0.Add(-time.Minute)),
			prior: prior(d.IntentLost, false, "disabled"), want: K{disEn, disDev}},
		tc{name: "a lock-only row is no record", r: individual(d.AttestationTPM, true), req: req(d.IntentRecovered),
			prior: &d.DeviceState{RegistrationID: "sensor-042", PendingOperation: "op-x"}, refused: "nothing to recover"},
	)

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := d.PlanFor(c.r, c.req, c.prior)
			if c.refused != "" {
				r, ok := d.AsRefusal(err)
				if !ok {
					t.Fatalf("want a refusal containing %q, got plan %v, err %v", c.refused, p, err)
				}
				if !strings.Contains(r.Reason, c.refused) {
					t.Fatalf("refusal %q does not contain %q", r.Reason, c.refused)
				}
				return
			}
			if err != nil {
				t.Fatalf("PlanFor: %v", err)
			}
			if got := kinds(p); !slices.Equal(got, c.want) {
				t.Fatalf("steps %v, want %v\n%s", got, c.want, p)
			}
			if c.path != "" && p.Path != c.path {
				t.Errorf("path %q, want %q", p.Path, c.path)
			}
			if c.note != "" && !slices.ContainsFunc(p.Notes, func(n string) bool { return strings.Contains(n, c.note) }) {
				t.Errorf("no note contains %q: %q", c.note, p.Notes)
			}
			checkInvariants(t, p, c.req)
			if c.check != nil {
				c.check(t, p)
			}
		})
	}
}

// checkInvariants holds for every plan, whatever the row.
func checkInvariants(t *testing.T, p *d.Plan, req d.Request) {
	t.Helper()
	seenHub := false
	for i, s := range p.Steps {
		if s.Reason == "" {
			t.Errorf("step %d (%s) has no reason", i+1, s.Kind)
		}
		// A group's registration records and the group itself go after its members' hub
		// identities (they are the list of members), which is safe: the group was disabled first.
		cleanup := (s.Kind == d.StepDeleteGroupRegistrations || s.Kind == d.StepDeleteGroup) && p.Steps[0].Kind == d.StepDisableGroup
		if s.Kind.DPSStep() && seenHub && !cleanup {
			t.Errorf("DPS step %s comes after a hub step:\n%s", s.Kind, p)
		}
		if !s.Kind.DPSStep() {
			seenHub = true
		}
		if s.Kind == d.StepDeleteBlockingEnrollment && req.Intent != d.IntentRecovered {
			t.Errorf("%s deletes a blocking enrollment", req.Intent)
		}
		if req.Intent == d.IntentCompromised && req.Action == d.ActionDefault &&
			(s.Kind == d.StepDeleteDevice || s.Kind == d.StepDeleteEnrollment || s.Kind == d.StepDeleteRegistration) {
			t.Errorf("compromised deletes evidence by default: %s", s.Kind)
		}
		for k, v := range s.Params {
			if strings.Contains(strings.ToLower(k), "key") || strings.Contains(v, "BEGIN") {
				t.Errorf("step %d carries secret or certificate material in %s", i+1, k)
			}
		}
	}
	if p.String() == "" || !strings.Contains(p.String(), p.Path) {
		t.Errorf("String() does not show the path")
	}
}

func reasonHas(i int, s string) func(*testing.T, *d.Plan) {
	return func(t *testing.T, p *d.Plan) {
		t.Helper()
		if !strings.Contains(p.Steps[i].Reason, s) {
			t.Errorf("step %d reason %q does not contain %q", i+1, p.Steps[i].Reason, s)
		}
	}
}

func paramIs(i int, k, v string) func(*testing.T, *d.Plan) {
	return func(t *testing.T, p *d.Plan) {
		t.Helper()
		if got := p.Steps[i].Params[k]; got != v {
			t.Errorf("step %d param %s = %q, want %q", i+1, k, got, v)
		}
	}
}

func TestValidate(t *testing.T) {
	ok := d.Request{EventID: "e", Source: "s", Intent: d.IntentLost, RegistrationID: "dev-1"}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid request refused: %v", err)
	}
	for _, c := range []struct {
		mod  func(*d.Request)
		want string
	}{
		{func(r *d.Request) { r.EventID = "" }, "event id"},
		{func(r *d.Request) { r.Intent = "exploded" }, "intent"},
		{func(r *d.Request) { r.RegistrationID = "" }, "needs registrationId"},
		{func(r *d.Request) { r.RegistrationID = "a/b" }, "only letters"},
		{func(r *d.Request) { r.RegistrationID = "-ab" }, "starts or ends"},
		{func(r *d.Request) { r.RegistrationID = strings.Repeat("a", 129) }, "128"},
		{func(r *d.Request) { r.Action = "explode" }, "action"},
		{func(r *d.Request) { r.Intent = d.IntentMoved }, "targetHub"},
		{func(r *d.Request) { r.Intent = d.IntentGroupRetired }, "enrollmentGroupId"},
	} {
		r := ok
		c.mod(&r)
		err := r.Validate()
		if ref, isRef := d.AsRefusal(err); !isRef || !strings.Contains(ref.Reason, c.want) {
			t.Errorf("Validate(%+v) = %v, want a refusal naming %q", r, err, c.want)
		}
	}
}

func TestStatusReasonFitsTheHub(t *testing.T) {
	r := req(d.IntentCompromised)
	r.Reason = strings.Repeat("é", 300)
	if n := len([]rune(d.StatusReason(r))); n > 128 {
		t.Fatalf("statusReason has %d characters, the hub takes 128", n)
	}
}
