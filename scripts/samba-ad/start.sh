#!/usr/bin/env bash
# start.sh - bring up pwsync's loopback-only Samba AD DC for integration tests
# (testrig/adtest reads the settings it writes to $SAMBA_AD_DIR/env).
#   1. installs the Debian packages if missing (apt-get update + install, needs root)
#   2. provisions a domain under $SAMBA_AD_DIR if not provisioned yet
#   3. starts `samba -D` (pid file: $SAMBA_AD_DIR/run/samba.pid) unless already running
#   4. waits until an LDAP simple bind as Administrator succeeds
#   5. prints the connection settings as KEY=VALUE (also written to $SAMBA_AD_DIR/env)
# Idempotent; a second run with the DC up takes well under a second and leaves
# the running DC as it is. Concurrent runs (several test packages) wait for
# each other on a lock. Samba's ports are fixed: one DC serves the machine.
# Progress goes to stderr, settings to stdout, so `eval "$(start.sh)"` works.
#
# Environment (defaults in brackets; realm/domain/host/password only matter
# at first provision, later runs reuse what was provisioned):
#   SAMBA_AD_DIR            [/tmp/samba-ad]  all state: db, smb.conf, logs, pid
#   SAMBA_AD_REALM          [EXAMPLE.TEST]
#   SAMBA_AD_DOMAIN         [EXAMPLE]        NetBIOS domain
#   SAMBA_AD_HOSTNAME       [DC1]            DC NetBIOS/host name
#   SAMBA_AD_ADMIN_PASSWORD [Admin.Passw0rd] must meet AD complexity
#   SAMBA_AD_START_TIMEOUT  [90]             seconds to wait for LDAP
#   SAMBA_AD_SERVICES       [ldap, kdc, rpc] samba "server services" (plus drepl, kcc once
#                                            join.sh has joined a second DC: REPLICATION=1 in
#                                            settings.env; a joined DC's own dir has it too)
#   SAMBA_AD_PREFORK_CHILDREN [1]            samba "prefork children"
#   SAMBA_AD_IP             [127.0.0.1]      the DC's address at provision, kept afterwards (settings.env IP_DC)
set -euo pipefail

