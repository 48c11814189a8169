package events

import (
	"bytes"
	"encoding/hex"
	"testing"
)

func TestGUID(t *testing.T) {
	tests := []struct {
		name        string
		rawHex      string
		want        string
		immutableID string
	}{
		// raw bytes as read from Samba's objectGUID; the string is what Samba
		// itself printed for the same object (in its tombstone's RDN)
		{"samba_sample", "b932d16ca96aec49a035ac12a4efd979", "6cd132b9-6aa9-49ec-a035-ac12a4efd979", "uTLRbKlq7EmgNawSpO/ZeQ=="},
		{"field_order", "00112233445566778899aabbccddeeff", "33221100-5544-7766-8899-aabbccddeeff", "ABEiM0RVZneImaq7zN3u/w=="},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw, _ := hex.DecodeString(tt.rawHex)
			got, err := GUIDString(raw)
			if err != nil || got != tt.want {
				t.Fatalf("GUIDString = %q, %v; want %q", got, err, tt.want)
			}
			back, err := ParseGUID(got)
			if err != nil || !bytes.Equal(back, raw) {
				t.Fatalf("ParseGUID(%q) = %x, %v; want %x", got, back, err, raw)
			}
			if id := ImmutableID(raw); id != tt.immutableID {
				t.Fatalf("ImmutableID = %q, want %q", id, tt.immutableID)
			}
		})
	}
}

func TestGUIDRejectsMalformed(t *testing.T) {
	if _, err := GUIDString(make([]byte, 15)); err == nil {
		t.Error("GUIDString accepted 15 bytes")
	}
	for _, s := range []string{"", "6cd132b9-6aa9-49ec-a035-ac12a4efd97", "6cd132b9x6aa9-49ec-a035-ac12a4efd979", "zcd132b9-6aa9-49ec-a035-ac12a4efd979"} {
		if _, err := ParseGUID(s); err == nil {
			t.Errorf("ParseGUID(%q) accepted", s)
		}
	}
}
