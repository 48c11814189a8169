package adwatch

import (
	"encoding/binary"
	"testing"
)

// metaBlob builds a replPropertyMetaData value with the given attribute
// versions (attrType -> version).
func metaBlob(entries ...[2]uint32) []byte {
	b := make([]byte, replMetaHeader+len(entries)*replMetaEntry)
	binary.LittleEndian.PutUint32(b, 1)
	binary.LittleEndian.PutUint32(b[8:], uint32(len(entries)))
	for i, e := range entries {
		o := b[replMetaHeader+i*replMetaEntry:]
		binary.LittleEndian.PutUint32(o, e[0])
		binary.LittleEndian.PutUint32(o[4:], e[1])
	}
	return b
}

func TestPwdLastSetVersion(t *testing.T) {
	tests := []struct {
		name    string
		blob    []byte
		want    uint32
		wantErr bool
	}{
		{"among others", metaBlob([2]uint32{0, 1}, [2]uint32{0x90008, 3}, [2]uint32{attrTypPwdLastSet, 7}), 7, false},
		{"absent", metaBlob([2]uint32{0, 1}), 0, false},
		{"empty", nil, 0, true},
		{"truncated entries", metaBlob([2]uint32{attrTypPwdLastSet, 2})[:40], 0, true},
		{"unknown version", func() []byte { b := metaBlob(); b[0] = 2; return b }(), 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := pwdLastSetVersion(tc.blob)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("got %d, %v; want %d, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func FuzzPwdLastSetVersion(f *testing.F) {
	f.Add(metaBlob([2]uint32{attrTypPwdLastSet, 7}))
	f.Add(metaBlob())
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, 255, 255, 255, 255, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = pwdLastSetVersion(b) // must not panic, whatever a DC sends
	})
}
