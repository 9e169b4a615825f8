#!/usr/bin/env bash
# The plugin's tests under the newest QGIS that Debian ships (sid), with the light install (ONNX Runtime, no
# PyTorch) on that system's Python: `make test-newest-qgis` runs this after writing the ONNX test models.
#
#   tools/test_newest_qgis.sh LIGHT_MODELS_DIR [PYTEST ARGS...]
#
# Builds once, then reuses, a Debian sid chroot with python3-qgis in $NEWEST_QGIS_ROOT (default
# /var/cache/cwsam/debian-sid; about 2.4 GB, a minute or two on this machine) and a venv in it with
# requirements-classify.txt (rebuilt when that file changes). The checkout is bind-mounted at /cwsam for the run
# and unmounted at the end. Needs root (debootstrap, chroot, mount) and the Debian mirror of this machine's apt
# sources; pip inside uses this machine's CA certificates and reaches the same package index as here.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
ROOT=${NEWEST_QGIS_ROOT:-/var/cache/cwsam/debian-sid}
SUITE=${NEWEST_QGIS_SUITE:-sid}
MODELS=${1:?usage: $0 LIGHT_MODELS_DIR [pytest args]}
shift
MODELS=$(cd "$MODELS" && pwd)
case "$MODELS" in "$REPO"/*) ;; *) echo "the ONNX test models must lie inside the checkout ($REPO)" >&2; exit 2;; esac
VENV=/opt/cwsam-light
# The plugin tests that need no PyTorch: they classify with ONNX exports made beforehand with the full install.
LIGHT_TESTS=(tests/test_qt6_compat.py tests/test_plugin_skeleton.py tests/test_plugin_classify.py
             tests/test_plugin_processing.py tests/test_plugin_polygons.py tests/test_plugin_demo_onnx.py)
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo

mirror() {  # the Debian mirror this machine's apt uses
  local uri
  uri=$(grep -rhoE '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ \
        2>/dev/null | grep -oE 'https?://[^ ]+' | head -n 1 || true)
  echo "${uri:-http://deb.debian.org/debian}"
}

in_root() {  # a command in the chroot, with pip pointed at this machine's certificates
  $SUDO chroot "$ROOT" env -u PIP_FIND_LINKS -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL \
    PIP_CERT=/etc/ssl/host-ca.crt SSL_CERT_FILE=/etc/ssl/host-ca.crt REQUESTS_CA_BUNDLE=/etc/ssl/host-ca.crt \
    DEBIAN_FRONTEND=noninteractive QT_QPA_PLATFORM=offscreen PYTHONDONTWRITEBYTECODE=1 HOME=/root "$@"
}

mounted() { grep -q " $1 " /proc/mounts; }

unmount_all() {
  for point in "$ROOT/cwsam" "$ROOT/proc"; do
    if mounted "$point"; then $SUDO umount "$point" || $SUDO umount -l "$point"; fi
  done
}
trap unmount_all EXIT

if [ ! -f "$ROOT/.cwsam-ready" ]; then
  command -v debootstrap >/dev/null || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq debootstrap; }
  unmount_all
  $SUDO rm -rf --one-file-system "$ROOT"
  $SUDO mkdir -p "$ROOT"
  echo "Building a Debian $SUITE chroot with QGIS in $ROOT (once; reused afterwards)"
  $SUDO debootstrap --variant=minbase "$SUITE" "$ROOT" "$(mirror)" >/dev/null
  $SUDO cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
  $SUDO mount -t proc proc "$ROOT/proc"
  in_root apt-get -o Acquire::Check-Valid-Until=false update -qq
  in_root apt-get install -y -qq --no-install-recommends python3-qgis python3-venv python3-pip ca-certificates \
    >/dev/null
  $SUDO touch "$ROOT/.cwsam-ready"
fi

$SUDO cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
$SUDO cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/host-ca.crt"
mounted "$ROOT/proc" || $SUDO mount -t proc proc "$ROOT/proc"
$SUDO mkdir -p "$ROOT/cwsam"
$SUDO mount --bind "$REPO" "$ROOT/cwsam"

# The light install, as `make setup-light` makes it: the system's numpy kept, requirements-classify.txt.
wanted=$(cat "$REPO/requirements-classify.txt" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$ROOT$VENV/.requirements-sha256" 2>/dev/null)" != "$wanted" ]; then
  echo "Installing the light install into $ROOT$VENV"
  $SUDO rm -rf "$ROOT$VENV"
  in_root /usr/bin/python3 -m venv --system-site-packages "$VENV"
  in_root sh -c "/usr/bin/python3 -c \"import numpy; print('numpy==' + numpy.__version__)\" > $VENV/system-constraints.txt"
  in_root "$VENV/bin/python" -m pip install --quiet -r /cwsam/requirements-classify.txt \
    -c "$VENV/system-constraints.txt" pytest pytest-qt
  echo "$wanted" | $SUDO tee "$ROOT$VENV/.requirements-sha256" >/dev/null
fi

in_root "$VENV/bin/python" -c "
import sys, importlib.util, numpy, rasterio, onnxruntime, shapely
from qgis.core import Qgis
from qgis.PyQt.QtCore import QT_VERSION_STR, PYQT_VERSION_STR
print(f'Newest Debian QGIS: QGIS {Qgis.QGIS_VERSION}, Python {sys.version.split()[0]}, Qt {QT_VERSION_STR}, '
      f'PyQt {PYQT_VERSION_STR}, numpy {numpy.__version__}, rasterio {rasterio.__version__} '
      f'(GDAL {rasterio.__gdal_version__}), onnxruntime {onnxruntime.__version__}, shapely {shapely.__version__}, '
      f'torch {\"present\" if importlib.util.find_spec(\"torch\") else \"absent\"}')"
in_root "$VENV/bin/python" /cwsam/tools/check_env.py --light
in_root sh -c "cd /cwsam && CWSAM_LIGHT_TEST_MODELS='/cwsam/${MODELS#"$REPO"/}' $VENV/bin/python -m pytest \
  -p no:cacheprovider ${LIGHT_TESTS[*]} $*"
