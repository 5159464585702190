#!/usr/bin/env bash
# Idempotent set-up for every make target (and CI): system peers and the project's own venv.
#
#   tools/bootstrap.sh [EXTRAS]      EXTRAS: comma-separated optional-dependency groups, default "dev"
#
# 1. mosquitto and socat (Debian packages) for the real-peer tests, and mosquitto-clients, tmux and
#    openssl for the demo and its tests, chromium and chromium-driver for the console's browser
#    tests; installed with apt-get only when missing. The broker service the package would start is kept from starting: tests run their own
#    mosquitto on a free loopback port.
# 2. .venv in the repo root (python3 -m venv), then `pip install -e '.[EXTRAS]'`, skipped while
#    pyproject.toml is unchanged since the last successful install (.venv/.picogate-installed holds
#    its sha256 and the groups installed).
# 3. Where ../shared/rp2 is beside the checkout (the rp2 MicroPython build and the rp2040js runner
#    for tests/rp2, the emulated Pico): node and npm (Debian's nodejs and npm when missing), then
#    `tools/rp2emu.py setup` copies that folder into .rp2/ and runs `npm ci` there from its lock
#    file, only when the copy is missing or out of date.
#
# Quiet unless something fails, except the install into .venv, which names each package it fetches
# (with its size) as it goes (tools/pip_progress.py): the first set-up takes minutes.
# Environment: PYTHON (default python3), PICOGATE_SKIP_SYSTEM=1 to leave system packages alone.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EXTRAS="${1:-dev}"
PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv"
STAMP="$VENV/.picogate-installed"

say() { printf 'bootstrap: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

case "$EXTRAS" in
    *[!a-z0-9,_-]*) die "extras must look like 'dev' or 'dev,micropython', got '$EXTRAS'" ;;
esac

LOG="$(mktemp "${TMPDIR:-/tmp}/picogate-bootstrap.XXXXXX")"
trap 'rm -f "$LOG"' EXIT

# Run a command with its output kept in $LOG; show it only if the command fails.
quiet() {
    if ! "$@" >"$LOG" 2>&1; then
        say "failed: $*"
        cat "$LOG" >&2
        return 1
    fi
}

# One bootstrap at a time per checkout (make -j, two terminals).
if command -v flock >/dev/null 2>&1; then
    LOCK="${TMPDIR:-/tmp}/picogate-bootstrap.$(id -u).$(printf '%s' "$ROOT" | sha256sum | cut -c1-16).lock"
    exec 9>"$LOCK"
    flock -w 600 9 || die "another bootstrap of $ROOT held the lock for 10 minutes ($LOCK)"
fi

# --- system packages -----------------------------------------------------------------------------

# `command -v` alone also reports a file on PATH that is not executable: check -x as well.
have_exe() {
    local path
    path="$(command -v "$1" 2>/dev/null)" && [ -x "$path" ] && [ -f "$path" ]
}
have_mosquitto() { have_exe mosquitto || [ -x /usr/sbin/mosquitto ]; }
have_socat() { have_exe socat; }
have_venv() { "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; }

APT_UPDATED=0
apt_install() {
    if [ "$(id -u)" -ne 0 ]; then
        die "missing system packages: $*. Install them as root, e.g.
    sudo apt-get update && sudo apt-get install -y $*
then run this again."
    fi
    command -v apt-get >/dev/null 2>&1 || die "missing system packages ($*) and no apt-get here to install them"
    export DEBIAN_FRONTEND=noninteractive
    # Keep the packages' services from starting (the Debian mosquitto package starts a broker on
    # port 1883). policy-rc.d is honoured by invoke-rc.d and deb-systemd-invoke; only a file we
    # created ourselves is removed again.
    local policy=/usr/sbin/policy-rc.d own_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\n# picogate bootstrap: no service starts during install\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        own_policy=1
    fi
    local rc=0
    if [ "$APT_UPDATED" -eq 0 ]; then
        quiet apt-get update -q || rc=$?
        APT_UPDATED=1
    fi
    if [ "$rc" -eq 0 ]; then
        say "installing $* (apt-get)"
        quiet apt-get install -y -q --no-install-recommends "$@" || rc=$?
    fi
    if [ "$own_policy" -eq 1 ]; then rm -f "$policy"; fi
    return "$rc"
}

# If a system service for mosquitto runs anyway (systemd host without policy-rc.d support), stop
# and disable it: nothing of ours uses it. Only done right after we installed the package.
quiet_system_broker() {
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        systemctl disable --now mosquitto.service >/dev/null 2>&1 || true
    elif [ -x /etc/init.d/mosquitto ]; then
        /etc/init.d/mosquitto stop >/dev/null 2>&1 || true
    fi
}

if [ "${PICOGATE_SKIP_SYSTEM:-0}" != 1 ]; then
    missing=()
    have_mosquitto || missing+=(mosquitto)
    have_socat || missing+=(socat)
    # mosquitto_pub/sub: the demo's "try it" commands; tmux: the test of the demo's live view;
    # openssl: the TLS test makes its own CA.
    have_exe mosquitto_sub || missing+=(mosquitto-clients)
    have_exe tmux || missing+=(tmux)
    have_exe openssl || missing+=(openssl)
    # chromium and its chromedriver: the operator console's browser tests (tests/browser), driven
    # by Selenium through /usr/bin/chromedriver (no driver download). PICOGATE_SKIP_BROWSER=1: not.
    if [ "${PICOGATE_SKIP_BROWSER:-0}" != 1 ]; then
        have_exe chromium || missing+=(chromium)
        have_exe chromedriver || missing+=(chromium-driver)
    fi
    if [ "${#missing[@]}" -gt 0 ]; then
        apt_install "${missing[@]}"
        case " ${missing[*]} " in *" mosquitto "*) quiet_system_broker ;; esac
        have_mosquitto || die "mosquitto still not found after installing it"
        have_socat || die "socat still not found after installing it"
    fi
