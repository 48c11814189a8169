#!/usr/bin/env bash
# demo.sh - the whole flow on this machine: the Samba AD DC (scripts/samba-ad),
# the Graph simulator and pwsync with embedded NATS. A helpdesk resets two
# users' passwords with "must change at next logon"; pwsync makes their cloud
# accounts demand a change; one of them then sets a new password and pwsync
# undoes it. Every Graph call is printed with its latency from the AD change.
#
#   make demo               (runs until Ctrl-C)
#   DEMO_EXIT=1 make demo   (stops after the show)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v curl >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl >/dev/null; }

DIR="${SAMBA_AD_DIR:-/tmp/samba-ad}"
# shellcheck disable=SC1091
. "$DIR/env"
DEMO=data/demo
BIN=bin/pwsync
SIM_ADDR=127.0.0.1:8444
OPS_ADDR=127.0.0.1:9091
SECRET="demo-secret-$RANDOM$RANDOM"
PENDING=00000000-0000-4000-8000-0000000000aa

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
lq() { ldapsearch -LLL -o ldif-wrap=no -x -H "$SAMBA_AD_LDAP_URL" -D "$SAMBA_AD_BIND_UPN" -w "$SAMBA_AD_BIND_PASSWORD" "$@"; }
st() { samba-tool "$@" -s "$SAMBA_AD_SMB_CONF" -H "$SAMBA_AD_LDAP_URL" -U "$SAMBA_AD_BIND_UPN%$SAMBA_AD_BIND_PASSWORD" >/dev/null; }
attr() { lq -b "$SAMBA_AD_BASE_DN" "(sAMAccountName=$1)" "$2" | sed -n "s/^$2:: *//p; s/^$2: *//p"; }
dn_of() { lq -b "$SAMBA_AD_BASE_DN" "(sAMAccountName=$1)" dn | sed -n 's/^dn: //p'; }
helpdesk_reset() {   # pwdLastSet=0: "User must change password at next logon"
    printf 'dn: %s\nchangetype: modify\nreplace: pwdLastSet\npwdLastSet: 0\n' "$(dn_of "$1")" |
        ldapmodify -x -H "$SAMBA_AD_LDAP_URL" -D "$SAMBA_AD_BIND_UPN" -w "$SAMBA_AD_BIND_PASSWORD" >/dev/null
}

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

rm -rf "$DEMO" && mkdir -p "$DEMO"
chmod 700 "$DEMO"

# A fresh start for the demo users: a set password, no pending flag.
for u in alice bob; do st user setpassword "$u" --newpassword="Demo.Passw0rd-$RANDOM"; done

say "Cloud accounts in the Graph simulator"
cat > "$DEMO/seed.json" <<EOF
{"users": [
  {"id": "11111111-0000-4000-8000-00000000a11c", "userPrincipalName": "alice@example.test", "displayName": "Alice Anders",
   "onPremisesImmutableId": "$(attr alice objectGUID)", "onPremisesSyncEnabled": true},
  {"id": "11111111-0000-4000-8000-0000000000b0", "userPrincipalName": "bob@example.test", "displayName": "Bob Brown"},
  {"id": "11111111-0000-4000-8000-00000000ca01", "userPrincipalName": "carol@example.test", "displayName": "Carol Clark"}
 ],
 "groups": [{"id": "$PENDING", "displayName": "Password change pending (blocked by Conditional Access)", "members": []}]}
EOF
echo "alice: synced (onPremisesImmutableId = base64 objectGUID); bob, carol: cloud-managed (matched by UPN)"
echo "carol was already flagged 'must change' in AD before pwsync starts (backfill)"
"$BIN" graphsim -addr "$SIM_ADDR" -client-secret "$SECRET" -ca-out "$DEMO/graph-ca.pem" \
    -seed "$DEMO/seed.json" -log-requests > "$DEMO/graphsim.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do [ -s "$DEMO/graph-ca.pem" ] && break; sleep 0.1; done

