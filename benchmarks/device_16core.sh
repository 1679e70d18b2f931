#!/usr/bin/env bash
# Question: on a 16-core machine, does `raynn run` finish 64 equal LeNet jobs (4 per core) at
# parallel efficiency >= 0.8 from its makespan and >= 0.7 from its wall time, and sooner
# than a thread-capped joblib pool, Ray Tune reusing its actors and a pinned multi-instance
# split; does it keep the cores busy over the last 20% of a mixed CIFAR-shaped grid (>= 75%);
# and does its HOGWILD reach 0.9 of PyTorch's at 16 workers (issue 11, items 4 and 5)?
# Issue 23: is a 1,000-job grid of one-epoch jobs at most 1.0x a joblib pool (grid1000); how
# many jobs a second does the queue actor hand out to 8-256 workers (queue); how many files
# and how fast are the tables and the report of a 10,000-job run (tables); the mixed grid on
# the Ray executor (mixed, with raynn_ray)?
#
# STEPS chooses the steps (default: all but the issue-23 ones, which fit a second call):
#   run(command="STEPS='grid1000 queue tables mixed' bash benchmarks/device_16core.sh", ...)
#
# Runs on the lent device machine (Python 3.12 with torch, pandas, pyarrow, scikit-learn; no
# Ray, no registry). Carry .device/ holding ray-2.60-site.tar.xz (../shared/py312) and the
# cloudpickle wheel (`pip download cloudpickle --no-deps -d .device`); this script unpacks
# them onto PYTHONPATH. One call, under 8 minutes; every bench writes its tables after each
# mode run, so a cut-short call keeps what it measured. Results go to $OUT.
#
#   run(command="bash benchmarks/device_16core.sh", carry=[".device"], timeout_s=540)
set -euo pipefail
OUT=${OUT:-$PWD/device-out}
SITE=$(mktemp -d)
if [ -f .device/ray-2.60-site.tar.xz ]; then  # absent where Ray is installed (a smoke test)
  tar -xJf .device/ray-2.60-site.tar.xz -C "$SITE"
fi
for wheel in .device/*.whl; do
  if [ -e "$wheel" ]; then python3 -m zipfile -e "$wheel" "$SITE"; fi
done
export PYTHONPATH="$SITE:$SITE/ray/thirdparty_files:$PWD"
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-token}
export RAYNN_CACHE_DIR="$OUT/cache"
mkdir -p "$OUT"
{
  nproc; python3 --version
  python3 -c 'import os, torch, ray, sklearn, pandas, pyarrow, yaml, psutil, cloudpickle, joblib, threadpoolctl; print("cpus", len(os.sched_getaffinity(0)), "torch", torch.__version__, "ray", ray.__version__)'
  grep -m1 "model name" /proc/cpuinfo
  lscpu | grep -E "^(Thread|Core|Socket|NUMA)" || true
} 2>&1 | tee "$OUT/machine.txt"

STEPS=${STEPS:-ceiling lenet64 mixed hogwild}
step() {  # step NAME SECONDS COMMAND...: run with a time limit, keep going on failure
  local name=$1 limit=$2
  shift 2
  case " $STEPS " in *" ${name%%_*} "*) ;; *) return 0 ;; esac
  set +e
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  echo "$name: exit $?"
  set -e
  grep -vE "WARNING|INFO" "$OUT/$name.log" | tail -16 || true
}

# the machine's own packed ceiling: the same LeNet job alone vs on every core (no scheduler)
step ceiling "${CEILING_SECONDS:-60}" python3 benchmarks/packing_ceiling.py \
  --spec benchmarks/specs/lenet_synthetic64.yaml --repeats 2
# 64 LeNet jobs: efficiency from makespan and wall time, against the peers
step lenet64 "${LENET_SECONDS:-200}" python3 -m raynn bench kfold \
  --spec benchmarks/specs/lenet_synthetic64.yaml \
  --modes "${LENET_MODES:-serial1,raynn,pool,multi_instance,tune}" --timeout 150 \
  --no-progress --output "$OUT/bench"
# the mixed CIFAR-shaped grid: the tail (cpu_last20) and the peers
step mixed "${MIXED_SECONDS:-120}" python3 -m raynn bench kfold \
  --spec benchmarks/specs/mixed_synthetic_cifar.yaml \
  --modes "${MIXED_MODES:-serial1,raynn,raynn_ray,pool,multi_instance}" --timeout 100 \
  --no-progress --output "$OUT/bench"
# HOGWILD at 16 workers on both workloads of benchmarks/hogwild_throughput.py
for run in ${HOGWILD_RUNS:-hogwild_lenet_synthetic:60 hogwild_mlp_digits:300}; do
  spec=${run%%:*}
  step "hogwild_${spec#hogwild_}" "${HOGWILD_SECONDS:-60}" python3 -m raynn bench hogwild \
    --spec "benchmarks/specs/$spec.yaml" --workers "${HOGWILD_WORKERS:-16}" \
    --modes raynn,torch --epochs "${run##*:}" --repeats 2 --no-progress --output "$OUT/bench"
done
# issue 23: a 1,000-job grid of one-epoch MLP jobs against a joblib pool
step grid1000 "${GRID_SECONDS:-150}" python3 -m raynn bench kfold \
  --spec benchmarks/specs/grid1000_digits.yaml --modes raynn,pool --repeats 2 --timeout 70 \
  --no-progress --output "$OUT/bench"
# issue 23: the queue actor's jobs/s with 8 to 256 worker loops
step queue "${QUEUE_SECONDS:-90}" python3 -m raynn bench scale \
  --spec benchmarks/specs/mixed_digits.yaml --queue-workers 8,32,128,256 --queue-jobs 5000 \
  --queue-repeats 2 --queue-runners 8 --output "$OUT/bench"
# issue 23: files per table, reading them, and raynn report at 1,000 and 10,000 jobs
step tables "${TABLES_SECONDS:-200}" python3 benchmarks/table_files.py --jobs 1000,10000