fi

# --- MQTT test brokers (tests/integration/test_mqtt_brokers.py) ---------------------------------
# The broker matrix runs the MQTT client against more brokers than mosquitto:
# - RabbitMQ 3.10 with its MQTT plugin (Debian's rabbitmq-server): installed with apt-get only when
#   missing, its system service kept from starting like mosquitto's (the tests run a node of their
#   own, with its own name, ports and data in a temp dir);
# - aedes (npm, on the machine's Node.js; Debian's nodejs and npm when missing): `npm ci` from
#   tests/brokers/aedes/package-lock.json into .brokers/aedes/, only when that copy is missing or
#   the lock file changed;
# - amqtt (PyPI) comes with the dev extras, into .venv, like the codec's oracle, mqtt5.
# PICOGATE_SKIP_BROKERS=1 leaves all of this alone (the matrix then skips what is missing).

have_rabbitmq() { [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; }

# Stop and disable the service the rabbitmq-server package may have started anyway (a systemd
# host without policy-rc.d support), and its epmd: nothing of ours uses them.
quiet_system_rabbitmq() {
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        systemctl disable --now rabbitmq-server.service >/dev/null 2>&1 || true
    elif [ -x /etc/init.d/rabbitmq-server ]; then
        /etc/init.d/rabbitmq-server stop >/dev/null 2>&1 || true
    fi
    # The package's set-up starts Erlang's port mapper as user rabbitmq, on every interface.
    local pid
    for pid in $(pgrep -u rabbitmq -x epmd 2>/dev/null); do kill "$pid" 2>/dev/null || true; done
}

if [ "${PICOGATE_SKIP_BROKERS:-0}" != 1 ]; then
    if [ "${PICOGATE_SKIP_SYSTEM:-0}" != 1 ]; then
        brokers_missing=()
        have_rabbitmq || brokers_missing+=(rabbitmq-server)
        { have_exe node && have_exe npm; } || brokers_missing+=(nodejs npm)
        if [ "${#brokers_missing[@]}" -gt 0 ]; then
            apt_install "${brokers_missing[@]}"
            case " ${brokers_missing[*]} " in *" rabbitmq-server "*) quiet_system_rabbitmq ;; esac
            have_rabbitmq || die "rabbitmq-server still not found after installing it"
        fi
    fi
    AEDES_SRC="$ROOT/tests/brokers/aedes"
    AEDES_DIR="$ROOT/.brokers/aedes"
    aedes_hash="$(cat "$AEDES_SRC/package.json" "$AEDES_SRC/package-lock.json" | sha256sum | cut -d' ' -f1)"
    if have_exe npm && { [ ! -d "$AEDES_DIR/node_modules/aedes" ] \
        || [ "$(cat "$AEDES_DIR/.installed" 2>/dev/null)" != "$aedes_hash" ]; }; then
        mkdir -p "$AEDES_DIR"
        rm -f "$AEDES_DIR/.installed"
        cp "$AEDES_SRC/package.json" "$AEDES_SRC/package-lock.json" "$AEDES_DIR/"
        say "installing aedes (npm ci)"
        (cd "$AEDES_DIR" && quiet npm ci --no-audit --no-fund --ignore-scripts)
        printf '%s\n' "$aedes_hash" >"$AEDES_DIR/.installed"
    fi
fi

# --- the project's venv --------------------------------------------------------------------------

command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (Python 3.11+ is needed)"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "$PYTHON is $("$PYTHON" -V 2>&1); picogate needs Python 3.11+"

