package devhost

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
)

// topicClient is an HTTP client that trusts the topics' CA.
func topicClient(h *Host) *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(h.EventGridCA())
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
}
