package engine

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"

	"github.com/gomlx/gomlx/core/tensors"

	"natsbench/kvcache"
	"natsbench/model"
	"natsbench/nats"
)

// minCommonShare is the mean cosine between every layer's normed input and the common direction e that
// CalibrateRoles scales the embeddings up to (layer 0 has ≈ 0.71: a token's own part and m·e are equally long);
// maxEmbedScale bounds the scale.
const minCommonShare, maxEmbedScale = 0.5, 1024

// Calibration is what CalibrateRoles did: the rates it achieves per layer on the calibration prompts, the factor it
// scaled the embeddings by, and the smallest mean cosine over layers between a layer's normed input and the common
// direction at that scale (measured before the scorers were set; below minCommonShare only when the scale reached
// maxEmbedScale, and then the rates may drift on longer prompts).
type Calibration struct {
	Rates       []RoleRates
	EmbedScale  float64
	CommonShare float64
}

// RoleRates are the fractions of NAtS decisions (tokens, or chunks for NAtS-chunk) per role; they sum to 1.
type RoleRates struct{ Global, Local, Window float64 }

// CalibrateRoles turns a randomly initialised NAtS model into one whose roles come out at the given rates ("random
// weights with trained-like role rates" for latency runs when no trained model exists). It changes the engine's
// parameters in place.
//
// Construction. The scorer is a bias-free linear map of a LayerNorm output, which sums to zero over its
// coordinates, so on symmetric random inputs no role can get more than half of the decisions. CalibrateRoles
// first gives the inputs a common direction: it adds m·e to every token embedding, e a random unit vector with
// zero sum (LayerNorm keeps it) and m the typical embedding norm, so that every layer's normed input x has
// k = x·e > 0. The common direction must survive the layers: at random initialisation a block's output grows with d
// (its projections sum d terms of std 0.02) while the embeddings do not, so on wide models (d 4096) the deeper
// layers' inputs are mostly attention and MLP output. Attention output averages over the context and so changes
// with the prompt's length, and the roles calibrated on short prompts drifted at 32k (some heads' decisions all
// fell in the Local band and their rows kept most of the context). CalibrateRoles therefore scales the embeddings
// (with m·e) by the smallest power of two for which every layer's normed input keeps a mean cosine ≥ 0.5 with e on
// the calibration prompts (layer 0 has ≈ 0.71), so that each layer's input stays mostly the token's own embedding
// at any length. (With tied embeddings the logits scale too, which changes no greedy token.) Per layer and KV head
// it takes a random unit direction u ⟂ e and the ratio r = (x·u)/k over the calibration inputs (pooled per NAtS
// chunk), picks t₁ = the (1−Global) quantile and t₀ = the Window quantile of r, and sets the scorer columns to
// α(u − t₁e) (Global), 0 (Local) and α(t₀e − u) (Window), with α large enough that the +GlobalBonus is negligible. The
// role logits are then α·k·(r − t₁), 0 and α·k·(t₀ − r): Global when r > t₁, Window when r < t₀, Local in between —
// the requested rates on the calibration data. Layers are calibrated in order, each on inputs computed with the
// earlier layers' final scorers (the roles change the attention and so the later layers' inputs). The first token
// (chunk) is forced Global and is left out.
func CalibrateRoles(e *Engine, calib [][]int32, rates RoleRates, seed uint64) (Calibration, error) {
	if err := e.init(); err != nil {
		return Calibration{}, err
	}
	if e.spec.kind != kindNAtS {
		return Calibration{}, fmt.Errorf("engine: CalibrateRoles needs the NAtS policy, the engine runs %v", e.spec.kind)
	}
	if rates.Global < 0 || rates.Local < 0 || rates.Window < 0 || math.Abs(rates.Global+rates.Local+rates.Window-1) > 1e-6 {
		return Calibration{}, fmt.Errorf("engine: CalibrateRoles: rates %+v must be ≥ 0 and sum to 1", rates)
	}
	if nm, ok := e.Masker.(interface{ Config() nats.Config }); ok && len(nm.Config().Roles) > 0 {
		on := map[string]bool{}
		for _, r := range nm.Config().Roles {
			on[r] = true
		}
		for name, v := range map[string]float64{"global": rates.Global, "local": rates.Local, "window": rates.Window} {
			if v > 0 && !on[name] {
				return Calibration{}, fmt.Errorf("engine: CalibrateRoles: rate %g for role %q, which method.roles disables", v, name)
			}
		}
	}
	if len(calib) == 0 || len(calib[0]) <= e.spec.chunk {
		return Calibration{}, errors.New("engine: CalibrateRoles: calibration prompts must be longer than one NAtS chunk")
	}
	cfg := e.Cfg
	d, KV, L := cfg.DModel, cfg.KVHeads(), cfg.NLayers
	wi := e.Params.Index("wte")
	if wi < 0 {
		return Calibration{}, errors.New("engine: CalibrateRoles: no parameter \"wte\"")
	}
	rng := rand.New(rand.NewPCG(seed, 0x726f6c65))
	eDir := zeroSumUnit(rng, d, nil)
	wte := e.Params.Flat(wi)
	var ss float64
	for _, v := range wte {
		ss += float64(v) * float64(v)
	}
	m := math.Sqrt(ss / float64(cfg.VocabSize))
	base := make([]float64, len(wte))
	for t := 0; t < cfg.VocabSize; t++ {
		for j := 0; j < d; j++ {
			base[t*d+j] = float64(wte[t*d+j]) + m*eDir[j]
		}
	}
	var scale, share float64
	var made *tensors.Tensor // the embeddings this loop made last (the caller's own are left to the caller)
	for scale = 1; ; scale *= 2 {
		for i, v := range base {
			wte[i] = float32(scale * v)
		}
		if made != nil {
			made.FinalizeAll() // its device copy too: at d 4096 and 50k tokens, 824 MB a scale
		}
		made = tensors.FromFlatDataAndDimensions(slices.Clone(wte), cfg.VocabSize, d)
		e.Params.Values[wi] = made
		normed, _, T, err := e.probe(calib)
		if err != nil {
			return Calibration{}, err
		}
		share = 1.0
		for l := 0; l < L; l++ {
			var mean float64
			X := e.pooledInputs(normed, l, len(calib), len(calib[0]), T)
			for _, x := range X {
				mean += dot(x, eDir) / math.Sqrt(dot(x, x)) / float64(len(X))
			}
			share = min(share, mean)
		}
		if share >= minCommonShare || scale >= maxEmbedScale {
			break
		}
	}

	for l := 0; l < L; l++ {
		normed, _, T, err := e.probe(calib)
		if err != nil {
			return Calibration{}, err
		}
		X := e.pooledInputs(normed, l, len(calib), len(calib[0]), T)
		w := make([]float32, d*KV*3)
		for h := 0; h < KV; h++ {
			u := zeroSumUnit(rng, d, eDir)
			k, r := make([]float64, len(X)), make([]float64, len(X))
			for i, x := range X {
				k[i], r[i] = dot(x, eDir), 0
				if k[i] <= 0 {
					return Calibration{}, fmt.Errorf("engine: CalibrateRoles: layer %d: an input has no positive common component (x·e = %g)", l, k[i])
				}
				r[i] = dot(x, u) / k[i]
			}
			sr := slices.Sorted(slices.Values(r))
			t1 := quantileSorted(sr, 1-rates.Global)
			t0 := quantileSorted(sr, rates.Window)
			if rates.Global == 0 {
				t1 = sr[len(sr)-1] + 1 + math.Abs(sr[len(sr)-1])
			}
			if rates.Window == 0 {
				t0 = sr[0] - 1 - math.Abs(sr[0])
			}
			t0 = min(t0, t1)
			spread := sr[len(sr)-1] - sr[0] + 1e-12
			alpha := 1e4 / (meanOf(k) * spread)
			for j := 0; j < d; j++ {
				w[j*KV*3+h*3+nats.Global] = float32(alpha * (u[j] - t1*eDir[j]))
				w[j*KV*3+h*3+nats.Window] = float32(alpha * (t0*eDir[j] - u[j]))
			}
		}
		si := e.Params.Index(model.LayerName(l) + "/nats/scorer")
		if si < 0 {
			return Calibration{}, fmt.Errorf("engine: CalibrateRoles: no scorer parameter for layer %d", l)
		}
		e.Params.Values[si] = tensors.FromFlatDataAndDimensions(w, d, KV*3)
	}
	_, roles, T, err := e.probe(calib)
	if err != nil {
		return Calibration{}, err
	}
	return Calibration{Rates: e.roleRates(roles, len(calib), len(calib[0]), T), EmbedScale: scale, CommonShare: share}, nil
}

