// Package conformance runs the emulator against Microsoft's official Azure IoT Node SDKs
// (the *.test.js files here, run by `node --test`), so that the emulator's contract is
// checked by clients the project did not write.
package conformance

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"dpsdeprov/emulator"
	"dpsdeprov/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// x509Material is what the suite needs to provision an X.509 device through a group.
type x509Material struct {
	RootCert        string `json:"rootCert"`
	RootCN          string `json:"rootCN"`
	SpareRootCert   string `json:"spareRootCert"`
	SpareRootCN     string `json:"spareRootCN"`
	DeviceCN        string `json:"deviceCN"`
	DeviceCert      string `json:"deviceCert"`      // leaf only
	DeviceCertChain string `json:"deviceCertChain"` // leaf then intermediate
	DeviceKey       string `json:"deviceKey"`
}

func TestOfficialSDKs(t *testing.T) {
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is not on PATH; the conformance suite runs Microsoft's Node SDKs: %v", err)
	}
	for _, m := range []string{"azure-iothub", "azure-iot-provisioning-service", "azure-iot-provisioning-device", "azure-iot-provisioning-device-http", "azure-iot-security-symmetric-key", "azure-iot-security-x509", "azure-iot-http-base"} {
		if _, err := os.Stat(filepath.Join(root, "node_modules", m, "package.json")); err != nil {
			t.Fatalf("node module %s is not installed: run `npm ci` at the repository root (make test does): %v", m, err)
		}
	}

	e := testenv.StartEmulator(t, emulator.Options{Hubs: []string{"hub1", "hub2"}})
	info, err := json.Marshal(e.Info())
	if err != nil {
		t.Fatal(err)
	}
	mat := newX509Material(t)
	x, err := json.Marshal(mat)
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	files, err := filepath.Glob(filepath.Join(root, "conformance", "*.test.js"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no conformance test files found (%v)", err)
	}
	args := append([]string{"--test", "--test-reporter=spec", "--test-timeout=120000"}, files...)
	cmd := exec.CommandContext(ctx, node, args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "EMULATOR_INFO="+string(info), "EMULATOR_X509="+string(x), "NO_COLOR=1")
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	cmd.WaitDelay = 5 * time.Second
	err = cmd.Run()
	out := buf.Bytes()
	if err != nil {
		t.Fatalf("the official SDKs found a difference (node --test: %v):\n%s", err, out)
	}
	if m := regexp.MustCompile(`(?m)^\S*\s*pass (\d+)$`).FindSubmatch(out); m == nil || string(m[1]) == "0" {
		t.Fatalf("node --test ran no tests:\n%s", out)
	}
	t.Logf("node --test:\n%s", out)
}

func newX509Material(t *testing.T) x509Material {
	t.Helper()
	rootCA, err := emulator.NewTestCA("conformance-root")
	if err != nil {
		t.Fatal(err)
	}
	spare, err := emulator.NewTestCA("conformance-spare-root")
	if err != nil {
		t.Fatal(err)
	}
	inter, err := rootCA.Issue("conformance-intermediate", true)
	if err != nil {
		t.Fatal(err)
	}
	cn := testenv.UniqueName("conf-x509-dev-")
	leaf, err := inter.Issue(cn, false)
	if err != nil {
		t.Fatal(err)
	}
	return x509Material{
		RootCert:        string(rootCA.CertPEM),
		RootCN:          rootCA.Cert.Subject.CommonName,
		SpareRootCert:   string(spare.CertPEM),
		SpareRootCN:     spare.Cert.Subject.CommonName,
		DeviceCN:        cn,
		DeviceCert:      string(leaf.CertPEM),
		DeviceCertChain: string(leaf.CertPEM) + string(inter.CertPEM),
		DeviceKey:       string(leaf.KeyPEM),
	}
}
