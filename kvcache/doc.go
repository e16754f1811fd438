// Package kvcache is the host-side half of the decode-time KV cache: a slot table per transformer
// layer that says which of the fixed-capacity K/V slots on the device are valid, where the next
// token's key and value go, and which slots an eviction policy frees.
//
// The device graph (package model) owns K/V buffers of shape `[batch, kv_heads, capacity, head_dim]`
// per layer. This package never touches tensors: it owns, per layer, a [Layer] table laid out
// `[batch, kv_heads, capacity]` with the position held by each slot (−1 when free), the slot's NAtS
// [Role], and the attention statistics an [Evictor] needs. Eviction only flips validity; the device
// reads the validity mask from [Layer.ValidMask] and writes each new K/V at the slot returned by
// [Cache.Begin].
//
// Protocol for one decoded token at position i (see [Cache.Step]):
//
//  1. [Cache.Begin] places position i in the lowest free slot of every (layer, batch, head) and
//     returns the slot indices. The occupancy at this point is the KV-size measure of step i
//     (NATS-SPEC §1.9): the number of keys query i can see.
//  2. The device writes K/V at those slots, attends over the valid slots, and fills [Stats] with the
//     statistics named by [Evictor.Needs]: the current query's attention per slot and/or the token's
//     NAtS role per KV head.
//  3. [Cache.End] folds the attention into the per-slot accumulators and calls [Evictor.After] for
//     every (layer, batch, head); the evictor frees slots so that the next query sees exactly the keys
//     its method allows.
//
// Methods plug in through [Evictor] (STYLE.md §B3); their implementations live in package policy.
// Wherever a method has an equivalent attention mask, decoding token by token through this package
// yields, at every step i, a valid-slot set whose positions are exactly the keys of row i of that mask
// (NATS-SPEC §1.8, the "equivalence contract" of STYLE.md §B7).
//
// Capacity is bucketed to powers of two ([Bucket]; the engine's fast table for Full, StreamingLLM and
// NAtS grows in the finer [BucketSteps] past 1024 slots) so that one decode graph is compiled per (batch, capacity bucket);
// [Cache.NextCap] and [Cache.Grow] grow the table, keeping every slot at its index so the device can
// grow its buffers by padding the capacity axis.
//
// Imports: standard library only. In particular no GoMLX: this package is pure host code and its
// tests run in milliseconds.
package kvcache