# A venv whose interpreter is gone (python upgraded or moved: a dangling bin/python) is rebuilt.
# One whose interpreter exists but does not run for us (another user's venv, say) is left alone.
if [ -e "$VENV" ] && ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    if [ -e "$VENV/bin/python" ] || [ ! -f "$VENV/pyvenv.cfg" ] || [ ! -O "$VENV" ]; then
        die "$VENV exists but its python does not run for $(id -un); remove it (rm -rf .venv) and run again"
    fi
    say "$VENV lost its interpreter; recreating it"
    rm -rf "$VENV"
fi

if [ ! -x "$VENV/bin/python" ]; then
    if ! have_venv; then
        # Debian's own python3 ships venv/ensurepip separately.
        apt_install python3-venv
        have_venv || die "$PYTHON cannot create venvs (no ensurepip) even after installing python3-venv"
    fi
    quiet "$PYTHON" -m venv "$VENV"
    rm -f "$STAMP"
fi

# Keep git from listing the venv even before the repo's .gitignore names it (Python 3.13's venv
# writes this file itself; 3.11's does not).
[ -e "$VENV/.gitignore" ] || printf '# created by tools/bootstrap.sh\n*\n' >"$VENV/.gitignore"

want_hash="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"

# Installed already? Same pyproject.toml hash, and every requested group among those installed.
up_to_date() {
    [ -f "$STAMP" ] || return 1
    local hash groups group
    read -r hash groups <"$STAMP" || return 1
    [ "$hash" = "$want_hash" ] || return 1
    for group in ${EXTRAS//,/ }; do
        case ",$groups," in *",$group,"*) ;; *) return 1 ;; esac
    done
}

if ! up_to_date; then
    # Groups installed before and still wanted stay: union of the old and the new.
    groups="$EXTRAS"
    if [ -f "$STAMP" ]; then
        read -r old_hash old_groups <"$STAMP" || true
        if [ "${old_hash:-}" = "$want_hash" ] && [ -n "${old_groups:-}" ]; then
            groups="$(printf '%s,%s\n' "$old_groups" "$EXTRAS" | tr ',' '\n' | sed '/^$/d' | sort -u | paste -sd, -)"
        fi
    fi
    if [ -f "$STAMP" ]; then
        say "installing picogate[$groups] into .venv (pyproject.toml changed)"
    else
        say "first set-up: installing picogate[$groups] and its dependencies into .venv (a few minutes; each package is shown)"
    fi
    rm -f "$STAMP"
    # pip's output, one line per package fetched (with its size), kept in $LOG; all of it on failure.
    : >"$LOG"
    rc=0
    (cd "$ROOT" && "$VENV/bin/python" -m pip install --disable-pip-version-check --progress-bar off \
        -e ".[$groups]" 2>&1 | "$VENV/bin/python" "$ROOT/tools/pip_progress.py" "$LOG") || rc=$?
    if [ "$rc" -ne 0 ]; then
        say "failed: pip install -e .[$groups]"
        cat "$LOG" >&2
        exit 1
    fi
    printf '%s %s\n' "$want_hash" "$groups" >"$STAMP"
fi

# --- the emulated Pico (tests/rp2) -----------------------------------------------------------------

RP2_SRC="${PICOGATE_RP2:-$ROOT/../shared/rp2}"
if [ -f "$RP2_SRC/rp2emu.mjs" ]; then
    if [ "${PICOGATE_SKIP_SYSTEM:-0}" != 1 ] && { ! have_exe node || ! have_exe npm; }; then
        apt_install nodejs npm
    fi
    quiet "$VENV/bin/python" "$ROOT/tools/rp2emu.py" setup --quiet
fi

# --- the Sparkplug test host (tests/integration/test_sparkplug.py) ---------------------------------
# A primary host that is not our encoder: pysparkplug's codec (its own protobuf module) and
# paho-mqtt 1.6 (pysparkplug needs paho-mqtt < 2; .venv has 2.x), in a venv of their own. Pinned;
# rebuilt when the pins change. A failure here is reported and the Sparkplug host tests skip.
SPB_VENV="$ROOT/.venv-spb"
SPB_PINS="pysparkplug==0.6.1 paho-mqtt==1.6.1 protobuf==7.36.2"
if [ "${PICOGATE_SKIP_SPB:-0}" != 1 ] && [ "$(cat "$SPB_VENV/.installed" 2>/dev/null)" != "$SPB_PINS" ]; then
    rm -rf "$SPB_VENV"
    say "installing the Sparkplug test host's venv (.venv-spb: $SPB_PINS)"
    # shellcheck disable=SC2086
    if quiet "$PYTHON" -m venv "$SPB_VENV" \
        && quiet "$SPB_VENV/bin/python" -m pip install --disable-pip-version-check -q $SPB_PINS; then
        printf '%s' "$SPB_PINS" >"$SPB_VENV/.installed"
    else
        say "the Sparkplug test host's venv could not be made; its tests will skip"
    fi
fi
