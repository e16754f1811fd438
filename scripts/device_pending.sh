#!/usr/bin/env bash
# The measurements still open, one device call each on one H200 (PART=6: on two; each under the 10-minute limit). Session 8 ran
# PART=1 (32 layers at 16k fit: plan 105.6 GiB, 24.6 s a step) and PART=2; session 9 the 8B-shaped batch-8 and
# batch-16 runs of PART=3 and PART=4 (results/latency32k, logs device-2026-11-29e…h.log). Session 10 ran PART=3 with
# RUNS="nats_8b_b32 full_8b_b32" and BACKEND=xla:cuda,memory_fraction=0.95 (35 GB of full-attention cache, copied by
# each commit; logs device-2026-11-29i.log and -l.log) and PART=5 over two calls (the second with SEED and
# RUNS="h2o tova"; results/latency_random, logs -j and -k). Session 11 ran PART=3 with RUNS="nats_8b_b32
# full_8b_b32" (binary 91ec22a, log -q; ~6 minutes) and RUNS=nats_8b_b32 (binary 2b4a796, log -r). Session 12 ran
# PART=6 (results/latency_random, logs -s-gpu0/-gpu1: GPU 0's lane, then "nats streamingllm full", was cut in full
# attention's 64k point), PART=5 with RUNS=full and SEED (its 64k point, log -t), PART=3 with the pair (full attention
# ran out of memory in prefill, results/latency32k/device-2026-11-29t.log) and PART=7 (log -u, results/latency_cmdbuf).
# Still open: PART=4's batch-16 pair with the calibration fix, and the batch-8 pair (RUNS="full_8b_b8 nats_8b_b8").
# BACKEND (default xla:cuda) is the runner's -backend for the latency runs.
#   PART=1 (≤ ~9 min): fine-tuning memory of Llama-3-8B (random weights, bf16 compute and weights, per-layer
#     checkpointing, the carrier's backward in query blocks) with the XLA allocator allowed 95% of the GPU (-backend
#     xla:cuda,memory_fraction=0.95): all 32 layers at 16k tokens first (compile ~6 min), then, if that failed,
#     4 layers at 16k. Keeps XLA's buffer assignment. results/finetune_memory.
#   PART=2 (≤ ~9.5 min): latency_parts.toml (the parts of a step and of a prefill; unpack into a new folder), then
#     latency32k's nats_8b_c8k (the 8B shape's roles calibrated on 8,192 tokens).
#   PART=3 (≤ ~9.5 min): latency32k's 8B-shaped batch-8 runs (RUNS, default "full_8b_b8 nats_8b_b8"; session 9:
#     ~2 and ~3 minutes).
#   PART=4 (≤ ~9.5 min): latency32k's 8B-shaped batch-16 runs (full_8b_b16, nats_8b_b16; session 9: ~2.5 and ~3.5
#     minutes), then, with the time left, scripts/device_diag.sh (where a batch-1 decoding step's time goes).
#   PART=5 (≤ ~9.5 min): Figure 4 on the pg19 shape, every method of latency_random.toml at 1k–64k (measured in
#     session 7 over two calls: H2O was cut at 16k and resumed). A run writes its rows after every prompt length, so
#     a cut run keeps the lengths it finished: carry the call's tarball and pass it as SEED=FILE, and name the runs
#     still to do in RUNS (e.g. RUNS="h2o tova full"); the next attempt measures only the missing lengths.
#
#   PART=6 (kind nvidia-h200-x2, ≤ ~9.5 min): PART=5 in one call, in two lanes of runs at once, one GPU and half
#     the cores each (LANE0, LANE1; SEED as in PART=5).
#
#   PART=7 (≤ ~9.8 min): the batch-32 pair (BACKEND default xla:cuda,memory_fraction=0.95), then StreamingLLM's
#     Figure 4 run with XLA's command buffers off (natsbench's default) and on (XLA's default list), in
#     $OUT/cmdbuf-off.log and -on.log with their run folders in cmdbuf-off.tar.gz and -on.tar.gz.
#
#   build here:  scripts/device_pg19.sh pack                     (xz'd runner/bench/model.test/memest in .carry/dev)
#   device:      PART=1 scripts/device_pending.sh .carry/dev     (carry .carry/dev/memest.xz)
#                PART=2..7 scripts/device_pending.sh .carry/dev  (carry .carry/dev/runner.xz)
# Leaves in $OUT: probe-*.log and probe-*-buffer-assignment.txt.xz (XLA's, PART=1); <sweep>.log and <sweep>.tar.gz (latency32k, or latency_random for PART=5:
# unpack the run folders into results/<sweep>/); PART=2 also parts.log and latency_parts.tar.gz (its run IDs are
# those of the committed "before" measurement: unpack into a new folder, e.g. results/latency_parts_after/); PART=4
# also the files of device_diag.sh.
# Prints a short summary last.
set -uo pipefail
dir=${1:-.carry/dev}
part=${PART:-1}
bin=/tmp/bin
mkdir -p $bin "$OUT"
export GOMLX_NO_AUTO_INSTALL=1
for f in runner memest; do [ -f "$dir/$f.xz" ] && xz -dc "$dir/$f.xz" >$bin/$f && chmod +x $bin/$f; done
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
# SEED=FILE (a carried tarball of an earlier call's <sweep>.tar.gz): its run folders, finished lengths kept, go
# under the -out root so that cut runs resume.
if [ -n "${SEED:-}" ]; then mkdir -p /tmp/lat && tar -xzf "$SEED" -C /tmp/lat; fi

