package msgraph

import (
	"net/http"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
)

// NewCredential is the app's Entra credential for another Azure resource
// (the audit shipper's Logs Ingestion API), with an HTTP client trusting
// the same CAs as Graph (graph.ca_file).
func NewCredential(cfg Config) (azcore.TokenCredential, *http.Client, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, nil, err
	}
	tr, err := newTransport(cfg.CAFile)
	if err != nil {
		return nil, nil, err
	}
	hc := &http.Client{Transport: tr, Timeout: cfg.Timeout}
	cred, err := newCredential(cfg, hc)
	if err != nil {
		return nil, nil, err
	}
	return cred, hc, nil
}
