#!/usr/bin/env bash
# GPU check, for a machine with a CUDA GPU (under 5 minutes): run from the repository root
# with the venv in place (`make test` creates it; JAX's CUDA build installed into it as
# JAX's installation guide says, for the JAX rows).
#
#   bash benchmarks/gpu_check.sh            # results into docs/performance.md (section "GPU")
#
# 1. the backend tests on the real GPU (no simulator: NUMBA_ENABLE_CUDASIM unset);
# 2. the estimator benchmark with the cuda row, against the device's own copy bandwidth
#    (target: cuda >= 60% of it) and the JAX backend on the GPU;
# 3. a short learner run on the GPU (JAX picks it by itself);
# 4. only where more than one GPU is visible: seeds and envs split over 1, 2, ... devices
#    (gpae_ref.learner.devices), env-steps/s per device count.
# Each step's output goes to $OUT_DIR (default runs/gpu_check); the summary is written
# between the <!-- gpu:begin --> / <!-- gpu:end --> markers of docs/performance.md.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT_DIR=${OUT_DIR:-runs/gpu_check}
mkdir -p "$OUT_DIR"
unset NUMBA_ENABLE_CUDASIM

"$PY" -c "from numba import cuda; assert cuda.is_available(), 'no CUDA GPU visible to numba'; print(cuda.get_current_device().name)" \
  | tee "$OUT_DIR/device.txt" || { echo "gpu_check: no CUDA GPU; nothing measured"; exit 2; }

echo "== backend tests on the GPU"
timeout 150 "$PY" -m pytest -q -p no:cacheprovider --hypothesis-profile=ci \
  tests/test_backends.py tests/test_dtypes.py -k "cuda or jax" 2>&1 | tail -15 | tee "$OUT_DIR/tests.txt"
tests_rc=${PIPESTATUS[0]}

echo "== estimator benchmark (cuda row, device copy, jax on the GPU)"
timeout 100 "$PY" benchmarks/bench_estimators.py --repeats 11 2>&1 | tee "$OUT_DIR/bench.txt"

echo "== short learner run on the GPU"
timeout 120 "$PY" -m gpae_ref.train --scenario 3m --advantage gpae --num-envs 64 --num-steps 64 \
  --total-steps 40960 --no-progress --runs-dir "$OUT_DIR/runs" --overwrite 2>&1 | tail -5 \
  | tee "$OUT_DIR/learner.txt"

n_gpus=$("$PY" -c "import jax; print(len(jax.devices('gpu')))" 2>/dev/null || echo 0)
: > "$OUT_DIR/multi.txt"
if [ "${n_gpus:-0}" -gt 1 ]; then
  echo "== several devices ($n_gpus GPUs): envs and seeds split, env-steps/s per device count"
  for d in 1 2 4 8; do
    [ "$d" -le "$n_gpus" ] || break
    timeout 120 "$PY" -m gpae_ref.train --scenario 3m --advantage gpae --num-envs 256 --num-steps 64 \
      --total-steps 163840 --no-progress --devices "$d" --runs-dir "$OUT_DIR/runs" --name "envs-$d" --overwrite \
      2>&1 | grep -E "^done|envs over|device" | sed "s/^/envs, $d devices: /" | tee -a "$OUT_DIR/multi.txt"
    [ "$d" -le 2 ] || continue  # the tiny scale has 2 seeds
    timeout 150 "$PY" -m gpae_ref.experiments main --scale tiny --variants gpae-K1 --devices "$d" \
      --root "$OUT_DIR/results-$d" 2>&1 | grep -E "seeds over|finished|done" | sed "s/^/seeds, $d devices: /" \
      | tee -a "$OUT_DIR/multi.txt"
  done
else
  echo "one GPU visible: no multi-device section" | tee "$OUT_DIR/multi.txt"
fi

"$PY" - "$OUT_DIR" "$tests_rc" <<'EOF'
import pathlib, sys
out, rc = pathlib.Path(sys.argv[1]), sys.argv[2]
read = lambda name: (out / name).read_text().strip() if (out / name).exists() else "(missing)"
block = "\n".join([
    "<!-- gpu:begin -->",
    f"Device: {read('device.txt')}. Command: `bash benchmarks/gpu_check.sh`.",
    "", f"Backend tests on the GPU (exit {rc}):", "", "```", read("tests.txt"), "```",
    "", "Estimator benchmark:", "", read("bench.txt"),
    "", "Short learner run:", "", "```", read("learner.txt"), "```",
    "", "Several devices (env-steps/s per device count):", "", "```", read("multi.txt"), "```",
    "<!-- gpu:end -->",
])
doc = pathlib.Path("docs/performance.md")
text = doc.read_text()
begin, end = "<!-- gpu:begin -->", "<!-- gpu:end -->"
if begin in text and end in text:
    text = text[: text.index(begin)] + block + text[text.index(end) + len(end):]
else:
    text += "\n## GPU\n\n" + block + "\n"
doc.write_text(text)
print("gpu_check: results written to docs/performance.md")
EOF
