// Package evaluate measures a language model's perplexity by streaming decoding with a real KV cache
// (NATS-SPEC.md §2.5): every evaluation window is decoded token by token from an empty cache, the method's
// evictor decides after each token which keys the next query keeps, and the cache occupancy seen by every query
// is recorded (the KV-size measure of §1.9). A parallel forward pass with the method's equivalent mask is the
// fast path for methods that have one; tests prove the two agree.
package evaluate

import (
	"fmt"
	"io"
	"math"
	"natsbench/internal/progress"
	"time"

	"github.com/gomlx/compute"

	"natsbench/kvcache"
	"natsbench/model"
)

// Method is a cache policy at inference: a Masker (nil = causal) for the forward pass and for the model's
// per-token decisions (NAtS roles), and an Evictor (nil = keep everything) for decoding.
type Method struct {
	Name    string
	Masker  model.Masker
	Evictor kvcache.Evictor
}

// Options for Streaming.
type Options struct {
	Batch    int       // windows decoded together
	Buckets  []int     // position-bucket upper bounds for per-position NLL (e.g. 256, 512, 1024)
	Progress io.Writer // a live progress line (package internal/progress: rewritten on a terminal, lines every 30 s elsewhere); nil for none
	Label    string    // printed in the progress line
}

// Result of an evaluation.
type Result struct {
	Tokens     int64     // predicted tokens
	NLL        float64   // mean negative log-likelihood (natural log)
	PPL        float64   // exp(NLL)
	KVFraction float64   // mean over windows, steps, layers and KV heads of kept/(t+1)
	KVTokens   float64   // mean over windows, steps, layers and KV heads of kept keys
	KVFinal    float64   // mean kept fraction at the last step of the windows
	Buckets    []Bucket  // per-position NLL
	PerPos     []float64 // mean NLL per position (length = context)
	Seconds    float64
}

// Bucket is the mean NLL of positions in [Lo, Hi).
type Bucket struct {
	Lo, Hi int
	NLL    float64
	N      int64
}

// Streaming evaluates windows (each context+1 tokens: inputs w[:context], targets w[1:]) by decoding token by
// token with the method's cache.
func Streaming(backend compute.Backend, cfg model.Config, params *model.Params, m Method, windows [][]int32, opt Options) (Result, error) {
	if len(windows) == 0 {
		return Result{}, fmt.Errorf("evaluate: no windows")
	}
	ctx := len(windows[0]) - 1
	if ctx+1 > cfg.MaxSeqLen+1 {
		return Result{}, fmt.Errorf("evaluate: context %d is past model.max_seq_len = %d", ctx, cfg.MaxSeqLen)
	}
	if opt.Batch <= 0 {
		opt.Batch = 1
	}
	start := time.Now()
	var live *progress.Line
	if opt.Progress != nil {
		live = progress.New(opt.Progress)
	}
	dec := model.NewDecoder(backend, cfg, m.Masker, params)
	dec.WantLogits = false
	dec.WantAttn = m.Evictor != nil && m.Evictor.Needs()&(kvcache.AccAttn|kvcache.LastAttn) != 0
	capacity := ctx
	if m.Evictor != nil {
		capacity = m.Evictor.Capacity(ctx)
	}
	capacity = kvcache.Bucket(capacity)
	L, H := cfg.NLayers, cfg.KVHeads()
	var res Result
	perPos := make([]float64, ctx)
	perPosN := make([]int64, ctx)
	var fracSum, tokSum, finalSum float64
	var fracN, finalN int64
	done := 0
	for lo := 0; lo < len(windows); lo += opt.Batch {
		hi := min(lo+opt.Batch, len(windows))
		batch := windows[lo:hi]
		B := opt.Batch // keep shapes static: pad the last batch by repeating its first window
		kv, err := kvcache.New(L, B, H, capacity, m.Evictor)
		if err != nil {
			return res, err
		}
		dc := dec.NewCache(B, capacity)
		valid := make([]bool, L*B*H*capacity)
		tokens, targets := make([]int32, B), make([]int32, B)
		roles := kv.Stats().Roles
		for t := 0; t < ctx; t++ {
			for b := 0; b < B; b++ {
				w := batch[min(b, len(batch)-1)]
				tokens[b], targets[b] = w[t], w[t+1]
			}
			slots, err := kv.Begin()
			if err != nil {
				return res, fmt.Errorf("evaluate %s: %w", m.Name, err)
			}
			for l, layer := range kv.Layers {
				layer.ValidBool(valid[l*B*H*capacity : (l+1)*B*H*capacity])
			}
			out, err := dec.StepTargets(dc, tokens, targets, t, slots, valid)
			if err != nil {
				kv.Abort()
				return res, err
			}
			st := kv.Stats()
			if st.Attn != nil && out.Attn != nil {
				for l := range st.Attn {
					copy(st.Attn[l], out.Attn[l*B*H*capacity:(l+1)*B*H*capacity])
				}
			}
			if roles != nil {
				for l := range roles {
					for k := range roles[l] {
						roles[l][k] = uint8(out.Roles[l*B*H+k])
					}
				}
			}
			occ := kv.Occupancy()
			if err := kv.End(); err != nil {
				return res, err
			}
			// NLL of the next token, for the real (non-padding) windows.
			for b := range batch {
				nll := float64(out.NLL[b])
				perPos[t] += nll
				perPosN[t]++
				for lh := 0; lh < L*H; lh++ {
					li, h := lh/H, lh%H
					o := float64(occ[(li*B+b)*H+h])
					fracSum += o / float64(t+1)
					tokSum += o
					fracN++
					if t == ctx-1 {
						finalSum += o / float64(t+1)
						finalN++
					}
				}
			}
		}
		done += len(batch)
		if live != nil {
			el := time.Since(start).Seconds()
			live.Update("  eval %-28s windows %d/%d  %.0f tok/s  ETA %s", opt.Label, done, len(windows),
				float64(done*ctx)/el, eta(el, done, len(windows)))
		}
	}
	if live != nil {
		live.End()
	}
	var sum float64
	res.PerPos = make([]float64, ctx)
	for t := range perPos {
		sum += perPos[t]
		res.Tokens += perPosN[t]
		res.PerPos[t] = perPos[t] / float64(perPosN[t])
	}
	res.NLL = sum / float64(res.Tokens)
	res.PPL = math.Exp(res.NLL)
	res.KVFraction = fracSum / float64(fracN)
	res.KVTokens = tokSum / float64(fracN)
	res.KVFinal = finalSum / float64(finalN)
	res.Buckets = buckets(perPos, perPosN, opt.Buckets)
	res.Seconds = time.Since(start).Seconds()
	return res, nil
}

