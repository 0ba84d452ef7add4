package emulator

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"net/http/httptest"
)

// InProcessClient returns an HTTP client (an azcore policy.Transporter) that hands every
// request straight to this emulator's handler, in memory: no socket, no TLS handshake. It
// serves tests that make many thousands of calls (generated fleets), where the loopback
// transport's handshakes would dominate. Requests keep their real host names, so routing,
// SAS resources and the answers are those of the network path.
//
// chain, when not empty, is the TLS client certificate chain (leaf first) an X.509 device
// presents to the device registration API; the emulator sees it as the TLS listener's peer
// certificates (it requests client certificates without verifying them, as DPS leaves chain
// validation to enrollment matching).
func (e *Emulator) InProcessClient(chain ...*x509.Certificate) *http.Client {
	return &http.Client{Transport: &inProcess{e: e, peer: chain}}
}

type inProcess struct {
	e    *Emulator
	peer []*x509.Certificate
}

func (t *inProcess) RoundTrip(req *http.Request) (*http.Response, error) {
	r := req.Clone(req.Context())
	if r.Host == "" {
		r.Host = req.URL.Host
	}
	r.RequestURI = req.URL.RequestURI()
	r.RemoteAddr = "127.0.0.1:1"
	if r.Body == nil {
		r.Body = http.NoBody
	}
	if req.URL.Scheme == "https" {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		r.TLS = &tls.ConnectionState{Version: tls.VersionTLS12, HandshakeComplete: true, ServerName: host, PeerCertificates: t.peer}
	}
	rec := httptest.NewRecorder()
	t.e.ServeHTTP(rec, r)
	res := rec.Result()
	res.Request = req
	return res, nil
}
