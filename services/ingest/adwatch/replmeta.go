package adwatch

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// attrTypPwdLastSet is pwdLastSet's ATTRTYP (attributeID
// 1.2.840.113556.1.4.96 through the default prefix table, MS-DRSR 5.16.4:
// prefix 1.2.840.113556.1.4 is index 9), as replPropertyMetaData lists it.
const attrTypPwdLastSet = 0x00090060

// replMetaHeader and replMetaEntry are the sizes of a
// REPLPROPERTYMETADATABLOB's header (dwVersion, dwReserved, cNumEntries,
// dwReserved) and of each PROPERTY_META_DATA_EXT entry (attrType,
// dwVersion, timeChanged, uuidDsaOriginating, usnOriginating, usnProperty)
// (MS-DRSR 5.167, 5.157).
const (
	replMetaHeader = 16
	replMetaEntry  = 48
)

// pwdLastSetVersion returns pwdLastSet's version in a replPropertyMetaData
// value (0, nil when the blob has no entry for it).
func pwdLastSetVersion(blob []byte) (uint32, error) {
	if len(blob) < replMetaHeader {
		return 0, fmt.Errorf("replPropertyMetaData: %d bytes, shorter than its header", len(blob))
	}
	if v := binary.LittleEndian.Uint32(blob); v != 1 {
		return 0, fmt.Errorf("replPropertyMetaData: version %d, want 1", v)
	}
	n := binary.LittleEndian.Uint32(blob[8:])
	if uint64(n)*replMetaEntry > uint64(len(blob)-replMetaHeader) {
		return 0, errors.New("replPropertyMetaData: fewer bytes than its entries")
	}
	for i := range int(n) {
		e := blob[replMetaHeader+i*replMetaEntry:]
		if binary.LittleEndian.Uint32(e) == attrTypPwdLastSet {
			return binary.LittleEndian.Uint32(e[4:]), nil
		}
	}
	return 0, nil
}