func buckets(sum []float64, n []int64, bounds []int) []Bucket {
	var out []Bucket
	lo := 0
	for _, hi := range bounds {
		hi = min(hi, len(sum))
		if hi <= lo {
			continue
		}
		b := Bucket{Lo: lo, Hi: hi}
		var s float64
		for t := lo; t < hi; t++ {
			s += sum[t]
			b.N += n[t]
		}
		b.NLL = s / float64(b.N)
		out = append(out, b)
		lo = hi
	}
	return out
}

func eta(elapsed float64, done, total int) string {
	if done == 0 {
		return "?"
	}
	return (time.Duration(elapsed/float64(done)*float64(total-done)) * time.Second).Round(time.Second).String()
}

func logSumExp(x []float32) float64 {
	mx := math.Inf(-1)
	for _, v := range x {
		mx = math.Max(mx, float64(v))
	}
	var s float64
	for _, v := range x {
		s += math.Exp(float64(v) - mx)
	}
	return mx + math.Log(s)
}

// Parallel evaluates windows with one forward pass per batch and the method's mask (the fast path; only for
// methods whose cache has an equivalent mask: full, streamingllm, nats). It returns the mean NLL and per-position
// NLL; KV fractions come from Streaming.
func Parallel(backend compute.Backend, cfg model.Config, params *model.Params, m Method, windows [][]int32, batch int) (Result, error) {
	ctx := len(windows[0]) - 1
	inf := model.NewInference(backend, cfg, m.Masker, params)
	var res Result
	res.PerPos = make([]float64, ctx)
	var sum float64
	for lo := 0; lo < len(windows); lo += batch {
		hi := min(lo+batch, len(windows))
		in := make([]int32, batch*ctx)
		for b := 0; b < batch; b++ {
			w := windows[min(lo+b, hi-1)]
			copy(in[b*ctx:], w[:ctx])
		}
		logits, _, err := inf.Forward(in, batch, ctx)
		if err != nil {
			return res, err
		}
		V := cfg.VocabSize
		for b := 0; b < hi-lo; b++ {
			for t := 0; t < ctx; t++ {
				lg := logits[(b*ctx+t)*V : (b*ctx+t+1)*V]
				nll := logSumExp(lg) - float64(lg[windows[lo+b][t+1]])
				sum += nll
				res.PerPos[t] += nll
				res.Tokens++
			}
		}
	}
	for t := range res.PerPos {
		res.PerPos[t] /= float64(len(windows))
	}
	res.NLL = sum / float64(res.Tokens)
	res.PPL = math.Exp(res.NLL)
	return res, nil
}
