package scenario_test

import (
	"bytes"
	"context"
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

// sdkProvision registers d with Microsoft's device SDK and reports whether DPS admitted it.
func (e *env) sdkProvision(d sdkDevice) (bool, string) {
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
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join(root, "internal", "scenario", "sdkdevice.js"))
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
		Status      int    `json:"status"`
		Error       string `json:"error"`
	}
	if err := json.Unmarshal(bytes.TrimSpace(out.Bytes()), &res); err != nil {
		e.t.Fatalf("device SDK output %q: %v", out.String(), err)
	}
	if !res.OK && res.Status != 401 && res.Status != 403 && res.Status != 404 {
		e.t.Fatalf("the device SDK failed for another reason than a refusal: %d %s", res.Status, res.Error)
	}
	return res.OK, res.Error
}

func (e *env) sdkMust(d sdkDevice, admitted bool, when string) {
	e.t.Helper()
	ok, why := e.sdkProvision(d)
	if ok != admitted {
		e.t.Fatalf("%s: the official device SDK provisioned=%v (%s), want %v", when, ok, why, admitted)
	}
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

	// Individual symmetric-key enrollments: each revoking intent; lost and stolen recover.
	for _, i := range []deprovision.Intent{deprovision.IntentLost, deprovision.IntentStolen, deprovision.IntentCompromised, deprovision.IntentSold, deprovision.IntentRetired} {
		rid := "sdk-ind-" + string(i)
		key := randomKey()
		e.individualSK(rid, key)
		d := sdkDevice{RegistrationID: rid, Key: key}
		e.sdkMust(d, true, "before "+string(i))
		succeeded(t, e.submit(next(string(i), i, rid)))
		e.sdkMust(d, false, "after "+string(i))
		if i == deprovision.IntentLost || i == deprovision.IntentStolen {
			succeeded(t, e.submit(next("found-"+string(i), deprovision.IntentRecovered, rid)))
			e.sdkMust(d, true, "after recovered from "+string(i))
		}
	}

	// A symmetric-key group member: lost (blocked) then recovered (unblocked).
	gkey := randomKey()
	e.groupSK("sdk-skg", gkey)
	mk, _ := deprovision.DeriveDeviceKey(gkey, "sdk-skm")
	m := sdkDevice{RegistrationID: "sdk-skm", Key: mk}
	e.sdkMust(m, true, "group member before lost")
	succeeded(t, e.submit(next("skm-lost", deprovision.IntentLost, "sdk-skm")))
	e.sdkMust(m, false, "group member after lost")
	succeeded(t, e.submit(next("skm-found", deprovision.IntentRecovered, "sdk-skm")))
	e.sdkMust(m, true, "group member after recovered")

	// An X.509 group member, with and without its certificate in the event.
	root := fake.NewCA("sdk-root")
	inter := root.Issue("sdk-inter", true)
	e.groupX509("sdk-xg", root)
	for _, withCert := range []bool{true, false} {
		rid := map[bool]string{true: "sdk-xm-cert", false: "sdk-xm-nocert"}[withCert]
		c := inter.Issue(rid, false)
		d := sdkDevice{RegistrationID: rid, Cert: c.ChainPEM, CertKey: c.KeyPEM}
		e.sdkMust(d, true, rid+" before compromised")
		r := next(rid, deprovision.IntentCompromised, rid)
		if withCert {
			r.CertificatePEM = c.PEM
		}
		succeeded(t, e.submit(r))
		e.sdkMust(d, false, rid+" after compromised")
	}

	// The whole group compromised: every member refused, the group kept (disabled).
	late := inter.Issue("sdk-xm-late", false)
	ld := sdkDevice{RegistrationID: "sdk-xm-late", Cert: late.ChainPEM, CertKey: late.KeyPEM}
	e.sdkMust(ld, true, "member before group-compromised")
	succeeded(t, e.submit(deprovision.Request{EventID: "sdk-gc", Source: "/scenario", Intent: deprovision.IntentGroupCompromised, EnrollmentGroupID: "sdk-xg"}))
	e.sdkMust(ld, false, "member after group-compromised")
}
