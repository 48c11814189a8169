#!/usr/bin/env bash
# seed.sh - put pwsync's small, known data set into the DC started by start.sh, using
# samba-tool over LDAP. Idempotent: only missing pieces are created, so a second
# run is a couple of LDAP searches.
#
#   OU=Corp
#     OU=People           alice, bob, carol, dave, erin, frank (mail + UPN <name>@<realm>)
#     OU=ServiceAccounts  svc-backup                (DONT_EXPIRE_PASSWORD 0x10000)
#     OU=Groups           Privileged-Users = {alice, bob, frank}
#   PSO  CN=PSO-Privileged,CN=Password Settings Container,CN=System,<base>
#        precedence 10, max age 30d, min length 12, applied to Privileged-Users
#   carol: helpdesk reset with --must-change-at-next-login  (pwdLastSet = 0)
#   erin:  password set 50 days ago -> expired under the domain's 42-day maxPwdAge
#   frank: password set 25 days ago -> expires in ~5 days under the 30-day PSO
#   (aged passwords: pwdLastSet accepts only 0/-1 over LDAP, and Samba treats a
#    maxPwdAge shorter than 1 day as "never", so these are written by a local
#    samba-tool run under faketime, straight into sam.ldb)
#
# Environment: SAMBA_AD_DIR [/tmp/samba-ad] (reads $SAMBA_AD_DIR/env from start.sh)
#              SAMBA_AD_SEED_PASSWORD  [Start.Passw0rd1]  initial user password
#              SAMBA_AD_RESET_PASSWORD [Reset.Passw0rd2]  carol's helpdesk password
set -euo pipefail

