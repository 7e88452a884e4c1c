#!/usr/bin/env bash
# A separate venv with peer segmentation packages for benchmarks/peers.py (issue #4, benchmark 4).
#
#     bash benchmarks/peers_setup.sh            # venv at ${PEERS_VENV:-/work/peers_venv}
#     $PEERS_VENV/bin/python benchmarks/peers.py --out peers.json
#
# The peers (Cellpose, StarDist + TensorFlow) stay OUT of napari-unet's dependencies: they live
# only in this venv, outside the repository. Every pip install passes the repository's
# constraints file, so torch stays the local CPU build (an unpinned torch pulls GBs of CUDA).
#
# Installed, in order (a failing peer is recorded and skipped, never fatal):
#   torch (first), napari-unet (editable, no extras), Cellpose 3 (cellpose<4), Cellpose 4
#   (Cellpose-SAM) into a side directory $PEERS_VENV/cellpose4 (it cannot share the
#   `cellpose` package name with Cellpose 3; peers.py swaps it in) with its extra
#   dependencies segment_anything + torchvision in the venv, StarDist + tensorflow-cpu.
# Each step's outcome, versions and seconds go to $PEERS_VENV/peers_install.tsv and the pip
# output to $PEERS_VENV/peers_install.log. No weights are downloaded here or by peers.py.
set -u

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PEERS_VENV:-/work/peers_venv}"
C="$REPO/constraints.txt"
PYTHON="${PYTHON:-python3}"
TORCH_PIN="torch==2.13.0"

case "$VENV" in "$REPO"|"$REPO"/*) echo "PEERS_VENV must be outside the repository" >&2; exit 2;; esac

"$PYTHON" -m venv "$VENV" || exit 1
PIP=("$VENV/bin/python" -m pip install -c "$C")
LOG="$VENV/peers_install.log"
TSV="$VENV/peers_install.tsv"
printf 'step\tstatus\tseconds\tversions\tcommand\n' > "$TSV"
: > "$LOG"

versions() {  # installed versions of the given distributions, from the venv's metadata
    "$VENV/bin/python" - "$@" <<'EOF'
import sys
from importlib.metadata import version, PackageNotFoundError
out = []
for name in sys.argv[1:]:
    try:
        out.append(f"{name}=={version(name)}")
    except PackageNotFoundError:
        out.append(f"{name}=absent")
print(" ".join(out))
EOF
}

# step NAME "DISTS TO REPORT" pip-args...
step() {
    local name="$1" report="$2"; shift 2
    local start end rc
    echo "== $name: pip install -c $C $*" | tee -a "$LOG"
    start=$(date +%s.%N)
    "${PIP[@]}" "$@" >> "$LOG" 2>&1
    rc=$?
    end=$(date +%s.%N)
    local secs; secs=$(awk -v a="$start" -v b="$end" 'BEGIN{printf "%.1f", b-a}')
    local status=ok; [ $rc -ne 0 ] && status="failed(rc=$rc)"
    # shellcheck disable=SC2086
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$secs" "$(versions $report)" "pip install -c $C $*" >> "$TSV"
    echo "   -> $status in ${secs}s" | tee -a "$LOG"
    [ $rc -eq 0 ] || tail -n 15 "$LOG" | sed 's/^/   | /'
    return $rc
}

"$VENV/bin/python" -m pip install -q --upgrade pip >> "$LOG" 2>&1 || true
step torch "torch" "$TORCH_PIN" || { echo "torch failed: giving up" >&2; exit 1; }
step napari-unet "napari-unet torch numpy" -e "$REPO" || { echo "napari-unet failed: giving up" >&2; exit 1; }

# Cellpose 3: its network (CPnet) needs only torch.
step cellpose3 "cellpose torch numpy opencv-python-headless fastremap" "cellpose<4" || true

# Cellpose 4 (Cellpose-SAM) into a side directory, dependencies into the venv itself. Its
# SAM encoder comes from segment_anything, which imports torchvision; the only torchvision
# wheels here are the PyPI (CUDA-linked) ones, pinned to this torch by the constraint.
step cellpose4-deps "segment_anything torchvision torch" segment_anything torchvision || true
# The PyPI torchvision wheel is a CUDA build (bundles libcudart); with the CPU torch its _C.so
# does not load and `import torchvision` raises. Record that, and remove the broken package so
# nothing else trips over it (peers.py then stubs torchvision for the SAM encoder, and says so).
if TV_ERR=$("$VENV/bin/python" -c "import torchvision" 2>&1); then
    printf 'torchvision-import\tok\t0\t%s\t-\n' "$(versions torchvision)" >> "$TSV"
else
    TV_ERR=$(printf '%s' "$TV_ERR" | grep -E 'Error|error' | tail -n 1)
    echo "   torchvision does not import: $TV_ERR" | tee -a "$LOG"
    printf 'torchvision-import\tfailed\t0\t%s: %s\tpip uninstall -y torchvision\n' "$(versions torchvision)" "$TV_ERR" >> "$TSV"
    "$VENV/bin/python" -m pip uninstall -y torchvision >> "$LOG" 2>&1
fi
CP4="$VENV/cellpose4"
rm -rf "$CP4"
step cellpose4 "torch" --no-deps --target "$CP4" "cellpose>=4,<5" || true
CP4_VERSION=$(ls -d "$CP4"/cellpose-*.dist-info 2>/dev/null | sed -E 's/.*cellpose-(.*)\.dist-info/\1/')
echo "cellpose4 side directory: ${CP4_VERSION:-absent}" | tee -a "$LOG"
CP4_STATUS=${CP4_VERSION:+ok}
printf 'cellpose4-version\t%s\t0\tcellpose==%s (in %s)\t-\n' "${CP4_STATUS:-failed}" "${CP4_VERSION:-absent}" "$CP4" >> "$TSV"

# StarDist on TensorFlow (CPU wheel); csbdeep >= 0.8 runs on Keras 3, so no tf_keras.
step stardist "stardist csbdeep tensorflow-cpu keras numpy" stardist tensorflow-cpu || true

# Nothing above may have replaced the CPU torch.
"$VENV/bin/python" -c "import torch; assert torch.__version__.endswith('+cpu'), torch.__version__; print('torch', torch.__version__)" | tee -a "$LOG"
echo
column -t -s $'\t' "$TSV" 2>/dev/null || cat "$TSV"
du -sh "$VENV"
