#!/usr/bin/env bash
# join.sh - a second Samba AD DC of start.sh's test domain, on its own loopback
# address, joined to the first DC and replicating with it both ways.
#   1. starts the first DC (start.sh) and adds the second's address to lo
#   2. joins (`samba-tool domain join <realm> DC`) into $SAMBA_AD2_DIR unless
#      it is joined to this very domain already; a second DC joined to a domain
#      that is gone (the first DC's dir wiped and provisioned again) or removed
#      from it is stopped, deleted and joined again
#   3. issues its LDAPS certificate with the first DC's test CA (the CA file the
#      tests trust verifies both DCs)
#   4. names both DCs' <DSA GUID>._msdcs.<realm> in /etc/hosts (replication
#      finds its partner by that name; the DCs run without DNS)
#   5. turns replication on in the first DC (drepl, kcc: start.sh restarts it
#      once), starts the second (start.sh with its dir), runs the KCC on both
#   6. checks replication both ways: a value written on one DC must show on the
#      other within $SAMBA_AD2_REPL_TIMEOUT seconds
#   7. prints the second DC's settings as KEY=VALUE (start.sh writes them to
#      $SAMBA_AD2_DIR/env in the first DC's format: testrig/adtest reads it)
# Idempotent; with both DCs up a run takes a few seconds (the replication check).
#
#   join.sh           join (if needed), start, check
#   join.sh --remove  stop the second DC, remove it from the domain
#                     (demote --remove-other-dead-server on the first DC), delete its dir
#   join.sh --reset   --remove, then join again
#
# Environment (defaults in brackets):
#   SAMBA_AD_DIR           [/tmp/samba-ad]      the first DC (start.sh)
#   SAMBA_AD2_DIR          [${SAMBA_AD_DIR}2]   the second DC's state: db, smb.conf, logs, pid, env
#   SAMBA_AD2_IP           [127.0.0.2]          its address (added to lo when missing)
#   SAMBA_AD2_HOSTNAME     [DC2]                its NetBIOS/host name
#   SAMBA_AD2_REPL_TIMEOUT [60]                 seconds a replication check may take
set -euo pipefail

log() { echo "samba-ad2: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"
HERE=$(cd "$(dirname "$0")" && pwd)

abs() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
DIR1=$(abs "${SAMBA_AD_DIR:-/tmp/samba-ad}")
DIR1=${DIR1%/}
DIR2=$(abs "${SAMBA_AD2_DIR:-${DIR1}2}")
DIR2=${DIR2%/}
[ "$DIR2" != / ] && [ "$DIR2" != "$DIR1" ] || die "SAMBA_AD2_DIR must be a directory of its own"
# a joined second DC keeps its address and name unless they are asked for anew
prev_ip= prev_host=
if [ -f "$DIR2/settings.env" ]; then
    prev_ip=$(. "$DIR2/settings.env"; echo "${IP_DC:-}")
    prev_host=$(. "$DIR2/settings.env"; echo "${HOSTNAME_DC:-}")
fi
IP2="${SAMBA_AD2_IP:-${prev_ip:-127.0.0.2}}"
HOST2="${SAMBA_AD2_HOSTNAME:-${prev_host:-DC2}}"
HOST2="${HOST2^^}"
REPL_TIMEOUT="${SAMBA_AD2_REPL_TIMEOUT:-60}"

mode=join
case "${1:-}" in
    "") ;;
    --remove) mode=remove ;;
    --reset) mode=reset ;;
    *) die "usage: join.sh [--remove|--reset]" ;;
esac

# one join.sh per second DC at a time
exec 8>"$DIR2.lock"
if command -v flock >/dev/null; then
    flock -w 900 8 || die "another join.sh holds $DIR2.lock for more than 15 minutes"
fi

t_start=$(date +%s%N)
ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
secs() { printf '%d.%03ds' $(( $1 / 1000 )) $(( $1 % 1000 )); }

