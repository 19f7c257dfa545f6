#!/usr/bin/env bash
# The checks we run on a lent CUDA GPU, in two calls (PHASE below): `streamfuse bench` of the
# compile engine on CUDA at 640x512 and 1280x1024, the CUDA tests, the demo pipeline on the GPU,
# where the time of a compiled batch goes (bench/gpu_profile.py), whether a hand-written kernel
# for the encoder's activations and the fusion layer's two |x| reductions would pay
# (bench/gpu_fused_stats.py), and the eager engine. Candidate changes to the compiled path are
# compared side by side with bench/gpu_ab.py (not run here).
#
#   OUT=bench/results/gpu STREAMFUSE_DATA=../shared/data PHASE=1 bash bench/gpu_checks.sh
#
# On this project's lent machines (no registry; PyTorch, OpenCV, PyYAML and tqdm installed), the
# package runs from the checkout with PYTHONPATH=. ; PyAV and pyzmq travel as wheels
# (`pip download --only-binary=:all: --python-version 3.12 ... av pyzmq`), and the tests need
# tno pairs 0-4 and flir-test pair 0 of ../shared/data copied into the checkout
# (STREAMFUSE_DATA). Each step has its own time limit, so a slow
# compile cannot cost the steps after it; the log keeps every progress line even when a step is
# cut off before it writes its JSON.
set -u
OUT=${OUT:-bench/results/gpu}
mkdir -p "$OUT"
LOG="$OUT/log.txt"
export PYTHONUNBUFFERED=1

step() {  # step SECONDS COMMAND...: run with a time limit, log its output and its exit status
    local limit=$1
    shift
    echo "== $(date -u +%H:%M:%S) $*" | tee -a "$LOG"
    timeout "$limit" "$@" 2>&1 | grep -v "DEBUG\|USDT" | tee -a "$LOG"
    echo "== exit ${PIPESTATUS[0]}" | tee -a "$LOG"
}

# Two calls of the device tool (each at most 10 minutes), most decisive first; a 15-minute lease
# has room for the first only:
#   PHASE=1 (or one): the bench of the compile engine at 640x512 (batch 32 and 1, fp16), the CUDA
#            tests, the demo on CUDA twice (the second start shows what Inductor's on-disk cache
#            saves of the first compile); about 8 minutes on an H100 in session 20 (bench 193 s,
#            tests 172 s, demo 77 + 34 s; the compile engine tunes its kernels since session 12,
#            about a minute per shape, so each limit below leaves room over what it took);
#   PHASE=2: the compile engine at 1280x1024, where the time of a compiled batch goes
#            (bench/gpu_profile.py), the fused activation-statistics kernel against Inductor
#            (bench/gpu_fused_stats.py) and the eager engine (about 8 minutes). Session 12 ran
#            both parts on an H100: bench/results/gpu-h100-*-s12*.
#   PHASE=determinism (about 6 minutes; run in session 18 on an H200, gpu-h200-s18-log.txt):
#            bench/gpu_determinism.py (does the compiled path give the same pixels on every call?
#            the CUDA test of the compile engine failed on that in session 14), the CUDA tests,
#            and bench/gpu_ab.py --set session15 (the guided filter on fp16 planes). The next
#            lease should run PHASE=2 first: the shipped engine at 1280x1024 was last run before
#            session 12 (session 20's PHASE=1 ran out of its call before reaching it);
#   PHASE=stats: the session-14 change on its own (about 8 minutes): the A/B of the compile engine
#            with and without the activation-statistics kernel (bench/gpu_ab.py --set session14),
#            the CUDA tests, and the bench of the compile engine at 640x512, batch 32.
PHASE=${PHASE:-1}
common=(--device cuda --seconds 1.5 --min-iterations 20 --warmup 5)
if [ "$PHASE" = 1 ] || [ "$PHASE" = one ]; then
step 15 nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
step 15 python3 -c "import torch, cv2, av, zmq; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(), 'opencv', cv2.__version__, 'av', av.__version__, 'zmq', zmq.__version__)"
step 260 python3 -m streamfuse.cli bench "${common[@]}" --resolutions 640x512 --engines compile \
    --precisions fp16 --batch-sizes 32,1 -o "$OUT/cuda-640x512.json"
step 240 python3 -m pytest -q -p no:cacheprovider tests/test_engines.py tests/test_optimize.py \
    -k "cuda or tensorrt or channel_padding or tap" -W ignore::DeprecationWarning
for run in 1 2; do
step 100 python3 -m streamfuse.cli run configs/demo.yaml --set inference.device=cuda \
    --set inference.engine=compile --set sinks.video.path=/tmp/demo_cuda$run.mp4 --stats /tmp/demo-cuda-stats.json
done
step 5 cat /tmp/demo-cuda-stats.json
elif [ "$PHASE" = determinism ]; then
step 15 nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
step 200 python3 bench/gpu_determinism.py --out "$OUT/gpu-determinism.json"
step 150 python3 -m pytest -q -p no:cacheprovider tests/test_engines.py -k cuda -W ignore::DeprecationWarning
step 230 python3 bench/gpu_ab.py --set session15 --batch 32 --out "$OUT/gpu-ab-s15.json"
elif [ "$PHASE" = stats ]; then
step 15 nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
step 15 python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(), 'triton', triton.__version__)"
step 240 python3 bench/gpu_ab.py --set session14 --batch 32 --out "$OUT/gpu-ab-s14.json"
step 150 python3 -m pytest -q -p no:cacheprovider tests/test_activation_stats.py tests/test_engines.py \
    -k "cuda or kernel" -W ignore::DeprecationWarning
step 150 python3 -m streamfuse.cli bench "${common[@]}" --resolutions 640x512 --engines compile \
    --precisions fp16 --batch-sizes 32 -o "$OUT/cuda-640x512.json"
else
step 20 nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
step 200 python3 -m streamfuse.cli bench "${common[@]}" --resolutions 1280x1024 --engines compile \
    --precisions fp16 --batch-sizes 8 -o "$OUT/cuda-1280x1024.json"
step 150 python3 bench/gpu_profile.py --device cuda --batch 32 --out "$OUT/gpu-profile-640x512-b32.json"
step 60 python3 bench/gpu_fused_stats.py --batch 32 --size 640x512 --out "$OUT/gpu-fused-stats.json"
step 60 python3 -m streamfuse.cli bench "${common[@]}" --resolutions 640x512 --engines eager \
    --precisions fp16 --batch-sizes 32,1 -o "$OUT/cuda-640x512-eager.json"
fi
# The tables are in the log too; the device tool brings back eight files.
rm -f "$OUT"/cuda-*.txt
