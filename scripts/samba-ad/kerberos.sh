#!/usr/bin/env bash
# kerberos.sh - Kerberos material for tests against Samba's own KDCs:
#   - the service account svc-pwsync (CN=Users; password never expires; may
#     read changes with DirSync: "Replicating Directory Changes" on the domain head)
#   - its keytab, exported with `samba-tool domain exportkeytab --principal=...`
#     (again whenever the account's key version moved)
#   - a krb5.conf naming the KDCs of both DCs (the second's when join.sh joined
#     one), without DNS
#   - a check: `kinit -k -t <keytab>` against each KDC on its own
#   - the settings, KEY='value' like start.sh's env, in $SAMBA_AD_DIR/kerberos/env
#     (testrig/adtest.RequireKerberos reads them) and on stdout
# Everything lives in the first DC's dir: a domain provisioned again gets new
# keys and new material. Idempotent; a second run is a few LDAP searches and kinits.
#
# Environment: SAMBA_AD_DIR [/tmp/samba-ad] (start.sh ran), SAMBA_AD2_DIR
#              [${SAMBA_AD_DIR}2] (join.sh ran, optional),
#              SAMBA_AD_KRB5_USER [svc-pwsync] the account
set -euo pipefail

log() { echo "samba-ad: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

abs() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
DIR1=$(abs "${SAMBA_AD_DIR:-/tmp/samba-ad}")
DIR1=${DIR1%/}
DIR2=$(abs "${SAMBA_AD2_DIR:-${DIR1}2}")
[ -f "$DIR1/env" ] || die "$DIR1/env not found: run start.sh first"
USER_NAME="${SAMBA_AD_KRB5_USER:-svc-pwsync}"

# the second DC's address and LDAP SPN, when it is there
IP2= SPN2=
if [ -f "$DIR2/env" ]; then
    IP2=$(. "$DIR2/env"; echo "$SAMBA_AD_DC_IP")
    SPN2=ldap/$(. "$DIR2/env"; echo "$SAMBA_AD_DC_HOSTNAME")
fi
# shellcheck disable=SC1091
. "$DIR1/env"
IP1=${SAMBA_AD_DC_IP:-127.0.0.1}
REALM=$SAMBA_AD_REALM
realm_lc=${REALM,,}
BASE=$SAMBA_AD_BASE_DN
PRINCIPAL="$USER_NAME@$REALM"
OUT="$DIR1/kerberos"
KEYTAB="$OUT/$USER_NAME.keytab"
CONF="$OUT/krb5.conf"
mkdir -p "$OUT"

lq() {
    ldapsearch -LLL -o ldif-wrap=no -o nettimeout=5 -x -H "$SAMBA_AD_LDAP_URL" \
        -D "$SAMBA_AD_BIND_UPN" -w "$SAMBA_AD_BIND_PASSWORD" "$@"
}
st() {   # samba-tool against the running first DC over LDAP
    samba-tool "$@" -s "$SAMBA_AD_SMB_CONF" -H "$SAMBA_AD_LDAP_URL" \
        -U "$SAMBA_AD_BIND_UPN%$SAMBA_AD_BIND_PASSWORD"
}

# ---------------------------------------------------------------- account
user_dn="CN=$USER_NAME,CN=Users,$BASE"
state=$(lq -b "$BASE" "(sAMAccountName=$USER_NAME)" userAccountControl 2>/dev/null || true)
if ! grep -q '^dn:' <<<"$state"; then
    log "creating $USER_NAME"
    st user create "$USER_NAME" --random-password \
        --description="pwsync service account (Kerberos tests, keytab)" >/dev/null
    state=$(lq -b "$BASE" "(sAMAccountName=$USER_NAME)" userAccountControl)
fi
user_dn=$(sed -n 's/^dn: //p' <<<"$state")
uac=$(sed -n 's/^userAccountControl: //p' <<<"$state")
if [ $(( uac & 0x10000 )) -eq 0 ]; then
    st user setexpiry "$USER_NAME" --noexpiry >/dev/null
fi
# DS-Replication-Get-Changes: DirSync by a non-administrator (dsacl set adds
# the ACE only when the descriptor does not have it)
st dsacl set --objectdn="$BASE" --trusteedn="$user_dn" --car=get-changes --action=allow >/dev/null

# ---------------------------------------------------------------- keytab
kvno=$(lq -b "$user_dn" -s base msDS-KeyVersionNumber | sed -n 's/^msDS-KeyVersionNumber: //p')
have=
[ -s "$KEYTAB" ] && have=$(klist -k "$KEYTAB" 2>/dev/null | awk -v p="$PRINCIPAL" '$2==p && !n++{print $1}')
if [ "$have" != "$kvno" ]; then
    rm -f "$KEYTAB"
    # local: reads the keys from the first DC's sam.ldb
    samba-tool domain exportkeytab "$KEYTAB" --principal="$PRINCIPAL" -s "$SAMBA_AD_SMB_CONF" >/dev/null ||
        die "exportkeytab failed"
    chmod 600 "$KEYTAB"
    log "exported $PRINCIPAL (kvno $kvno) to $KEYTAB"
fi

# ---------------------------------------------------------------- krb5.conf
kdcs="$IP1${IP2:+ $IP2}"
write_conf() {   # write_conf FILE KDC...
    local f=$1; shift
    {
        printf '[libdefaults]\n\tdefault_realm = %s\n\tdns_lookup_kdc = false\n\tdns_lookup_realm = false\n\trdns = false\n' "$REALM"
        printf '[realms]\n\t%s = {\n' "$REALM"
        for k in "$@"; do printf '\t\tkdc = %s\n' "$k"; done
        printf '\t\tadmin_server = %s\n\t\tkpasswd_server = %s\n\t}\n' "$1" "$1"
        printf '[domain_realm]\n\t%s = %s\n\t.%s = %s\n' "$realm_lc" "$REALM" "$realm_lc" "$REALM"
    } > "$f.tmp"
    mv "$f.tmp" "$f"
}
# shellcheck disable=SC2086
write_conf "$CONF" $kdcs

# ---------------------------------------------------------------- check
# each KDC on its own: the second must have the account (replicated) too
deadline=$(( $(date +%s) + 60 ))
for kdc in $kdcs; do
    one="$OUT/krb5-$kdc.conf"
    write_conf "$one" "$kdc"
    while ! KRB5_CONFIG="$one" KRB5CCNAME="FILE:$OUT/ccache-check" kinit -k -t "$KEYTAB" "$PRINCIPAL" 2>"$OUT/kinit.err"; do
        [ "$(date +%s)" -lt "$deadline" ] || { cat "$OUT/kinit.err" >&2; die "kinit -k as $PRINCIPAL against the KDC at $kdc failed"; }
        sleep 0.5
    done
    rm -f "$one" "$OUT/ccache-check" "$OUT/kinit.err"
done
log "kinit -k -t $KEYTAB $PRINCIPAL works against $kdcs"

kv() { local v=${2//\'/\'\\\'\'}; printf "%s='%s'\n" "$1" "$v"; }
{
    kv SAMBA_AD_KRB5_REALM "$REALM"
    kv SAMBA_AD_KRB5_PRINCIPAL "$PRINCIPAL"
    kv SAMBA_AD_KRB5_USER_DN "$user_dn"
    kv SAMBA_AD_KEYTAB "$KEYTAB"
    kv SAMBA_AD_KRB5_CONF "$CONF"
    kv SAMBA_AD_KRB5_KDCS "$kdcs"
    kv SAMBA_AD_LDAP_SPN "ldap/$SAMBA_AD_DC_HOSTNAME"
    kv SAMBA_AD2_LDAP_SPN "$SPN2"
} > "$OUT/env.tmp"
mv "$OUT/env.tmp" "$OUT/env"
cat "$OUT/env"
