package scenario_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"dpsdeprov/deprovision"
	"dpsdeprov/deprovision/fake"
	"dpsdeprov/internal/testenv"
)

// sdkDevice is a device as the official Node device SDK sees it.
type sdkDevice struct {
	RegistrationID string `json:"registrationId"`
	Key            string `json:"key,omitempty"`
	Cert           string `json:"cert,omitempty"`
	CertKey        string `json:"certKey,omitempty"`
}

// sdkProvision registers d with Microsoft's device SDK and returns "admitted", or how DPS
// refused it ("disabled", "http 401", …; see sdkdevice.js), and the SDK's error.
func (e *env) sdkProvision(d sdkDevice) (string, string) {
	e.t.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		e.t.Fatal(err)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		e.t.Fatalf("node is not on PATH; this check runs Microsoft's Node device SDK: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "node_modules", "azure-iot-provisioning-device", "package.json")); err != nil {
		e.t.Fatalf("the Node device SDK is not installed: run `npm ci` at the repository root (make test does): %v", err)
	}
	info, _ := json.Marshal(e.info)
	dev, _ := json.Marshal(d)
	cmd := exec.CommandContext(testenv.Context(e.t), node, filepath.Join(root, "internal", "scenario", "sdkdevice.js"))
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "EMULATOR_INFO="+string(info), "SDK_DEVICE="+string(dev))
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		e.t.Fatalf("running the device SDK: %v\n%s%s", err, out.String(), errb.String())
	}
	var res struct {
		OK          bool   `json:"ok"`
		AssignedHub string `json:"assignedHub"`
		Refused     string `json:"refused"`
		Error       string `json:"error"`
	}
	if err := json.Unmarshal(bytes.TrimSpace(out.Bytes()), &res); err != nil {
		e.t.Fatalf("device SDK output %q: %v", out.String(), err)
	}
	switch {
	case res.OK:
		return "admitted", ""
	case res.Refused == "":
		e.t.Fatalf("the device SDK failed for another reason than a refusal: %s", res.Error)
	}
	return res.Refused, res.Error
}

// sdkMust registers d with the device SDK and checks the outcome: "admitted", a refusal kind
// ("disabled": the device attested against a disabled entry; "http 401": against none), or
// "refused" for any refusal (where the policy leaves the kind open, such as a block with
// random keys).
func (e *env) sdkMust(d sdkDevice, want string, when string) {
	e.t.Helper()
	got, why := e.sdkProvision(d)
	if got == want || (want == "refused" && got != "admitted") {
		return
	}
	e.t.Fatalf("%s: the official device SDK got %q (%s), want %q", when, got, why, want)
}

// TestOfficialDeviceSDK: after each revoking path the device, driven by Microsoft's own device
// SDK, can no longer provision; after recovered it can again.
func TestOfficialDeviceSDK(t *testing.T) {
	if testing.Short() {
		t.Skip("runs node for each provisioning attempt")
	}
	e := newEnv(t)
	step := time.Duration(0)
	next := func(id string, i deprovision.Intent, rid string) deprovision.Request {
		step += time.Minute
		return request(id, i, rid, step)
	}

	// Individual symmetric-key enrollments: each revoking intent; lost and stolen recover. A
	// disabled enrollment still authenticates the device, and DPS ends its registration with
	// status "disabled"; a deleted one leaves nothing to attest against: 401.
	for _, i := range []deprovision.Intent{deprovision.IntentLost, deprovision.IntentStolen, deprovision.IntentCompromised, deprovision.IntentSold, deprovision.IntentRetired} {
		rid := "sdk-ind-" + string(i)
		key := randomKey()
		e.individualSK(rid, key)
		d := sdkDevice{RegistrationID: rid, Key: key}
		e.sdkMust(d, "admitted", "before "+string(i))
		succeeded(t, e.submit(next(string(i), i, rid)))
		want := "disabled"
		if i == deprovision.IntentSold || i == deprovision.IntentRetired {
			want = "http 401"
		}
		e.sdkMust(d, want, "after "+string(i))
		if i == deprovision.IntentLost || i == deprovision.IntentStolen {
			succeeded(t, e.submit(next("found-"+string(i), deprovision.IntentRecovered, rid)))
			e.sdkMust(d, "admitted", "after recovered from "+string(i))
		}
	}

	// A symmetric-key group member: lost (blocked) then recovered (unblocked).
	gkey := randomKey()
	e.groupSK("sdk-skg", gkey)
	mk, _ := deprovision.DeriveDeviceKey(gkey, "sdk-skm")
	m := sdkDevice{RegistrationID: "sdk-skm", Key: mk}
	e.sdkMust(m, "admitted", "group member before lost")
	succeeded(t, e.submit(next("skm-lost", deprovision.IntentLost, "sdk-skm")))
	e.sdkMust(m, "refused", "group member after lost")
	succeeded(t, e.submit(next("skm-found", deprovision.IntentRecovered, "sdk-skm")))
	e.sdkMust(m, "admitted", "group member after recovered")

	// An X.509 group member, with and without its certificate in the event.
	root := fake.NewCA("sdk-root")
	inter := root.Issue("sdk-inter", true)
	e.groupX509("sdk-xg", root)
	for _, withCert := range []bool{true, false} {
		rid := map[bool]string{true: "sdk-xm-cert", false: "sdk-xm-nocert"}[withCert]
		c := inter.Issue(rid, false)
		d := sdkDevice{RegistrationID: rid, Cert: c.ChainPEM, CertKey: c.KeyPEM}
		e.sdkMust(d, "admitted", rid+" before compromised")
		r := next(rid, deprovision.IntentCompromised, rid)
		// With its certificate the device is blocked by a disabled X.509 enrollment holding
		// that certificate, which it attests against: "disabled".
		want := "refused"
		if withCert {
			r.CertificatePEM = c.PEM
			want = "disabled"
		}
		succeeded(t, e.submit(r))
		e.sdkMust(d, want, rid+" after compromised")
	}

	// The whole group compromised: every member refused, the group kept (disabled).
	late := inter.Issue("sdk-xm-late", false)
	ld := sdkDevice{RegistrationID: "sdk-xm-late", Cert: late.ChainPEM, CertKey: late.KeyPEM}
	e.sdkMust(ld, "admitted", "member before group-compromised")
	succeeded(t, e.submit(deprovision.Request{EventID: "sdk-gc", Source: "/scenario", Intent: deprovision.IntentGroupCompromised, EnrollmentGroupID: "sdk-xg"}))
	// Its chain still attests through the group, which is disabled.
	e.sdkMust(ld, "disabled", "member after group-compromised")
}
