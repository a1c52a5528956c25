#!/usr/bin/env bash
# Install everything the test suite needs (Debian packages when missing, the
# package itself with its test extra), type-check the package and run the
# whole suite.
# Usage: bash tools/test-all.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests drive: a real OpenLDAP server and its clients,
# the SASL mechanisms (DIGEST-MD5, SCRAM) the SASL tests bind with, and a
# Samba AD DC for the Active Directory tests (CLDAP, GC, sealed SASL), and
# HAProxy (send-proxy-v2 in front of ldaproute, the PROXY protocol test, and
# a bench target), Redis (the shared bind-throttle store of the fleet tests),
# the libraries of the bench's load generator ldclt, and headless Chromium
# with its WebDriver (the status page test, via Selenium), and 389 Directory
# Server with lib389's dscreate (shared mode in front of 389: tests/integration/ds389.py),
# and a C compiler with Python's headers (the optional mypyc build, tools/test-compiled.sh).
packages="gcc python3-dev slapd ldap-utils libsasl2-modules openssl haproxy redis-server libnss3 libnspr4 chromium chromium-driver
389-ds-base python3-lib389 samba samba-ad-dc samba-ad-provision samba-dsdb-modules samba-vfs-modules winbind smbclient krb5-user ldb-tools"
missing=""
for package in $packages; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing="$missing $package"
done
if [ -n "$missing" ]; then
    echo "installing Debian packages:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing
fi

# ldclt, the bench's load generator (the suite runs the bench's smoke form),
# unpacked from Debian's 389-ds-base package without installing the server
if ! command -v ldclt >/dev/null && [ ! -x bench/.tools/usr/bin/ldclt ]; then
    mkdir -p bench/.tools
    (
        cd bench/.tools
        apt-get download 389-ds-base >/dev/null 2>&1 || { apt-get update -qq && apt-get download 389-ds-base >/dev/null; }
        dpkg -x 389-ds-base_*.deb .
    )
fi

python3 -m pip install --quiet --disable-pip-version-check '.[test]'
# the type checker over ldaproute/ (setup.cfg [mypy], with mypy-zope for the
# zope interfaces at the seams); a type error fails the run before the tests
python3 -m mypy

# the optional compiled build (LDAPROUTE_MYPYC=1), unit suite against it
bash tools/test-compiled.sh
exec python3 -m pytest "$@"
