#!/usr/bin/env bash
# The PG-19 sweep on a lent H200 through the device tool, over one or more chained calls (the machine stays warm
# between calls made within its idle window; the sweep runs in the background, detached, and survives the end of
# each call).
#
#   build here:  scripts/device_pg19.sh pack            (xz'd runner/bench/model.test/memest + pg19-subset into .carry/dev)
#   call 1:      scripts/device_pg19.sh start .carry/dev 540   (GPU checks and bench, then the sweep; waits ≤540 s)
#   call 2..n:   scripts/device_pg19.sh wait  .carry/dev 570   (waits for the sweep ≤570 s)
#   fresh machine, finished runs kept: `pack` puts the committed results/pg19 run folders in DIR/seed.tar.gz;
#                call: scripts/device_pg19.sh resume .carry/dev 570   (remove a run's folder from the seed to
#                retrain it, e.g. the full model whose checkpoint new `from` runs need)
# Every call leaves in $OUT: pg19-results.tar.gz (run folders without checkpoints), sweep.log and, after start,
# gputest.log (the fused NAtS attention checked against the materialised one in bf16; if it fails, the sweep
# runs on the materialised path). Unpack here with: tar -xzf pg19-results.tar.gz -C results
set -uo pipefail
cmd=${1:?usage: device_pg19.sh pack|start|wait DIR SECONDS}
dir=${2:-.carry/dev}
budget=${3:-540}
res=/tmp/res
bin=/tmp/bin
log=/tmp/sweep.log

if [ "$cmd" = pack ]; then
	set -e
	mkdir -p "$dir"
	CGO_ENABLED=1 go build -buildvcs=true -tags xla -ldflags "-s -w" -o "$dir/runner" ./runner
	CGO_ENABLED=1 go build -buildvcs=true -tags xla -ldflags "-s -w" -o "$dir/bench" ./bench
	CGO_ENABLED=1 go test -buildvcs=true -c -tags 'xla gpu' -ldflags "-s -w" -o "$dir/model.test" ./model
	CGO_ENABLED=1 go build -buildvcs=true -tags xla -ldflags "-s -w" -o "$dir/memest" ./finetune/cmd/memest
	xz -T2 -6 -f "$dir/runner" "$dir/bench" "$dir/model.test" "$dir/memest"
	# The committed results seed a resumed sweep: their runs are DONE and skipped (no checkpoints: a `from` run
	# whose source is not retrained on the device fails, naming it).
	tar -C results --exclude=figures -czf "$dir/seed.tar.gz" pg19
	[ -f "$dir/pg19-subset.tar.xz" ] || (cd "${PG19_PARENT:-../shared/data}" && tar -cf - pg19-subset | xz -T2 -6 >"$OLDPWD/$dir/pg19-subset.tar.xz")
	ls -la "$dir"
	exit 0
fi

t0=$(date +%s)
collect() {
	mkdir -p "$OUT"
	if [ -d $res/pg19 ]; then
		tar -C $res --exclude='ckpt' -czf "$OUT/pg19-results.tar.gz" pg19
	fi
	cp $log "$OUT/sweep.log" 2>/dev/null
	grep -h -E '^\[[0-9]+/[0-9]+\]|done|failed|error' $log 2>/dev/null | tail -40
}

if [ "$cmd" = resume ]; then
	mkdir -p $bin data $res
	xz -dc "$dir/runner.xz" >$bin/runner && chmod +x $bin/runner
	[ -d data/pg19-subset ] || tar -xJf "$dir/pg19-subset.tar.xz" -C data
	tar -xzf "$dir/seed.tar.gz" -C $res
	setsid nohup $bin/runner -sweep pg19.toml -out $res -backend xla:cuda -no-report >$log 2>&1 </dev/null &
	echo "sweep resumed (pid $!)"
fi

if [ "$cmd" = start ]; then
	mkdir -p $bin data $res
	for f in runner bench model.test; do xz -dc "$dir/$f.xz" >$bin/$f && chmod +x $bin/$f; done
	[ -d data/pg19-subset ] || tar -xJf "$dir/pg19-subset.tar.xz" -C data
	nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
	# 1. The fused NAtS attention against the materialised one, in bf16 on cuDNN.
	(cd model && $bin/model.test -test.run GPU -test.v 2>&1) | tee "$OUT/gputest.log" | tail -8
	if ! grep -q '^--- PASS: TestGPUFusedCarrier' "$OUT/gputest.log"; then
		echo "GPU carrier test failed: the sweep uses the materialised mask"
		export NATSBENCH_MASKED_ATTENTION=materialized
	fi
	# 2. The sweep, detached so that it outlives this call.
	setsid nohup $bin/runner -sweep pg19.toml -out $res -backend xla:cuda -no-report >$log 2>&1 </dev/null &
	echo "sweep started (pid $!)"
fi

# Wait for the sweep (or the budget), then hand back what is done.
while [ $(($(date +%s) - t0)) -lt "$budget" ]; do
	pgrep -f "$bin/runner -sweep" >/dev/null || break
	sleep 5
	# Hand back what is done every minute, in case the call is cut short.
	[ $((($(date +%s) - t0) % 60)) -lt 5 ] && collect >/dev/null
done
pgrep -f "$bin/runner -sweep" >/dev/null && echo "sweep still running after $(($(date +%s) - t0)) s" || echo "sweep finished"
collect
