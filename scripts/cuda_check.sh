#!/bin/bash
# The checks a CUDA machine runs (none of them can run in CI, which has no GPU): the tests marked `cuda`, then the
# release gate at full size (the large networks, 128 px) on the GPU, with its stage times.
# Usage: bash scripts/cuda_check.sh OUT_DIR   (the packages must be importable; PYTHONPATH may point at the repo)
set -uo pipefail
out=${1:?usage: cuda_check.sh OUT_DIR}
mkdir -p "$out"
python3 - <<'PY' 2>&1 | tee "$out/device.txt"
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))
PY
PYTHONUNBUFFERED=1 timeout 300 python3 -m pytest -q -m cuda -p no:cacheprovider tests 2>&1 | tee "$out/cuda_tests.log"
tests_rc=${PIPESTATUS[0]}
work=$(mktemp -d)
cat > "$work/spec.toml" <<'TOML'
seed = 0
[data]
size = 128
[data.phantom]
subjects = 40
[generator]
name = "flow"
epochs = 30
device = "cuda"
[synthesis]
subjects = 20
[audit]
utility_epochs = 6.0
[export]
out = "release"
formats = ["nifti", "dicom"]
TOML
PYTHONUNBUFFERED=1 timeout 330 python3 -c "from cmri_release.cli import main; main()" release "$work/spec.toml" 2>&1 \
    | tee "$out/release_128px_cuda.log"
release_rc=${PIPESTATUS[0]}
cp "$work/release.audit/audit.json" "$out/audit_128px_cuda.json" 2>/dev/null
cp "$work/release.audit/model/model_card.json" "$out/model_card_128px_cuda.json" 2>/dev/null
echo "tests rc=$tests_rc release rc=$release_rc" | tee -a "$out/device.txt"
