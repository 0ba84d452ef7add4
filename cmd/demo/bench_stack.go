package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/messaging/eventgrid/azeventgrid"
)

// instance is one handler instance of the benchmark: a devhost (the Functions host of one
// Flex Consumption instance) running its own handler process. Every instance shares the
// storage account (the journal, the budgets' table, the group-work queue), the emulator and the
// app settings; Event Grid spreads deliveries over instances, as the benchmark spreads its
// events over their topics.
type instance struct {
	n         int
	dir       string
	devhost   devhostInfo
	publisher *azeventgrid.Client
}

// startInstances starts instances 2…n beside the stack's own devhost (instance 1), with the
// same staged app and settings file, each in its own state folder. They poll the same queue
// and draw on the same budgets.
func (d *demo) startInstances(ctx context.Context, n int) ([]*instance, error) {
	s := d.stack
	first, err := newInstancePublisher(s.devhost)
	if err != nil {
		return nil, err
	}
	out := []*instance{{n: 1, dir: s.dir, devhost: s.devhost, publisher: first}}
	for i := 2; i <= n; i++ {
		dir := filepath.Join(s.dir, "instance"+strconv.Itoa(i))
		if err := os.RemoveAll(dir); err != nil { // a run's logs are its own
			return nil, err
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		addr, err := freePort()
		if err != nil {
			return nil, err
		}
		eg, err := freePort()
		if err != nil {
			return nil, err
		}
		env := []string{"DEVHOST_TOPIC_KEY=" + s.topicKey}
		log := filepath.Join(dir, "devhost.log")
		args := []string{"serve", "-root", s.app, "-settings", filepath.Join(s.dir, "local.settings.json"), "-state-dir", dir,
			"-addr", "127.0.0.1:" + strconv.Itoa(addr), "-eventgrid-addr", "127.0.0.1:" + strconv.Itoa(eg),
			"-retry-scale", strconv.FormatFloat(s.retryScal, 'f', -1, 64), "-handler-log", filepath.Join(dir, "handler.log")}
		p, stdout, err := start(fmt.Sprintf("devhost %d", i), log, env, filepath.Join(s.bin, "devhost"), args...)
		if err != nil {
			return nil, err
		}
		s.add(p)
		in := &instance{n: i, dir: dir}
		if err := firstLine(ctx, p, stdout, log, &in.devhost); err != nil {
			return nil, err
		}
		in.devhost.Key = s.topicKey
		if in.publisher, err = newInstancePublisher(in.devhost); err != nil {
			return nil, err
		}
		out = append(out, in)
	}
	return out, nil
}

// newInstancePublisher publishes to one instance's events topic.
func newInstancePublisher(dh devhostInfo) (*azeventgrid.Client, error) {
	ca, err := os.ReadFile(dh.CAFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	return azeventgrid.NewClientWithSharedKeyCredential(dh.Topics["events"], azcore.NewKeyCredential(dh.Key),
		&azeventgrid.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: client}})
}

// handlerPIDs finds the handler process of every instance (they run the same staged binary).
func handlerPIDs(exe string, n int) ([]int, error) {
	deadline := time.Now().Add(60 * time.Second)
	for {
		pids := processesOf(exe)
		if len(pids) >= n {
			return pids, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%d processes run %s, want %d", len(pids), exe, n)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// processesOf lists the processes running exe.
func processesOf(exe string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe")); err == nil && p == exe {
			pids = append(pids, pid)
		}
	}
	return pids
}