log() { echo "samba-ad: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

DIR="${SAMBA_AD_DIR:-/tmp/samba-ad}"
case "$DIR" in /*) ;; *) DIR="$PWD/$DIR" ;; esac
[ -f "$DIR/env" ] || die "$DIR/env not found: run start.sh first"
# shellcheck disable=SC1091
. "$DIR/env"
SEED_PW="${SAMBA_AD_SEED_PASSWORD:-Start.Passw0rd1}"
RESET_PW="${SAMBA_AD_RESET_PASSWORD:-Reset.Passw0rd2}"
BASE="$SAMBA_AD_BASE_DN"
REALM_LC="${SAMBA_AD_REALM,,}"

st() {   # samba-tool against the running DC over LDAP (SASL sign+seal, so passwords work)
    samba-tool "$@" -s "$SAMBA_AD_SMB_CONF" -H "$SAMBA_AD_LDAP_URL" \
        -U "$SAMBA_AD_BIND_UPN%$SAMBA_AD_BIND_PASSWORD" >&2
}
lq() {   # ldapsearch, unwrapped LDIF
    ldapsearch -LLL -o ldif-wrap=no -x -H "$SAMBA_AD_LDAP_URL" \
        -D "$SAMBA_AD_BIND_UPN" -w "$SAMBA_AD_BIND_PASSWORD" "$@"
}

ldapsearch -x -o nettimeout=3 -H "$SAMBA_AD_LDAP_URL" -D "$SAMBA_AD_BIND_UPN" \
    -w "$SAMBA_AD_BIND_PASSWORD" -b "" -s base dn >/dev/null 2>&1 ||
    die "DC not answering on $SAMBA_AD_LDAP_URL: run start.sh first"

# one search for everything that already exists
state=$(lq -b "$BASE" "(|(&(objectClass=organizationalUnit)(ou=*))(sAMAccountName=*))" \
    dn sAMAccountName pwdLastSet userAccountControl member 2>/dev/null || true)
has_dn() { grep -qixF "dn: $1" <<<"$state"; }
attr_of() {  # attr_of DN ATTR -> values
    awk -v dn="dn: $1" -v a="$2: " 'tolower($0)==tolower(dn){f=1;next} /^$/{f=0} f && index($0,a)==1{print substr($0,length(a)+1)}' <<<"$state"
}

for ou in "OU=Corp" "OU=People,OU=Corp" "OU=ServiceAccounts,OU=Corp" "OU=Groups,OU=Corp"; do
    has_dn "$ou,$BASE" || st ou create "$ou"
done

# name  given  surname  ou
users=(
    "alice Alice Anders People"
    "bob Bob Brown People"
    "carol Carol Clark People"
    "dave Dave Davis People"
    "erin Erin Evans People"
    "frank Frank Foster People"
    "svc-backup Backup Service ServiceAccounts"
)
created=
for u in "${users[@]}"; do
    read -r name given sur ou <<<"$u"
    dn="CN=$given $sur,OU=$ou,OU=Corp,$BASE"
    if ! has_dn "$dn"; then
        st user create "$name" "$SEED_PW" --userou="OU=$ou,OU=Corp" \
            --given-name="$given" --surname="$sur" --mail-address="$name@$REALM_LC"
        created+="[$name]"
    fi
done

# service account: "Password never expires" (userAccountControl |= 0x10000)
svc_dn="CN=Backup Service,OU=ServiceAccounts,OU=Corp,$BASE"
uac=$(attr_of "$svc_dn" userAccountControl)
if [ -z "$uac" ] || [ $(( uac & 0x10000 )) -eq 0 ]; then
    st user setexpiry svc-backup --noexpiry
fi

# group + members
grp_dn="CN=Privileged-Users,OU=Groups,OU=Corp,$BASE"
has_dn "$grp_dn" || st group add Privileged-Users --groupou="OU=Groups,OU=Corp" \
    --group-scope=Global --group-type=Security --description="FGPP target"
members=$(attr_of "$grp_dn" member)
for m in "alice:CN=Alice Anders,OU=People,OU=Corp,$BASE" "bob:CN=Bob Brown,OU=People,OU=Corp,$BASE" \
         "frank:CN=Frank Foster,OU=People,OU=Corp,$BASE"; do
    grep -qixF "${m#*:}" <<<"$members" || st group addmembers Privileged-Users "${m%%:*}"
done

# fine-grained password policy applied to the group
pso_dn="CN=PSO-Privileged,CN=Password Settings Container,CN=System,$BASE"
pso=$(lq -b "$pso_dn" -s base msDS-PSOAppliesTo 2>/dev/null || true)
if ! grep -q '^dn:' <<<"$pso"; then
    st domain passwordsettings pso create PSO-Privileged 10 \
        --max-pwd-age=30 --min-pwd-age=0 --min-pwd-length=12 --history-length=24 --complexity=on
fi
grep -qiF "msDS-PSOAppliesTo: $grp_dn" <<<"$pso" ||
    st domain passwordsettings pso apply PSO-Privileged Privileged-Users

# helpdesk-style reset: new password + "User must change password at next logon"
carol_dn="CN=Carol Clark,OU=People,OU=Corp,$BASE"
if [ "$(attr_of "$carol_dn" pwdLastSet)" != 0 ]; then
    st user setpassword carol --newpassword="$RESET_PW" --must-change-at-next-login
fi

# aged passwords (only when the user was just created, so re-runs keep them)
for a in "erin:50" "frank:25"; do
    name=${a%%:*} days=${a#*:}
    grep -qF "[$name]" <<<"$created" || continue
    command -v faketime >/dev/null || die "faketime not installed (start.sh installs it)"
    faketime -f "-${days}d" samba-tool user setpassword "$name" --newpassword="$SEED_PW" \
        -s "$SAMBA_AD_SMB_CONF" >&2
done

log "seeded; objects:"
lq -b "OU=Corp,$BASE" "(&(objectCategory=person)(objectClass=user))" \
    sAMAccountName userPrincipalName mail pwdLastSet userAccountControl msDS-ResultantPSO \
    msDS-UserPasswordExpiryTimeComputed msDS-User-Account-Control-Computed
lq -b "$grp_dn" -s base member
lq -b "$pso_dn" -s base msDS-PasswordSettingsPrecedence msDS-MaximumPasswordAge \
    msDS-MinimumPasswordLength msDS-PSOAppliesTo
