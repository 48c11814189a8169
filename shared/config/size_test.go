package config

import (
	"strings"
	"testing"
)

func TestParseByteSize(t *testing.T) {
	tests := []struct {
		in   string
		want ByteSize
		ok   bool
	}{
		{"1048576", 1 << 20, true},
		{"1MiB", 1 << 20, true},
		{"2 GB", 2 << 30, true},
		{"512k", 512 << 10, true},
		{"0", 0, true},
		{"-1MiB", 0, false},
		{"MiB", 0, false},
		{"1.5GiB", 0, false},
		{"99999999999TiB", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseByteSize(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestEmbeddedMaxStore(t *testing.T) {
	cfg, err := Parse([]byte("nats: {embedded: {data_dir: /tmp/x, max_store: 2GiB}}\n"), env(nil))
	if err != nil || cfg.NATS.Embedded.MaxStore != 2<<30 {
		t.Fatalf("max_store = %d, %v", cfg.NATS.Embedded.MaxStore, err)
	}
	cfg, err = Parse([]byte("nats: {embedded: {data_dir: /tmp/x, max_store: 1000}}\n"), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(Targets{}); err == nil || !strings.Contains(err.Error(), "nats.embedded.max_store") {
		t.Fatalf("a tiny max_store: %v", err)
	}
	if _, err := Parse([]byte("nats: {embedded: {max_store: lots}}\n"), env(nil)); err == nil || !strings.Contains(err.Error(), "not a size") {
		t.Fatalf("an unreadable max_store: %v", err)
	}
}
