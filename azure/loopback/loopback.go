// Package loopback provides the HTTP client that lets the DPS and IoT Hub clients talk to a
// local emulator while still addressing the real host names: every connection is dialled to
// one loopback address, while the URL, the Host header, the TLS server name and the SAS
// resource stay exactly what Azure would see.
//
// The production binary uses it only when its settings name an emulator address.
package loopback

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// NewClient returns an *http.Client (an azcore policy.Transporter, for ClientOptions.Transport)
// that sends every connection to addr, which must be a loopback IP address with a port, such
// as "127.0.0.1:8443" or "[::1]:8443", and that trusts the PEM certificates in caPEM in
// addition to the system's roots. Anything else is refused with an error naming what is wrong.
func NewClient(addr string, caPEM []byte) (*http.Client, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("loopback address %q: %w", addr, err)
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("loopback address %q: %q is not a loopback IP address (only 127.0.0.0/8 and ::1 are allowed)", addr, host)
	}
	if port == "" || port == "0" {
		return nil, fmt.Errorf("loopback address %q: a port is required", addr)
	}
	roots, err := x509.SystemCertPool()
	if err != nil || roots == nil {
		roots = x509.NewCertPool()
	}
	if len(caPEM) > 0 && !roots.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("loopback CA: no PEM certificate found in the given CA bytes")
	}
	target := net.JoinHostPort(ip.String(), port)
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		// The requested host is ignored on purpose: every connection goes to the emulator.
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, target)
		},
		TLSClientConfig:       &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2:     true,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		Proxy:                 nil, // a proxy would take the traffic off the loopback interface
	}
	return &http.Client{Transport: tr}, nil
}
