// Package policy holds the inference-time KV-cache eviction policies compared in the NAtS
// reproduction, each a [kvcache.Evictor], and pure-Go reference attention masks for those that have
// an equivalent mask (NATS-SPEC §1.1, §1.7, §1.8, §2.5):
//
//   - [Full]: full causal attention; never evicts. Mask: [FullMask].
//   - [StreamingLLM]: attention sinks plus a recent window. Mask: [StreamingLLMMask].
//   - [H2O]: heavy hitters by accumulated attention plus a recent window. Data dependent, no mask.
//   - [TOVA]: drops the key the current query attends to least. Data dependent, no mask.
//   - [NAtS]: Global / Local / sliding-Window token roles, token level or per chunk.
//     Masks: [NAtSMask], [NAtSChunkMask].
//
// Masks are `[][]bool` of size N×N, m[i][j] = query i may attend to key j. They are written as
// direct loops over the written definitions so that they can serve as the reference for the GoMLX
// training masks. The equivalence contract (STYLE.md §B7): decoding token by token through a
// [kvcache.Cache] with the policy's evictor yields, at every step i, valid slots whose positions are
// exactly {j : m[i][j]}, and the occupancy equals the row sum.
//
// Every policy is a small value type with `Validate() error` (errors name the field), and
// Capacity(n) gives the most slots it occupies while decoding n tokens.
//
// Imports: standard library and kvcache only; no GoMLX.
package policy