# ---------------------------------------------------------------- first DC
SAMBA_AD_DIR="$DIR1" "$HERE/start.sh" 8>&- >/dev/null
# shellcheck disable=SC1091
. "$DIR1/env"
IP1=$SAMBA_AD_DC_IP
HOST1=${SAMBA_AD_DC_NETBIOS:-DC1}
REALM=$SAMBA_AD_REALM
realm_lc=${REALM,,}
BASE=$SAMBA_AD_BASE_DN
ADMIN="$SAMBA_AD_DOMAIN\\${SAMBA_AD_BIND_UPN%@*}"
PW=$SAMBA_AD_BIND_PASSWORD
[ "$IP2" != "$IP1" ] || die "SAMBA_AD2_IP ($IP2) is the first DC's address"
[ "$HOST2" != "${HOST1^^}" ] || die "SAMBA_AD2_HOSTNAME ($HOST2) is the first DC's name"

lq() {   # lq IP ldapsearch-args...: unwrapped LDIF from the DC at IP
    local ip=$1; shift
    ldapsearch -LLL -o ldif-wrap=no -o nettimeout=5 -x -H "ldap://$ip" \
        -D "$SAMBA_AD_BIND_UPN" -w "$PW" "$@"
}
guid_of() {   # base64 objectGUID -> its string form
    python3 -c 'import base64,sys,uuid; print(uuid.UUID(bytes_le=base64.b64decode(sys.argv[1])))' "$1"
}
domain_guid() { lq "$IP1" -b "$BASE" -s base objectGUID | sed -n 's/^objectGUID:: //p'; }
dsa_guid() {   # dsa_guid NAME: the objectGUID of NAME's "NTDS Settings" on the first DC (empty: none)
    local b64
    b64=$(lq "$IP1" -b "CN=NTDS Settings,CN=$1,CN=Servers,CN=Default-First-Site-Name,CN=Sites,CN=Configuration,$BASE" \
        -s base objectGUID 2>/dev/null | sed -n 's/^objectGUID:: //p') || true
    [ -z "$b64" ] || guid_of "$b64"
}
st() {   # samba-tool against a DC over the network, as the administrator (NTLM)
    samba-tool "$@" -s "$SAMBA_AD_SMB_CONF" -U "$ADMIN%$PW" --use-kerberos=off
}

# the second DC's address: Samba finds no interface for an address no interface holds
if ! grep -qF " inet $IP2/" <<<"$(ip -o addr show dev lo)"; then
    log "adding $IP2 to lo"
    ip addr add "$IP2/8" dev lo || die "cannot add $IP2 to lo"
fi

