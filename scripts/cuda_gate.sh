#!/bin/bash
# The demo's spec (250 phantom patients split 100 / 100 / 50, 32 px, 100 synthetic patients, every default threshold)
# on a GPU at larger training budgets: does the gate RELEASE a generator that had the time to learn? The CPU demo
# trains 2 epochs (43 s on 2 cores) and is blocked by the discriminator; this runs the same gate with the large
# network (what `device = "cuda"` picks) trained for each budget in EPOCHS, within the seconds in BUDGET_S.
# Measured (H200, 2026-12-04): 40 epochs did not finish in 540 s (the large network at batch 16 is launch-bound:
# ~130 steps per epoch for 2100 slices, and the calibrated attack trains two references of the same budget), so
# budget ~20 epochs per 5 minutes. Stage times are in the log (no --quiet).
# Usage: bash scripts/cuda_gate.sh OUT_DIR "60 200" [BUDGET_S]   (cmri_release importable; PYTHONPATH may point here)
set -uo pipefail
out=${1:?usage: cuda_gate.sh OUT_DIR "EPOCHS..." [BUDGET_S]}
epochs_list=${2:-60}
budget=${3:-540}
mkdir -p "$out"
start=$(date +%s)
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))" \
    | tee "$out/device.txt"
for epochs in $epochs_list; do
    left=$(( budget - ($(date +%s) - start) ))
    if [ "$left" -lt 120 ]; then echo "epochs $epochs: skipped, ${left}s left" | tee -a "$out/device.txt"; continue; fi
    work=$(mktemp -d)
    python3 -c "from cmri_release.cli import main; main()" demo --write-spec "$work/spec.toml" >/dev/null
    sed -i -e "s/^epochs = .*/epochs = $epochs/" -e 's/^device = "cpu"/device = "cuda"/' "$work/spec.toml"
    PYTHONUNBUFFERED=1 timeout "$left" python3 -c "from cmri_release.cli import main; main()" release "$work/spec.toml" \
        > "$out/release_e$epochs.log" 2>&1
    rc=$?
    cp "$work/release.audit/audit.json" "$out/audit_e$epochs.json" 2>/dev/null
    echo "epochs $epochs: release rc=$rc after $(( $(date +%s) - start ))s" | tee -a "$out/device.txt"
    tail -45 "$out/release_e$epochs.log"
done
