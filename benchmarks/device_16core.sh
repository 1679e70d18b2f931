#!/usr/bin/env bash
# Question: on a 16-core machine, how do raynn, the serial baselines, Ray Tune and uncapped
# processes compare on the same K-fold jobs (DESIGN.md section 4's picture)?
#
# Runs on the lent device machine (Python 3.12 with torch/pandas/pyarrow/scikit-learn, no Ray,
# no registry): unpacks the Ray 2.60 site bundle carried in .device/, puts it and this repo on
# PYTHONPATH, then runs `raynn bench kfold` on two offline specs. Results go to $OUT.
set -euo pipefail
OUT=${OUT:-$PWD/device-out}
SITE=$(mktemp -d)
tar -xJf .device/ray-2.60-site.tar.xz -C "$SITE"
export PYTHONPATH="$SITE:$SITE/ray/thirdparty_files:$PWD"
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-token}
mkdir -p "$OUT"
{
  nproc; python3 --version
  python3 -c 'import os, torch, ray, sklearn, pandas, pyarrow, yaml, psutil; print("cpus", len(os.sched_getaffinity(0)), "torch", torch.__version__, "ray", ray.__version__)'
  grep -m1 "model name" /proc/cpuinfo
} 2>&1 | tee "$OUT/machine.txt"
# K-fold: the mixed grid (tail bar) by default; RUNS="lenet_synthetic16:150 ..." for others
for run in ${RUNS:-mixed_synthetic_cifar:230}; do
  spec=${run%%:*}
  set +e
  timeout "${run##*:}" python3 -m raynn bench kfold --spec "benchmarks/specs/$spec.yaml" \
    --modes serial,serial1,raynn,tune,processes --timeout 60 --no-progress \
    --output "$OUT/bench" >"$OUT/$spec.log" 2>&1
  echo "$spec: exit $?"
  set -e
  grep -vE "WARNING|INFO" "$OUT/$spec.log" | tail -15
done
# cores_per_job: auto (a size per model) against each single size (AUTO_SECONDS=0 skips)
if [ "${AUTO_SECONDS:-200}" != 0 ]; then
  set +e
  timeout "${AUTO_SECONDS:-200}" python3 benchmarks/kfold_auto_sizes.py --output "$OUT/bench" \
    >"$OUT/auto_sizes.log" 2>&1
  echo "auto sizes: exit $?"
  set -e
  grep -vE "WARNING|INFO" "$OUT/auto_sizes.log" | tail -12
fi
# the cost of being a Ray actor: one training loop per core in actors vs plain processes
set +e
timeout "${TAX_SECONDS:-180}" python3 benchmarks/ray_actor_tax.py --seconds 6 --repeats 2 \
  >"$OUT/actor_tax.log" 2>&1
echo "actor tax: exit $?"
set -e
grep -vE "WARNING|INFO" "$OUT/actor_tax.log" | tail -5
# HOGWILD: raynn on one node against PyTorch's share_memory processes at 4 and 16 workers, on
# both workloads of benchmarks/hogwild_throughput.py (spec:epochs; LeNet held to the bar)
for run in ${HOGWILD_RUNS:-hogwild_lenet_synthetic:100 hogwild_mlp_digits:300}; do
  spec=${run%%:*}
  set +e
  timeout "${HOGWILD_SECONDS:-250}" python3 -m raynn bench hogwild \
    --spec "benchmarks/specs/$spec.yaml" --workers "${HOGWILD_WORKERS:-4,16}" \
    --modes raynn,torch,torch_ray --epochs "${run##*:}" --repeats 2 --no-progress \
    --output "$OUT/bench" >"$OUT/$spec.log" 2>&1
  echo "$spec: exit $?"
  set -e
  grep -vE "WARNING|INFO" "$OUT/$spec.log" | tail -12
done