cat > "$DEMO/pwsync.yaml" <<EOF
log: {level: info}
nats:
  embedded: {data_dir: $DEMO/nats}
ad:
  domains:
    - name: example.test
      url: $SAMBA_AD_LDAPS_URL
      ca_file: $SAMBA_AD_CA_CERT
      bind_dn: $SAMBA_AD_BIND_DN
      bind_password: env:DEMO_AD_PASSWORD
      base_dn: $SAMBA_AD_BASE_DN
graph:
  tenant_id: 00000000-0000-0000-0000-0000000000aa
  client_id: 11111111-1111-1111-1111-111111111111
  client_secret: env:DEMO_GRAPH_SECRET
  authority_host: https://$SIM_ADDR/
  base_url: https://$SIM_ADDR/v1.0
  ca_file: $DEMO/graph-ca.pem
evaluator:
  scope:
    include_ous: ["OU=Corp,$SAMBA_AD_BASE_DN"]
    break_glass_upns: [svc-backup@example.test]
actuator:
  synced: {revoke_sessions: true, pending_group_id: "$PENDING"}
  cloud_managed: {revoke_sessions: false}
ops: {listen: "$OPS_ADDR"}
EOF
say "Starting pwsync (embedded NATS, all targets): $BIN run --config $DEMO/pwsync.yaml"
DEMO_AD_PASSWORD="$SAMBA_AD_BIND_PASSWORD" DEMO_GRAPH_SECRET="$SECRET" \
    "$BIN" run --config "$DEMO/pwsync.yaml" > "$DEMO/pwsync.log" 2>&1 &
pids+=($!)
for i in $(seq 300); do
    curl -fs "http://$OPS_ADDR/readyz" >/dev/null 2>&1 && break
    kill -0 "${pids[1]}" 2>/dev/null || { tail -20 "$DEMO/pwsync.log"; echo "pwsync exited"; exit 1; }
    sleep 0.1
done
echo "ready: first full sync of AD done"

show() {   # Graph calls since line $1 of the simulator log, and pwsync's view with latencies
    sleep "${2:-2}"
    echo "-- Graph simulator saw:"
    tail -n +"$(( $1 + 1 ))" "$DEMO/graphsim.log" | grep -E '^(GET|PATCH|POST|DELETE) ' | sed 's/^/   /' || true
    echo "-- pwsync (step, outcome, latency since ingest saw the AD change):"
    grep '"message":"step"' "$DEMO/pwsync.log" | tail -n +"$(( $3 + 1 ))" |
        sed -E 's/.*"upn":"([^"]*)".*"step":"([^"]*)","outcome":"([^"]*)".*"latency_ms":([0-9.]+).*/   \1  \2  \3  \4 ms/' || true
}
steps() { grep -c '"message":"step"' "$DEMO/pwsync.log" || true; }

say "Backfill: carol was flagged before pwsync started"
show 0 1 0

say "Helpdesk resets alice (synced) and bob (cloud-managed) with 'must change password at next logon'"
n=$(wc -l < "$DEMO/graphsim.log"); s=$(steps)
date +'   %H:%M:%S.%3N  ldapmodify pwdLastSet=0 for alice and bob'
helpdesk_reset alice
helpdesk_reset bob
show "$n" 2 "$s"

say "Bob sets a new password in AD: pwsync undoes the cloud flag"
n=$(wc -l < "$DEMO/graphsim.log"); s=$(steps)
st user setpassword bob --newpassword="Demo.Changed-$RANDOM"
show "$n" 2 "$s"

say "Logs: $DEMO/pwsync.log, $DEMO/graphsim.log; ops: http://$OPS_ADDR/readyz"
if [ -n "${DEMO_EXIT:-}" ]; then exit 0; fi
echo "pwsync keeps running: make a change in AD (e.g. samba-tool user setpassword dave --must-change-at-next-login ...) and watch $DEMO/pwsync.log. Ctrl-C stops."
wait