// probe runs the prefill graph over prompts from an empty cache in one chunk and returns the normed layer inputs
// `[L, B, T, d]`, the roles `[L, B, KV, T]` and the padded chunk length T.
func (e *Engine) probe(prompts [][]int32) (normed []float32, roles []int32, T int, err error) {
	B, P := len(prompts), len(prompts[0])
	C := e.spec.chunk
	T = (P + C - 1) / C * C
	if P > e.Cfg.MaxSeqLen {
		return nil, nil, 0, fmt.Errorf("engine: probe prompt of %d tokens is longer than model.max_seq_len = %d", P, e.Cfg.MaxSeqLen)
	}
	tokens := make([]int32, B*T)
	for b, p := range prompts {
		if len(p) != P {
			return nil, nil, 0, fmt.Errorf("engine: probe prompt row %d has %d tokens, row 0 has %d", b, len(p), P)
		}
		copy(tokens[b*T:], p)
	}
	L, KV, hd, cp := e.Cfg.NLayers, e.Cfg.KVHeads(), e.Cfg.HeadDim(), kvcache.Bucket(0)
	args := e.paramArgs()
	args = append(args, tensors.FromFlatDataAndDimensions(tokens, B, T), int32(0), int32(P-1))
	for i := 0; i < 2*L; i++ {
		z, err := e.zeros(B, KV, cp, hd)
		if err != nil {
			return nil, nil, 0, err
		}
		args = append(args, z)
	}
	free := make([]int32, L*B*KV*cp)
	for i := range free {
		free[i] = kvcache.Free
	}
	args = append(args, tensors.FromFlatDataAndDimensions(free, L, B, KV, cp),
		tensors.FromFlatDataAndDimensions(make([]int32, L*B*KV*cp), L, B, KV, cp))
	out, err := e.probeExec.Exec(args...)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("engine: probe: %w", err)
	}
	return tensors.MustCopyFlatData[float32](out[len(out)-1]), tensors.MustCopyFlatData[int32](out[2*L+3]), T, nil
}

