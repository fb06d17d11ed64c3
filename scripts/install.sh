#!/usr/bin/env bash
# Idempotent set-up of a fresh machine: Debian QGIS/GDAL packages, .venv, pinned Python deps.
# Fast when everything is already there (dpkg check + a requirements hash stamp).
set -euo pipefail
cd "$(dirname "$0")/.."

# python3-venv: Debian's python3 has no ensurepip without it, and nothing above pulls it in;
# python3-matplotlib: the report's, evaluation's and training's plots use the matplotlib QGIS uses
APT_PACKAGES="python3-qgis qgis qgis-providers python3-gdal gdal-bin python3-venv python3-matplotlib"
VENV=.venv
STAMP="$VENV/.requirements.sha256"

missing=""
for p in $APT_PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "install: Debian packages missing:$missing"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "install: run as root or install:$missing" >&2; exit 1; }
    SUDO=sudo
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi

# bin/pip, not bin/python: a venv whose ensurepip failed has its python but no pip
if [ ! -x "$VENV/bin/pip" ]; then
  echo "install: creating $VENV (system site-packages, for qgis and osgeo)"
  /usr/bin/python3 -m venv --clear --system-site-packages "$VENV"
fi

# onnxruntime-gpu where an NVIDIA GPU is visible, the CPU build elsewhere.
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  ORT_REQ=requirements-gpu.txt
else
  ORT_REQ=requirements-cpu.txt
fi
want=$(cat requirements.txt "$ORT_REQ" | sha256sum | cut -d' ' -f1)
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$want" ]; then
  echo "install: installing Python requirements ($ORT_REQ)"
  # Only one of the two onnxruntime builds may be present.
  other=$([ "$ORT_REQ" = requirements-gpu.txt ] && echo onnxruntime || echo onnxruntime-gpu)
  "$VENV/bin/pip" uninstall -q -y "$other" >/dev/null 2>&1 || true
  # a venv of an earlier requirements.txt has pip's matplotlib, which shadows Debian's badly
  # (pip leaves the system copy alone: it uninstalls only inside the venv)
  "$VENV/bin/pip" uninstall -q -y matplotlib >/dev/null 2>&1 || true
  "$VENV/bin/pip" install -q --disable-pip-version-check -r requirements.txt -r "$ORT_REQ"
  echo "$want" > "$STAMP"
fi
"$VENV/bin/python" - <<'PY'
import numpy, onnxruntime, torch
from osgeo import gdal, gdal_array  # noqa: F401  (fails under numpy 2: pinned < 2)
assert numpy.__version__.startswith("1."), numpy.__version__
print(f"install: ok (numpy {numpy.__version__}, torch {torch.__version__}, "
      f"onnxruntime {onnxruntime.__version__} {onnxruntime.get_available_providers()}, "
      f"GDAL {gdal.__version__})")
PY