log() { echo "samba-ad: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"

DIR="${SAMBA_AD_DIR:-/tmp/samba-ad}"
case "$DIR" in /*) ;; *) DIR="$PWD/$DIR" ;; esac
[ "$DIR" != / ] || die "SAMBA_AD_DIR must not be /"
# one start.sh at a time: two test packages starting the DC at once must not
# both install, provision or launch samba
LOCK="${SAMBA_AD_LOCK:-/tmp/samba-ad.lock}"
exec 9>"$LOCK"
if command -v flock >/dev/null; then
    flock -w 600 9 || die "another start.sh holds $LOCK for more than 10 minutes"
fi

MARKER="$DIR/.samba-ad-test"
SETTINGS="$DIR/settings.env"
CONF="$DIR/etc/smb.conf"
PIDFILE="$DIR/run/samba.pid"
IP="${SAMBA_AD_IP:-}"   # another loopback address for a second DC (the host must hold it: ip addr add)

# ---------------------------------------------------------------- install
PKGS=(samba samba-ad-dc samba-ad-provision winbind ldap-utils krb5-user openssl faketime)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]} ..."
    t0=$(date +%s)
    # never let package scripts start the distro's own samba/smbd/nmbd services
    made_policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    rc=0
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends "${PKGS[@]}"; } >&2 || rc=$?
    [ -z "$made_policy" ] || rm -f /usr/sbin/policy-rc.d
    [ "$rc" = 0 ] || die "apt-get failed (rc=$rc)"
    log "installed in $(( $(date +%s) - t0 ))s"
fi

# ---------------------------------------------------------------- provision
REPLICATION=
IP_DC=
if [ -f "$SETTINGS" ] && [ -f "$DIR/private/sam.ldb" ]; then
    # shellcheck disable=SC1090
    . "$SETTINGS"
    # a DC keeps the address it was provisioned (or joined, join.sh) with; a
    # dir provisioned before that was recorded: the address of its last start
    if [ -n "$IP_DC" ]; then
        IP=$IP_DC
    elif [ -z "$IP" ] && [ -f "$DIR/env" ]; then
        IP=$(sed -n "s|^SAMBA_AD_LDAP_URL='ldap://\(.*\):389'\$|\1|p" "$DIR/env")
    fi
else
    IP=${IP:-127.0.0.1}
    # a second DC's dir is made by join.sh, never provisioned as a domain of its own
    [ ! -f "$DIR/.samba-ad-join" ] || die "$DIR holds an unfinished join: run join.sh (or join.sh --reset)"
    if [ -e "$DIR" ] && [ -n "$(ls -A "$DIR" 2>/dev/null)" ]; then
        [ -f "$MARKER" ] || die "$DIR exists, is not empty and is not ours; set SAMBA_AD_DIR elsewhere"
        log "removing incomplete provision in $DIR"
        rm -rf "$DIR"
    fi
    REALM="${SAMBA_AD_REALM:-EXAMPLE.TEST}"
    REALM="${REALM^^}"
    DOMAIN="${SAMBA_AD_DOMAIN:-EXAMPLE}"
    DOMAIN="${DOMAIN^^}"
    HOSTNAME_DC="${SAMBA_AD_HOSTNAME:-DC1}"
    ADMIN_PASSWORD="${SAMBA_AD_ADMIN_PASSWORD:-Admin.Passw0rd}"
    mkdir -p "$DIR/etc"
    touch "$MARKER"
    : > "$DIR/etc/provision.conf"   # empty: don't inherit /etc/samba/smb.conf
    log "provisioning realm $REALM in $DIR ..."
    t0=$(date +%s)
    samba-tool domain provision \
        --configfile="$DIR/etc/provision.conf" \
        --targetdir="$DIR" \
        --realm="$REALM" --domain="$DOMAIN" \
        --host-name="$HOSTNAME_DC" --host-ip="$IP" \
        --server-role=dc --dns-backend=NONE \
        --function-level=2008_R2 \
        --adminpass="$ADMIN_PASSWORD" \
        --option="interfaces = $IP" --option="bind interfaces only = yes" \
        > "$DIR/provision.log" 2>&1 || { tail -20 "$DIR/provision.log" >&2; die "provision failed (log: $DIR/provision.log)"; }
    {
        printf 'REALM=%q\n' "$REALM"
        printf 'DOMAIN=%q\n' "$DOMAIN"
        printf 'HOSTNAME_DC=%q\n' "$HOSTNAME_DC"
        printf 'ADMIN_PASSWORD=%q\n' "$ADMIN_PASSWORD"
        printf 'IP_DC=%q\n' "$IP"
    } > "$SETTINGS.tmp"
    mv "$SETTINGS.tmp" "$SETTINGS"
    log "provisioned in $(( $(date +%s) - t0 ))s"
fi

IP=${IP:-127.0.0.1}
realm_lc="${REALM,,}"
BASE_DN="DC=${realm_lc//./,DC=}"
BIND_DN="CN=Administrator,CN=Users,$BASE_DN"
BIND_UPN="Administrator@$realm_lc"

# ---------------------------------------------------------------- TLS
# Samba's autogenerated cert has no subjectAltName, which Go's crypto/tls
# rejects; make a small CA + server cert valid for 127.0.0.1/localhost/DC FQDN.
TLS="$DIR/tls"
DC_FQDN="${HOSTNAME_DC,,}.$realm_lc"
if [ ! -s "$TLS/cert.pem" ] || [ ! -s "$TLS/ca.pem" ] || [ ! -s "$TLS/key.pem" ]; then
    rm -rf "$TLS"; mkdir -p "$TLS"
    (
        cd "$TLS"
        umask 077
        openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -sha256 \
            -subj "/O=Samba AD test/CN=Samba AD test CA" -keyout ca.key -out ca.pem \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
        openssl req -newkey rsa:2048 -nodes -sha256 -subj "/O=Samba AD test/CN=$DC_FQDN" \
            -keyout key.pem -out server.csr
        printf '%s\n' "subjectAltName=DNS:$DC_FQDN,DNS:localhost,IP:127.0.0.1,IP:$IP" \
            "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
            "extendedKeyUsage=serverAuth" > server.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
            -days 3650 -sha256 -extfile server.ext -out cert.pem
        chmod 644 ca.pem cert.pem
    ) >/dev/null 2>&1 || die "openssl failed to make the test TLS certificate"
fi

# ---------------------------------------------------------------- krb5.conf
# the provisioned private/krb5.conf relies on DNS; this one points at loopback
# (KRB5_CONFIG=$SAMBA_AD_DIR/krb5.conf kinit user@REALM; an expired or must-change
# password makes kinit prompt for a new one = the user's own change via kpasswd)
cat > "$DIR/krb5.conf.tmp" <<EOF
[libdefaults]
	default_realm = $REALM
	dns_lookup_kdc = false
	dns_lookup_realm = false
	rdns = false
[realms]
	$REALM = {
		kdc = $IP
		admin_server = $IP
		kpasswd_server = $IP
	}
[domain_realm]
	$realm_lc = $REALM
	.$realm_lc = $REALM
EOF
mv "$DIR/krb5.conf.tmp" "$DIR/krb5.conf"

# ---------------------------------------------------------------- helpers
running_pid() {
    local pid
    [ -f "$PIDFILE" ] || return 1
    pid=$(tr -dc '0-9' < "$PIDFILE")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' 2>/dev/null < "/proc/$pid/cmdline" | grep -q '^samba' || return 1
    echo "$pid"
}
ldap_rc() {   # 0 ok, 255 not listening yet, 49 bad credentials, 8 strong auth required
    ldapsearch -x -o nettimeout=2 -H "ldap://$IP" -D "$BIND_UPN" -w "$ADMIN_PASSWORD" \
        -b "" -s base dnsHostName >/dev/null 2>&1 && return 0 || return $?
}
port_open() { (exec 3<>"/dev/tcp/$IP/$1") 2>/dev/null; }

# ---------------------------------------------------------------- smb.conf
replication_conf() {   # settings of a DC that replicates with another (join.sh)
    printf '\t%s\n' \
        "# replication with the other DC (join.sh): a change is announced to it within" \
        "# ~2 s (default 5 s); each DC pulls from the other 5 s after it starts" \
        "dreplsrv:notify_interval = 2" \
        "dreplsrv:periodic_startup_interval = 5"
}
# Rewritten on every start so that it always matches this script.
mkdir -p "$DIR/run" "$DIR/log" "$DIR/cache"
cat > "$CONF.tmp" <<EOF
# generated by start.sh - edits are overwritten
[global]
	netbios name = $HOSTNAME_DC
	workgroup = $DOMAIN
	realm = $REALM
	server role = active directory domain controller
	server services = ${SAMBA_AD_SERVICES:-ldap, kdc, rpc${REPLICATION:+, drepl, kcc}}
	# 1 LDAP worker: change notifications (1.2.840.113556.1.4.528) for changes made
	# over LDAP are pushed in ~50 ms; with more workers a change handled by another
	# worker (or written to sam.ldb directly) is only seen by the 5 s retry timer
	prefork children = ${SAMBA_AD_PREFORK_CHILDREN:-1}
	dns proxy = no
	# loopback only
	interfaces = $IP
	bind interfaces only = yes
	# allow simple binds on plain LDAP (389); default "yes" demands TLS or SASL sign/seal
	ldap server require strong auth = no
	tls enabled = yes
	tls keyfile = $TLS/key.pem
	tls certfile = $TLS/cert.pem
	tls cafile = $TLS/ca.pem
	# state: everything below \$SAMBA_AD_DIR
	private dir = $DIR/private
	lock directory = $DIR
	state directory = $DIR/state
	cache directory = $DIR/cache
	binddns dir = $DIR/bind-dns
	pid directory = $DIR/run
	ncalrpc dir = $DIR/run/ncalrpc
	winbindd socket directory = $DIR/run/winbindd
	logging = file
	log file = $DIR/log/samba.log
	max log size = 10000
	log level = 1

[sysvol]
	path = $DIR/state/sysvol
	read only = no

[netlogon]
	path = $DIR/state/sysvol/$realm_lc/scripts
	read only = no
EOF
if [ -n "$REPLICATION" ]; then   # into [global], after "dns proxy"
    { sed -n '1,/^\tdns proxy = no$/p' "$CONF.tmp"; replication_conf
      sed '1,/^\tdns proxy = no$/d' "$CONF.tmp"; } > "$CONF.tmp2"
    mv "$CONF.tmp2" "$CONF.tmp"
fi
# comments do not count: only a setting that changed is worth a restart
settings_of() { grep -v '^[[:space:]]*#' "$1"; }
if [ -f "$CONF" ] && ! cmp -s <(settings_of "$CONF.tmp") <(settings_of "$CONF") && running_pid >/dev/null; then
    log "smb.conf changed: restarting the running DC"
    SAMBA_AD_DIR="$DIR" "$(dirname "$0")/stop.sh"
fi
mv "$CONF.tmp" "$CONF"

# ---------------------------------------------------------------- start
if pid=$(running_pid); then
    log "already running (pid $pid)"
else
    # stale pid file (killed/crashed): let stop.sh reap any workers left behind
    [ ! -f "$PIDFILE" ] || SAMBA_AD_DIR="$DIR" "$(dirname "$0")/stop.sh"
    for port in 389 636 88; do
        if port_open "$port"; then die "$IP:$port is already in use by another process"; fi
    done
    log "starting samba ..."
    ts=$(date +%s%N)
    # 9>&-: the daemon must not inherit (and hold forever) the start lock
    # KRB5_CONFIG: the KDC without DNS, for replication's Kerberos (DRS binds
    # with krb5 only) with another DC; unused by a DC of its own
    KRB5_CONFIG="$DIR/krb5.conf" samba -D -s "$CONF" 9>&- || die "samba failed to start (log: $DIR/log/samba.log)"
fi

ts=${ts:-$(date +%s%N)}
timeout=${SAMBA_AD_START_TIMEOUT:-90}
deadline=$(( $(date +%s) + timeout ))
while :; do
    rc=0; ldap_rc || rc=$?
    [ "$rc" = 0 ] && break
    case "$rc" in
        49) die "LDAP answers but rejects $BIND_UPN's password (was $DIR provisioned with another one?)" ;;
        8) die "LDAP answers but refuses simple binds: a samba with other settings holds $PIDFILE; run stop.sh" ;;
    esac
    if [ "$(date +%s)" -ge "$deadline" ]; then
        tail -30 "$DIR/log/samba.log" >&2 || true
        die "LDAP did not answer within ${timeout}s"
    fi
    if ! running_pid >/dev/null && [ "$(date +%s)" -ge "$(( ts / 1000000000 + 5 ))" ]; then
        tail -30 "$DIR/log/samba.log" >&2 || true
        die "samba exited (log: $DIR/log/samba.log)"
    fi
    sleep 0.2
done
pid=$(running_pid) || die "LDAP answers but samba pid file is missing"
ms=$(( ($(date +%s%N) - ts) / 1000000 ))
log "LDAP up (pid $pid) after $((ms / 1000)).$(printf %03d $((ms % 1000)))s"

# ---------------------------------------------------------------- settings
kv() { local v=${2//\'/\'\\\'\'}; printf "%s='%s'\n" "$1" "$v"; }
{
    kv SAMBA_AD_DIR "$DIR"
    kv SAMBA_AD_LDAP_URL "ldap://$IP:389"
    kv SAMBA_AD_LDAPS_URL "ldaps://$IP:636"
    kv SAMBA_AD_BASE_DN "$BASE_DN"
    kv SAMBA_AD_BIND_DN "$BIND_DN"
    kv SAMBA_AD_BIND_UPN "$BIND_UPN"
    kv SAMBA_AD_BIND_PASSWORD "$ADMIN_PASSWORD"
    kv SAMBA_AD_REALM "$REALM"
    kv SAMBA_AD_DOMAIN "$DOMAIN"
    kv SAMBA_AD_DC_HOSTNAME "$DC_FQDN"
    kv SAMBA_AD_CA_CERT "$TLS/ca.pem"
    kv SAMBA_AD_SMB_CONF "$CONF"
    kv SAMBA_AD_KRB5_CONFIG "$DIR/krb5.conf"
    kv SAMBA_AD_PID "$pid"
    kv SAMBA_AD_DC_IP "$IP"
    kv SAMBA_AD_DC_NETBIOS "$HOSTNAME_DC"
} > "$DIR/env.tmp"
mv "$DIR/env.tmp" "$DIR/env"
sed 's/^/export /' "$DIR/env" > "$DIR/env.sh"
cat "$DIR/env"
