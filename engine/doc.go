// Package engine is a KV-cache inference engine for the natsbench LM under any cache policy (full attention,
// StreamingLLM, H2O, TOVA, NAtS): chunked prefill of a batch of equal-length prompts, greedy decoding token by
// token, and the latency/memory measurement of the paper's Figure 4 (NATS-SPEC §4).
//
// # Cache layout
//
// Per layer the device holds committed K/V buffers `[batch, kv_heads, Cap, head_dim]` (in the compute dtype) and a
// small staging buffer of R slots (Options.Staging). The host slot table (package kvcache semantics: a new token
// takes the lowest free slot of every (layer, row, KV head); the policy frees slots after the token has attended;
// freed slots are reused) says which slot holds which position. Capacity starts at the policy's bound (Full:
// prompt + Options.MaxNewTokens: a power of two up to 1024 slots, past that rounded up to 1024 slots rather than
// to a power of two; StreamingLLM, H2O, TOVA: the budget; NAtS: kvcache.Bucket(0)) and grows only when a row is
// full, so the buffers hold what the policy keeps: NAtS at a 10% KV fraction allocates about a tenth of full
// attention's cache for a long context. Growth of the fast table (Full, StreamingLLM, NAtS) goes to
// kvcache.BucketSteps(·, Options.GrowthSteps): powers of two up to 1024 slots, then GrowthSteps buckets per doubling
// (default 4: at most 1.25× the fullest row, where powers of two allowed up to 2×; the capacity is shared by every
// layer and head, so the fullest row sets it); kvcache.Cache (H2O, TOVA) grows in powers of two.
//
// Full, StreamingLLM and NAtS use a fast table that reproduces kvcache.Cache with their evictor slot for slot at
// O(log holes) per token (a heap of the slots evictions freed, a queue of window tokens, a list of NAtS Local
// tokens); any other
// evictor runs through kvcache.Cache itself (O(Cap) per token, as its evictors need).
//
// # Decoding
//
// One compiled step per (batch, capacity): the new token's K/V go to staging slot pos−base, attention runs over
// the committed slots and the staging slots under a device-resident validity mask, and the step returns the greedy
// token (plus the NAtS roles or the attention statistics the evictor needs, nothing more). The host then runs the
// policy; the freed slots travel to the next step as a list of validity changes (padded to a power of two; past
// Options.MaxUpdates per row on average the step uploads the whole mask instead). No step rewrites the
// committed buffers: every R steps, and when the capacity grows, one gather moves the surviving staged tokens into
// their table slots (and resizes the buffers), and the same graph derives the new layout's validity mask from the
// gather's sources, so no mask is rebuilt on the host or uploaded after a commit. At an unchanged capacity the
// sources themselves are built on the device too, from the slots the staged tokens were placed in and the
// validity the steps left (commitDest): the host's work per commit is then O(staged tokens), not O(slots). XLA through GoMLX cannot update a buffer in place (outputs are new
// buffers), so this keeps a step's memory traffic at one read of the cache.
// With bf16 the weights are converted once on the device and kept (the graphs would otherwise convert the float32
// weights on every call: 4 bytes read and 2 written per weight per step before the matmuls).
//
// # Prefill semantics per policy
//
// A chunk of T tokens at positions pos0..pos0+T−1 is one graph: queries are the chunk's tokens; keys are the cache
// as left after position pos0−1 plus the chunk itself. The last, partial chunk is padded to T; padding comes after
// the real tokens, so causality hides it, and it is never placed in the table. After the graph the host applies
// the policy token by token (the same Place/End sequence as decoding), so that the table equals what
// token-by-token decoding would have left, then one gather commits the chunk's surviving K/V.
//   - Full: causal over cache + chunk. Exact.
//   - StreamingLLM: query i sees key p iff p < sinks or i − p < budget − sinks, for cached and chunk keys alike.
//     Exact (equals the masked forward pass with model.SinkWindow and token-by-token decoding) for any chunk.
//   - NAtS (token and chunk level): the chunk's decisions come from the masker's own decode-time rule
//     (model.DecodeRoler) applied to all chunk tokens at once (argmax + GlobalBonus; the first token/chunk
//     forced Global; for NAtS-chunk the running mean or max of the chunk's normed inputs, so an incomplete chunk
//     stays undecided — visible, Pending in the table — until decoding completes it). Visibility inside the chunk
//     is the NAtS hard mask (NATS-SPEC §1.1, §1.7); a cached Local slot stays visible up to and including the
//     first Global decision of the chunk, a cached Window slot at position p (chunk end e) to queries ≤ e + W.
//     Exact: the outputs equal model.Inference.Forward with the NAtS masker (1e-4 in float32) for any chunk that is
//     a multiple of the NAtS chunk size.
//   - H2O, TOVA (data dependent, no mask): the chunk's queries attend to the valid cached slots and causally to
//     the chunk; then the evictor runs once per chunk token in order, with that token's attention row from the
//     chunk graph as its statistics (columns of slots freed earlier in the chunk are ignored, the row is not
//     renormalised). This equals token-by-token decoding only when chunk = 1; with larger chunks a query can
//     see up to T−1 keys that token-by-token decoding would already have evicted.
//
// # Measurement
//
// Measure runs warm-up then timed repeats of Prefill + Decode for one method at one prompt length and reports
// the prefill seconds and decode ms per token (median and p90 over repeats, wall-clock; every step ends by
// reading its greedy tokens, a device synchronisation), the host-table share of a step, the peak K/V bytes
// (committed + staging; and with a prefill chunk's own K/V), the Go heap in use on the pure-Go backend, the KV
// fraction of NATS-SPEC §1.9 (kept slots ÷ tokens seen, after the last token, mean over layers, rows and heads)
// and the memory-bandwidth floor of a step: (K/V bytes of the kept tokens + weight bytes) ÷ the device copy
// bandwidth measured by MeasureBandwidth (BandwidthFloor). Result.Rows gives long-format rows for Parquet.
// CalibrateRoles gives a randomly initialised NAtS model trained-like role rates when no trained model exists.
//
// Imports: model, nats (configuration), kvcache, policy (the policy types it recognises) and GoMLX.
package engine