// pooledInputs returns the scorer inputs of layer l for the complete NAtS chunks after the first: the tokens'
// normed inputs for C = 1, their mean (or max) over each chunk otherwise.
func (e *Engine) pooledInputs(normed []float32, l, B, P, T int) [][]float64 {
	d, C := e.Cfg.DModel, e.spec.chunk
	isMax := mergeMax(e.Masker)
	var out [][]float64
	for b := 0; b < B; b++ {
		for c := 1; (c+1)*C <= P; c++ {
			x := make([]float64, d)
			for t := c * C; t < (c+1)*C; t++ {
				row := normed[((l*B+b)*T+t)*d : ((l*B+b)*T+t+1)*d]
				for j, v := range row {
					if isMax {
						if t == c*C || float64(v) > x[j] {
							x[j] = float64(v)
						}
					} else {
						x[j] += float64(v) / float64(C)
					}
				}
			}
			out = append(out, x)
		}
	}
	return out
}

// roleRates counts the decisions of complete chunks after the first, per layer.
func (e *Engine) roleRates(roles []int32, B, P, T int) []RoleRates {
	L, KV, C := e.Cfg.NLayers, e.Cfg.KVHeads(), e.spec.chunk
	out := make([]RoleRates, L)
	for l := 0; l < L; l++ {
		var n [3]float64
		var tot float64
		for b := 0; b < B; b++ {
			for h := 0; h < KV; h++ {
				for c := 1; (c+1)*C <= P; c++ {
					r := roles[((l*B+b)*KV+h)*T+(c+1)*C-1]
					if r >= 0 && r < 3 {
						n[r]++
					}
					tot++
				}
			}
		}
		out[l] = RoleRates{Global: n[nats.Global] / tot, Local: n[nats.Local] / tot, Window: n[nats.Window] / tot}
	}
	return out
}

// String renders the rates as "G 0.100 L 0.300 W 0.600".
func (r RoleRates) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "G %.3f L %.3f W %.3f", r.Global, r.Local, r.Window)
	return b.String()
}

// zeroSumUnit returns a random unit vector of dimension d orthogonal to the all-ones vector and to not (if given).
func zeroSumUnit(r *rand.Rand, d int, not []float64) []float64 {
	v := make([]float64, d)
	for i := range v {
		v[i] = r.NormFloat64()
	}
	var mean float64
	for _, x := range v {
		mean += x / float64(d)
	}
	for i := range v {
		v[i] -= mean
	}
	if not != nil {
		p := dot(v, not)
		for i := range v {
			v[i] -= p * not[i]
		}
	}
	n := math.Sqrt(dot(v, v))
	for i := range v {
		v[i] /= n
	}
	return v
}

func dot(a, b []float64) float64 {
	var s float64
	for i := range a {
		s += a[i] * b[i]
	}
	return s
}

func meanOf(x []float64) float64 {
	var s float64
	for _, v := range x {
		s += v
	}
	return s / float64(len(x))
}

// quantileSorted is the threshold below which a fraction q of the sorted values lie (midpoint between neighbours).
func quantileSorted(s []float64, q float64) float64 {
	n := len(s)
	k := int(math.Round(q * float64(n))) // values strictly below the threshold
	switch {
	case k <= 0:
		return s[0] - 1e-9*(1+math.Abs(s[0]))
	case k >= n:
		return s[n-1] + 1e-9*(1+math.Abs(s[n-1]))
	}
	return (s[k-1] + s[k]) / 2
}