# ---------------------------------------------------------------- /etc/hosts
# Replication reaches its partner as <DSA GUID>._msdcs.<realm>; without DNS
# that name comes from /etc/hosts. One block per first-DC dir, rewritten in
# place (/etc/hosts may be a bind mount); GUIDs are unique, so environments in
# other network namespaces (same /etc/hosts, own loopback) do not collide.
hosts_block() {   # hosts_block LINE...: the block is these lines (none: no block)
    local tag="pwsync samba-ad $DIR1" new
    exec 7>/tmp/samba-ad-hosts.lock
    command -v flock >/dev/null && flock -w 60 7
    local blk=
    [ $# -eq 0 ] || blk=$(echo "# >>> $tag"; printf '%s\n' "$@"; echo "# <<< $tag")
    # in place where the block is (other environments' blocks keep their order), else appended
    new=$(BLK="$blk" awk -v b="# >>> $tag" -v e="# <<< $tag" '
        $0==b { skip=1; done=1; if (ENVIRON["BLK"] != "") print ENVIRON["BLK"]; next }
        $0==e { skip=0; next }
        !skip
        END { if (!done && ENVIRON["BLK"] != "") print ENVIRON["BLK"] }' /etc/hosts)
    if [ "$new" != "$(cat /etc/hosts)" ]; then
        printf '%s\n' "$new" > /etc/hosts
        log "/etc/hosts: ${*:-no names for $DIR1}"
    fi
    exec 7>&-
}

# ---------------------------------------------------------------- remove
remove_dc2() {
    if [ -d "$DIR2" ]; then
        SAMBA_AD_DIR="$DIR2" "$HERE/stop.sh" 8>&- >&2 || die "cannot stop the second DC in $DIR2"
    fi
    if [ -n "$(dsa_guid "$HOST2")" ]; then
        log "removing $HOST2 from the domain on the first DC"
        st domain demote --remove-other-dead-server="$HOST2" -H "ldap://$IP1" >"$DIR1/demote-$HOST2.log" 2>&1 ||
            log "demote --remove-other-dead-server=$HOST2 failed (log: $DIR1/demote-$HOST2.log); the join cleans up old accounts itself"
    fi
    if [ -e "$DIR2" ]; then
        [ -f "$DIR2/.samba-ad-join" ] || [ -f "$DIR2/.samba-ad-test" ] ||
            die "$DIR2 is not a join.sh directory; not deleting"
        rm -rf "$DIR2"
        log "removed $DIR2"
    fi
}

if [ "$mode" != join ]; then
    remove_dc2
    if [ "$mode" = remove ]; then
        hosts_block   # the DCs' names: the next join writes them again
        exit 0
    fi
fi

# ---------------------------------------------------------------- join
dom=$(domain_guid)
[ -n "$dom" ] || die "cannot read the domain's objectGUID from the first DC"
joined_to=
if [ -f "$DIR2/settings.env" ] && [ -f "$DIR2/private/sam.ldb" ]; then
    joined_to=$(. "$DIR2/settings.env"; echo "${JOINED_TO:-}")
fi
if [ -n "$prev_host" ] && { [ "$prev_host" != "$HOST2" ] || [ "$prev_ip" != "$IP2" ]; }; then
    log "the second DC in $DIR2 is $prev_host at $prev_ip, $HOST2 at $IP2 is asked for: joining again"
    HOST2=$prev_host remove_dc2
    joined_to=
fi
if [ "$joined_to" != "$dom" ] || [ -z "$(dsa_guid "$HOST2")" ]; then
    if [ -e "$DIR2" ] || [ -n "$(dsa_guid "$HOST2")" ]; then
        log "the second DC in $DIR2 is not joined to the first DC's domain (any more): joining again"
        remove_dc2
    fi
    # nothing may listen on the address yet (another environment's DC, say)
    for port in 389 636 88; do
        if (exec 3<>"/dev/tcp/$IP2/$port") 2>/dev/null; then
            die "$IP2:$port is in use by another process: set SAMBA_AD2_IP to a free address"
        fi
    done
    # the first DC's own SPNs (E3514235-.../<DSA GUID>/<realm> for replication,
    # ldap/<fqdn>): its dnsupdate service would add them, but it does not run;
    # done before the join so that the second DC's copy has them
    samba_spnupdate -s "$SAMBA_AD_SMB_CONF" >/dev/null 2>&1 || die "samba_spnupdate failed on the first DC"
    mkdir -p "$DIR2/etc"
    touch "$DIR2/.samba-ad-join" "$DIR2/.samba-ad-test"
    : > "$DIR2/etc/join.conf"   # empty: don't inherit /etc/samba/smb.conf
    log "joining $HOST2 ($IP2) to $REALM via $IP1 ..."
    t0=$(date +%s%N)
    # --site: the join would ask the first DC's CLDAP service for it, which does not run
    if ! samba-tool domain join "$realm_lc" DC --server="$IP1" --site=Default-First-Site-Name \
        -U "$ADMIN%$PW" --use-kerberos=off \
        --configfile="$DIR2/etc/join.conf" --targetdir="$DIR2" --dns-backend=NONE \
        --option="netbios name = $HOST2" --option="interfaces = $IP2" \
        --option="bind interfaces only = yes" > "$DIR2/join.log" 2>&1; then
        tail -20 "$DIR2/join.log" >&2
        die "join failed (log: $DIR2/join.log; the next run starts over)"
    fi
    samba_spnupdate -s "$DIR2/etc/smb.conf" >/dev/null 2>&1 || die "samba_spnupdate failed on the second DC"
    {
        printf 'REALM=%q\n' "$REALM"
        printf 'DOMAIN=%q\n' "$SAMBA_AD_DOMAIN"
        printf 'HOSTNAME_DC=%q\n' "$HOST2"
        printf 'ADMIN_PASSWORD=%q\n' "$PW"
        printf 'IP_DC=%q\n' "$IP2"
        printf 'REPLICATION=1\n'
        printf 'JOINED_TO=%q\n' "$dom"
    } > "$DIR2/settings.env.tmp"
    mv "$DIR2/settings.env.tmp" "$DIR2/settings.env"
    rm -f "$DIR2/.samba-ad-join"
    join_ms=$(ms_since "$t0")
    log "joined in $(secs "$join_ms")"
fi

# the first DC replicates from now on (start.sh: services drepl, kcc; the
# changed smb.conf restarts it). One that replicated already holds Kerberos
# tickets for the second DC's SPNs, made with the keys of the account the
# join replaced (same name, same SPNs): restart it as well after a join.
restart1=
if ! grep -qx 'REPLICATION=1' "$DIR1/settings.env"; then
    echo 'REPLICATION=1' >> "$DIR1/settings.env"
elif [ -n "${join_ms:-}" ]; then
    restart1=1
fi

# ---------------------------------------------------------------- TLS
# a server certificate for the second DC from the first DC's test CA, so that
# SAMBA_AD_CA_CERT verifies both (the join's own certificate has no SAN)
TLS1="$DIR1/tls"
TLS2="$DIR2/tls"
FQDN2="${HOST2,,}.$realm_lc"
if ! { [ -s "$TLS2/cert.pem" ] && [ -s "$TLS2/key.pem" ] && cmp -s "$TLS1/ca.pem" "$TLS2/ca.pem" &&
       openssl verify -CAfile "$TLS1/ca.pem" "$TLS2/cert.pem" >/dev/null 2>&1; }; then
    [ -s "$TLS1/ca.key" ] || die "$TLS1/ca.key missing: cannot issue the second DC's certificate"
    rm -rf "$TLS2"; mkdir -p "$TLS2"
    (
        cd "$TLS2"
        umask 077
        openssl req -newkey rsa:2048 -nodes -sha256 -subj "/O=Samba AD test/CN=$FQDN2" \
            -keyout key.pem -out server.csr
        printf '%s\n' "subjectAltName=DNS:$FQDN2,DNS:localhost,IP:$IP2" \
            "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
            "extendedKeyUsage=serverAuth" > server.ext
        openssl x509 -req -in server.csr -CA "$TLS1/ca.pem" -CAkey "$TLS1/ca.key" \
            -CAserial ca.srl -CAcreateserial -days 3650 -sha256 -extfile server.ext -out cert.pem
        cp "$TLS1/ca.pem" ca.pem
        chmod 644 ca.pem cert.pem
    ) >/dev/null 2>&1 || die "openssl failed to make the second DC's certificate"
fi

# ---------------------------------------------------------------- names
g1=$(dsa_guid "$HOST1")
g2=$(dsa_guid "$HOST2")
[ -n "$g1" ] && [ -n "$g2" ] || die "cannot read the DCs' NTDS Settings GUIDs from the first DC"
hosts_block "$IP1 $g1._msdcs.$realm_lc" "$IP2 $g2._msdcs.$realm_lc"

# ---------------------------------------------------------------- start both
# start.sh restarts the first DC when its smb.conf changed (replication just
# turned on: drepl, kcc), and then with KRB5_CONFIG, which replication's
# Kerberos needs (samba's process title hides it from /proc/<pid>/environ)
if [ -n "$restart1" ]; then
    log "restarting the first DC (it holds tickets made with the replaced account's keys)"
    SAMBA_AD_DIR="$DIR1" "$HERE/stop.sh" 8>&- >&2
fi
SAMBA_AD_DIR="$DIR1" "$HERE/start.sh" 8>&- >/dev/null
t0=$(date +%s%N)
SAMBA_AD_DIR="$DIR2" SAMBA_AD_IP="$IP2" "$HERE/start.sh" 8>&- >/dev/null
log "second DC up after $(secs "$(ms_since "$t0")")"

# The join made the second DC pull from the first (repsFrom) and the first
# announce its changes to the second (repsTo). The other way round: the KCC
# makes the first DC's inbound connection from the second (it runs by itself
# 15 s after start and every 5 minutes: here right away), and a pull with
# ADD_REF makes the second announce its changes to the first.
NCS=("$BASE" "CN=Configuration,$BASE" "CN=Schema,CN=Configuration,$BASE")
wire_up() {
    local nc ok deadline
    st drs kcc "$IP1" >/dev/null 2>&1 || log "KCC run on the first DC failed"
    st drs kcc "$IP2" >/dev/null 2>&1 || log "KCC run on the second DC failed"
    for nc in "${NCS[@]}"; do
        # the KCC's new connection reaches the first DC's replication service in a moment
        deadline=$(( $(date +%s) + 30 )) ok=
        while [ "$(date +%s)" -lt "$deadline" ]; do
            if st drs replicate "$IP1" "$HOST2" "$nc" --add-ref >"$DIR2/add-ref.log" 2>&1; then ok=1; break; fi
            sleep 1
        done
        [ -n "$ok" ] || { cat "$DIR2/add-ref.log" >&2; log "pull with ADD_REF of $nc from $HOST2 by the first DC failed"; }
    done
}
if [ -n "${join_ms:-}" ]; then
    t0=$(date +%s%N)
    wire_up
    log "replication wired both ways in $(secs "$(ms_since "$t0")")"
fi

# ---------------------------------------------------------------- check
CHECK_DN="CN=pwsync-replcheck,CN=System,$BASE"
if ! lq "$IP1" -b "$CHECK_DN" -s base dn >/dev/null 2>&1; then
    printf 'dn: %s\nobjectClass: container\ndescription: created\n' "$CHECK_DN" |
        ldapadd -x -H "ldap://$IP1" -D "$SAMBA_AD_BIND_UPN" -w "$PW" >/dev/null ||
        die "cannot create $CHECK_DN on the first DC"
fi
repl_check() {   # repl_check FROM_IP FROM_NAME TO_IP: write on FROM, wait for it on TO; prints ms
    local from=$1 from_name=$2 to=$3 v t0 deadline repaired=
    v="check-$from-$(date +%s%N)"
    printf 'dn: %s\nchangetype: modify\nreplace: description\ndescription: %s\n' "$CHECK_DN" "$v" |
        ldapmodify -x -H "ldap://$from" -D "$SAMBA_AD_BIND_UPN" -w "$PW" >/dev/null ||
        die "cannot write $CHECK_DN on $from (not replicated there yet?)"
    t0=$(date +%s%N)
    deadline=$(( $(date +%s) + REPL_TIMEOUT ))
    while ! grep -qxF "description: $v" <<<"$(lq "$to" -b "$CHECK_DN" -s base description 2>/dev/null)"; do
        if [ "$(date +%s)" -ge "$deadline" ] && [ -z "$repaired" ]; then
            log "not replicated from $from to $to within ${REPL_TIMEOUT}s: running the KCC, pulling with ADD_REF"
            wire_up
            repaired=1
            deadline=$(( $(date +%s) + REPL_TIMEOUT ))
        elif [ "$(date +%s)" -ge "$deadline" ]; then
            log "not replicated from $from to $to; forcing a pull:"
            st drs replicate "$to" "$from_name" "CN=Configuration,$BASE" >&2 || true
            st drs replicate "$to" "$from_name" "$BASE" >&2 || true
            st drs showrepl "$to" >&2 || true
            die "replication from $from to $to does not work (logs: $DIR1/log/samba.log, $DIR2/log/samba.log)"
        fi
        sleep 0.1
    done
    ms_since "$t0"
}
# the check object must exist on the second DC before it can be written there
d12=$(repl_check "$IP1" "$HOST1" "$IP2")
d21=$(repl_check "$IP2" "$HOST2" "$IP1")
log "replication: $IP1 -> $IP2 in $(secs "$d12"), $IP2 -> $IP1 in $(secs "$d21"); join.sh took $(secs "$(ms_since "$t_start")")"

cat "$DIR2/env"