# lat SECONDS RUN...: runs of $SWEEP (default latency32k), one runner process each, in order, until SECONDS have
# passed since the call began; the run folders go to $OUT/$SWEEP.tar.gz.
lat() {
	local until=$1 sw=${SWEEP:-latency32k}
	shift
	for r in "$@"; do
		local left=$((until - SECONDS))
		if [ $left -lt 45 ]; then
			echo "$sw $r: skipped ($left s left)"
			continue
		fi
		timeout -k 5 $left $bin/runner -sweep $sw.toml -only "$r" -out /tmp/lat -backend "${BACKEND:-xla:cuda}" -no-report \
			>>"$OUT/$sw.log" 2>&1
		echo "$sw $r: exit $? (124 = cut) after $((SECONDS)) s"
	done
	tar -C /tmp/lat -czf "$OUT/$sw.tar.gz" . 2>/dev/null
}
summary() { grep -h -E 'latency .*prompt|failed|rror' "$OUT/${SWEEP:-latency32k}.log" | cut -c1-220; }

[ "$part" -ge 2 ] 2>/dev/null && [ "$part" -le 4 ] && export SWEEP=latency32k # not one left in the environment
case $part in
1)
	# 32 layers first, with the call's time: at 16k its compile alone outlasted 300 s before. XLA's GEMM and fusion
	# autotuning is off to shorten the compile (it picks kernels, not buffer sizes: the memory plan is what counts).
	be=xla:cuda,memory_fraction=0.95
	export XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_autotune_level=0"
	[ -d /usr/local/cuda ] && export XLA_FLAGS="$XLA_FLAGS --xla_gpu_cuda_data_dir=/usr/local/cuda"
	# XLA's buffer assignment of the step names what fills its temporaries (at 16k, ~62 GiB of them were not
	# accounted for): kept, the largest file, xz'd, per probe.
	XLA_BASE=$XLA_FLAGS
	dump() {
		local f
		f=$(ls -S "$1"/*buffer-assignment.txt 2>/dev/null | head -1)
		[ -n "$f" ] && timeout 30 xz -T0 -3 -c "$f" >"$OUT/$2-buffer-assignment.txt.xz"
	}
	export XLA_FLAGS="$XLA_BASE --xla_dump_to=/tmp/xd32 --xla_dump_hlo_as_text"
	timeout -k 5 $((${PROBE_UNTIL:-520} - SECONDS)) $bin/memest -probe -backend $be -seq 16384 -steps 2 >"$OUT/probe-32layers-16k.log" 2>&1
	rc=$?
	dump /tmp/xd32 probe-32layers
	export XLA_FLAGS="$XLA_BASE --xla_dump_to=/tmp/xd4 --xla_dump_hlo_as_text"
	echo "memest -probe (32 layers): exit $rc (3 = out of memory, 124 = cut) after $SECONDS s"
	if [ $rc -ne 0 ] && [ $((${PROBE_UNTIL:-520} + 40 - SECONDS)) -gt 90 ]; then
		timeout -k 5 $((${PROBE_UNTIL:-520} + 40 - SECONDS)) $bin/memest -probe -backend $be -seq 16384 -layers 4 -steps 2 >"$OUT/probe-4layers-16k.log" 2>&1
		echo "memest -probe -layers 4: exit $? (3 = out of memory, 124 = cut)"
		dump /tmp/xd4 probe-4layers
	fi
	ls -la "$OUT"
	echo
	grep -h -E 'probe:|step .* done|peak|OUT OF|plan|= .* GiB' "$OUT"/probe-*.log | cut -c1-200
	;;
2)
	timeout -k 5 150 $bin/runner -sweep latency_parts.toml -out /tmp/lp -backend xla:cuda -no-report >"$OUT/parts.log" 2>&1
	echo "latency_parts: exit $? (124 = cut)"
	tar -C /tmp/lp -czf "$OUT/latency_parts.tar.gz" . 2>/dev/null
	grep -E 'timed run 1|rror' "$OUT/parts.log" | cut -c1-260
	lat "${LAT_UNTIL:-555}" nats_8b_c8k
	echo
	summary
	;;
3)
	# shellcheck disable=SC2086 # RUNS is a list of run names
	lat "${LAT_UNTIL:-555}" ${RUNS:-full_8b_b8 nats_8b_b8}
	echo
	summary
	;;
4)
	lat "${LAT_UNTIL:-470}" full_8b_b16 nats_8b_b16
	left=$((560 - SECONDS))
	if [ $left -gt 90 ]; then
		DIAG_S=$(((left - 10) / 2)) bash scripts/device_diag.sh "$dir" >"$OUT/diag.out" 2>&1
		echo "device_diag.sh: exit $?"
		tail -6 "$OUT/diag.out"
	fi
	echo
	summary
	;;
5)
	# Figure 4 on the pg19 shape: every method of latency_random.toml at 1k–64k, side by side (RUNS: a subset).
	export SWEEP=latency_random
	# shellcheck disable=SC2086 # RUNS is a list of run names
	lat "${LAT_UNTIL:-565}" ${RUNS:-nats streamingllm h2o tova full}
	echo
	summary
	;;
6)
	# Figure 4 in one call on a two-GPU machine (kind nvidia-h200-x2): the five runs of latency_random.toml in two lanes
	# at once, one GPU each, each run its own process, both lanes' run folders in $OUT/latency_random.tar.gz and their
	# logs in $OUT/latency_random-gpu0.log and -gpu1.log. Each lane gets half the machine's cores (taskset): H2O's and
	# TOVA's host work is CPU-heavy, and the lanes should not slow each other's host parts. SEED (a tarball of earlier
	# run folders) seeds both lanes. Session 12's times per run: NAtS 5m57s, StreamingLLM 1m15s, full attention ~2m50s,
	# H2O 3m08s, TOVA 3m14s; hence the lanes LANE0 "nats full" (~8.8 min) and LANE1 "h2o tova streamingllm" (~7.6).
	half=$(($(nproc) / 2))
	lane() {
		local gpu=$1 until=$2
		shift 2
		if [ -n "${SEED:-}" ]; then mkdir -p /tmp/lat$gpu && tar -xzf "$SEED" -C /tmp/lat$gpu; fi
		local pin=()
		command -v taskset >/dev/null && pin=(taskset -c $((gpu * half))-$((gpu * half + half - 1)))
		for r in "$@"; do
			local left=$((until - SECONDS))
			if [ $left -lt 45 ]; then
				echo "gpu $gpu $r: skipped ($left s left)"
				continue
			fi
			# XLA sees one GPU; -device names it to nvidia-smi (the memory rows and limit), in its PCI order.
			CUDA_DEVICE_ORDER=PCI_BUS_ID CUDA_VISIBLE_DEVICES=$gpu timeout -k 5 $left "${pin[@]}" $bin/runner -sweep latency_random.toml \
				-only "$r" -out /tmp/lat$gpu -device $gpu -backend "${BACKEND:-xla:cuda}" -no-report \
				>>"$OUT/latency_random-gpu$gpu.log" 2>&1
			echo "gpu $gpu $r: exit $? (124 = cut) after $SECONDS s"
		done
	}
	# shellcheck disable=SC2086 # LANE0 and LANE1 are lists of run names
	lane 0 "${LAT_UNTIL:-565}" ${LANE0:-nats full} &
	# shellcheck disable=SC2086
	lane 1 "${LAT_UNTIL:-565}" ${LANE1:-h2o tova streamingllm} &
	wait
	mkdir -p /tmp/latall
	for g in 0 1; do [ -d /tmp/lat$g ] && cp -r /tmp/lat$g/. /tmp/latall/; done
	tar -C /tmp/latall -czf "$OUT/latency_random.tar.gz" . 2>/dev/null
	echo
	grep -h -E 'latency .*prompt|failed|rror' "$OUT"/latency_random-gpu*.log | cut -c1-220
	;;
7)
	export SWEEP=latency32k
	# The batch-32 pair of latency32k (PART=3's, full attention first), then, with the time left, Figure 4's StreamingLLM
	# run (batch 1, 1k–64k) twice in separate processes: with natsbench's default (XLA's command buffers off) and with
	# XLA's own default list on, both on this machine (batch-1 steps are per-kernel cost, where CUDA graphs help).
	BACKEND=${BACKEND:-xla:cuda,memory_fraction=0.95} lat "${LAT_UNTIL:-430}" full_8b_b32 nats_8b_b32
	echo
	summary
	cb="--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN"
	[ -d /usr/local/cuda ] && cb="--xla_gpu_cuda_data_dir=/usr/local/cuda $cb"
	for mode in off on; do
		left=$((${AB_UNTIL:-585} - SECONDS))
		if [ $left -lt 80 ]; then
			echo "streamingllm, command buffers $mode: skipped ($left s left)"
			continue
		fi
		flags=${XLA_FLAGS:-}
		[ $mode = on ] && flags="${XLA_FLAGS:-} $cb" # the switch the only difference
		XLA_FLAGS=$flags timeout -k 5 $left $bin/runner -sweep latency_random.toml -only streamingllm -out /tmp/cb$mode \
			-backend xla:cuda -no-report >"$OUT/cmdbuf-$mode.log" 2>&1
		echo "streamingllm, command buffers $mode: exit $? (124 = cut) after $SECONDS s"
		tar -C /tmp/cb$mode -czf "$OUT/cmdbuf-$mode.tar.gz" . 2>/dev/null
		grep -h -E 'latency .*prompt .*prefill|rror' "$OUT/cmdbuf-$mode.log" | cut -c1-120
	done
	;;
*)
	echo "PART=$part: want 1 to 7" >&2
	exit 2
	;;
esac
exit 0
