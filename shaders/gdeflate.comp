// dsr's GDeflate tile decoder (FORMAT.md §2, the decoder pseudo-code of §2.6).
//
// One workgroup of 32 invocations decodes one tile at a time; invocation L is lane L. Workgroups
// loop over the tile list, so any number of tiles fits one dispatch. Every lane runs the same
// rounds: it decodes its element speculatively from its own bit reservoir, the group agrees on
// which lanes' elements count (those before the first end of block or fault, in lane order), and
// only those consume bits. Refills take words in lane order (a ballot and a popcount), which is
// exactly the serial decoder's word order.
//
// Cross-lane steps (ballot, prefix sum, shuffle) have two forms, two SPIR-V builds of this file:
// with WAVE32=1, subgroup operations, for devices where the workgroup is one subgroup of 32
// (NVIDIA); with WAVE32=0, shared memory and barriers, for any device (lavapipe's subgroups of 8,
// AMD's of 64), which needs no subgroup features. The two give the same results; the tests run
// the shared form on lavapipe and both on the GPU machine.
//
// Hostile input: every input read is bounded by the tile's word count (a word past the end reads
// as zero and marks the tile truncated, as the CPU decoder does), every output write by the
// tile's output size (checked before the write), every loop by a bound. A bad tile writes its
// reason to its status word and touches nothing outside its own output range. The status codes
// are `Reason`'s, in `stages/gpu/src/decode.rs`.

#version 460
#ifndef PROFILE
#define PROFILE 0
#endif
#extension GL_EXT_buffer_reference : require
#extension GL_EXT_shader_explicit_arithmetic_types_int64 : require
#extension GL_EXT_shader_explicit_arithmetic_types_int8 : require
#extension GL_EXT_shader_8bit_storage : require
#if WAVE32
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_ballot : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#extension GL_KHR_shader_subgroup_shuffle : require
#endif

#if PROFILE
#extension GL_ARB_shader_clock : require
#endif

layout(local_size_x = 32) in;

// The profiling build (-DPROFILE=1) sums cycles per phase over the tiles, in units of 256, into
// the words after the statuses: 0 tile, 1 Huffman symbols, 2 copies, 3 refills, 4 stored blocks,
// 5 dynamic headers, 6 fixed-code tables, 7 rounds.
#if PROFILE
uint64_t prof[8];
#define PROF_START(name) uint64_t name = clockARB()
#define PROF_ADD(k, name) prof[k] += clockARB() - name
#else
#define PROF_START(name)
#define PROF_ADD(k, name)
#endif

// A tile: where its words are, where its bytes go, how many of each.
struct Tile {
    uint64_t src;
    uint64_t dst;
    uint src_bytes;
    uint dst_bytes;
};

layout(buffer_reference, std430, buffer_reference_align = 8) readonly buffer Tiles { Tile t[]; };
layout(buffer_reference, std430, buffer_reference_align = 4) readonly buffer Words { uint w[]; };
layout(buffer_reference, std430, buffer_reference_align = 1) coherent buffer Bytes { uint8_t b[]; };
layout(buffer_reference, std430, buffer_reference_align = 4) buffer Status { uint s[]; };

layout(push_constant) uniform Push {
    uint64_t tiles;
    uint64_t status;
    uint count;
} pc;

// Status codes: 0 is success, the rest `Reason`'s order (decode.rs maps them back).
const uint OK = 0u;
const uint TRUNCATED = 1u;
const uint MISALIGNED = 2u;
const uint TRAILING_DATA = 3u;
const uint BAD_BLOCK_TYPE = 4u;
const uint OVERSUBSCRIBED = 5u;
const uint INVALID_CODE = 6u;
const uint BAD_REPEAT = 7u;
const uint NO_END_OF_BLOCK = 8u;
const uint BAD_LENGTH_SYMBOL = 9u;
const uint DISTANCE_TOO_FAR = 10u;
const uint OUTPUT_OVERFLOW = 11u;
const uint OUTPUT_SHORT = 12u;
const uint SIZE_MISMATCH = 13u;
const uint STEP_LIMIT = 14u;

const uint LANES = 32u;
const uint TILE_SIZE = 65536u;
const uint NO_SYMBOL = 0xFFFFu;

// The three codes a block uses: lit/len, distance, and the precode of a dynamic header.
const uint LIT = 0u;
const uint DIST = 1u;
const uint PRE = 2u;

const uint PRECODE_ORDER[19] = uint[](16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15);
// Length symbols 257..285 (285 is 3 + 16 extra bits in GDeflate's Deflate64 flavour).
const uint LBASE[29] = uint[](3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99,
                              115, 131, 163, 195, 227, 3);
const uint LEXTRA[29] = uint[](0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 16);
// Distance symbols 0..31 (30 and 31 reach 64 KiB back).
const uint DBASE[32] = uint[](1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025,
                              1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577, 32769, 49153);
const uint DEXTRA[32] = uint[](0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11,
                               12, 12, 13, 13, 14, 14);

// Canonical decoding by code length: codes of length <= l are the 15-bit left-aligned values
// below limit[l]; a code of length l is symbol sym[base[l] + code].
shared uint s_limit[3][16];
shared int s_base[3][16];
shared uint s_minlen[3];
shared uint s_sym[3][288];
// Code lengths of the block being set up (lit/len then distance; or the precode's 19).
shared uint s_lens[320];
shared uint s_fault;

// Cross-lane scratch for the shared-memory form: ballots in three rotating words, values in two
// rotating rows (a row is rewritten only after a barrier every lane passed after reading it).
shared uint s_ballot[3];
shared uint s_row[2][LANES];
// The copies of a round, per lane.
shared uint s_copy_dst[LANES];
shared uint s_copy_dist[LANES];
shared uint s_copy_len[LANES];
shared uint s_copy_first[LANES];

uint lane;
uint ballot_slot;
uint row_slot;

uint ballot(bool b) {
#if WAVE32
    return subgroupBallot(b).x;
#else
    uint slot = ballot_slot;
    ballot_slot = slot == 2u ? 0u : slot + 1u;
    if (b) {
        atomicOr(s_ballot[slot], 1u << lane);
    }
    barrier();
    uint mask = s_ballot[slot];
    // Every lane read the previous slot before this barrier: clear it for its next turn.
    if (lane == 0u) {
        s_ballot[slot == 0u ? 2u : slot - 1u] = 0u;
    }
    return mask;
#endif
}

// The sum of `x` over the lanes below this one, and over all lanes in `total`.
uint exclusive_sum(uint x, out uint total) {
#if WAVE32
    total = subgroupAdd(x);
    return subgroupExclusiveAdd(x);
#else
    uint slot = row_slot;
    row_slot ^= 1u;
    s_row[slot][lane] = x;
    barrier();
    uint below = 0u;
    total = 0u;
    for (uint i = 0u; i < LANES; i++) {
        uint v = s_row[slot][i];
        below += i < lane ? v : 0u;
        total += v;
    }
    return below;
#endif
}

// `x` of lane `from` (the same lane for every invocation).
uint shuffle(uint x, uint from) {
#if WAVE32
    return subgroupShuffle(x, from);
#else
    uint slot = row_slot;
    row_slot ^= 1u;
    s_row[slot][lane] = x;
    barrier();
    return s_row[slot][from];
#endif
}

// ---- The tile's state: per lane its bits; the rest uniform (every lane holds the same). ----

uint64_t bits;     // this lane's reservoir, next bit at the bottom
uint count;        // how many of `bits` are the stream's
uint pend_len;     // a match whose length was read (0 = none) ...
uint pend_dst;     // ... and its destination
Words src;
Bytes dst;
uint words;        // the tile's input words
uint cursor;       // next input word
bool truncated;    // a needed word was past the end
uint pos;          // output bytes so far
uint size;         // the tile's output size
uint fault;        // the first failure (0 = none)

// The next input words: lane L holds word `cursor + L` (0 past the end), loaded a refill ahead,
// so a refill takes its words from registers and the loads overlap the round that follows.
uint window;

uint word_at(uint at) {
    return at < words ? src.w[at] : 0u;
}

// Refills, in the serial decoder's order starting at lane `first`, every lane in `candidate`
// that holds fewer than 32 bits.
void refill(bool candidate, uint first) {
    PROF_START(t0);
    bool need = candidate && count < 32u;
    uint mask = ballot(need);
    uint rotated = first == 0u ? mask : (mask >> first) | (mask << (LANES - first));
    uint rank = bitCount(rotated & ((1u << ((lane - first) & 31u)) - 1u));
    uint word = shuffle(window, rank);
    if (need) {
        bits |= uint64_t(word) << count;
        count += 32u;
    }
    uint taken = bitCount(mask);
    truncated = truncated || cursor + taken > words;
    cursor += taken;
    // Slide the window: the words still ahead move down, the lanes past them load.
    uint kept = shuffle(window, min(lane + taken, LANES - 1u));
    window = lane + taken < LANES ? kept : word_at(cursor + lane);
    PROF_ADD(3, t0);
}

uint take(uint n) {
    uint v = uint(bits) & ((1u << n) - 1u);
    bits >>= n;
    count -= n;
    return v;
}

// The symbol of code `t` at the bottom of `b`, and its length (0: no code has these bits).
uint decode(uint t, uint64_t b, out uint len) {
    uint v = bitfieldReverse(uint(b) & 0x7FFFu) >> 17;
    for (uint l = s_minlen[t]; l <= 15u; l++) {
        if (v < s_limit[t][l]) {
            len = l;
            return s_sym[t][s_base[t][l] + int(v >> (15u - l))];
        }
    }
    len = 0u;
    return NO_SYMBOL;
}

// Builds code `t` from `n` lengths at `s_lens[first..]`. One invocation; returns false for an
// over-subscribed code (incomplete codes are allowed: their unused patterns decode to nothing).
bool build(uint t, uint first, uint n) {
    uint counts[16];
    for (uint l = 0u; l < 16u; l++) {
        counts[l] = 0u;
    }
    for (uint i = 0u; i < n; i++) {
        counts[s_lens[first + i]]++;
    }
    counts[0] = 0u;
    int left = 1;
    for (uint l = 1u; l < 16u; l++) {
        left = 2 * left - int(counts[l]);
        if (left < 0) {
            return false;
        }
    }
    uint offs[16];
    uint code = 0u;
    uint below = 0u;
    uint minlen = 16u;
    for (uint l = 1u; l < 16u; l++) {
        code = (code + counts[l - 1u]) << 1;
        s_limit[t][l] = (code + counts[l]) << (15u - l);
        s_base[t][l] = int(below) - int(code);
        offs[l] = below;
        below += counts[l];
        if (counts[l] != 0u && minlen == 16u) {
            minlen = l;
        }
    }
    s_minlen[t] = minlen;
    for (uint i = 0u; i < n; i++) {
        uint l = s_lens[first + i];
        if (l != 0u) {
            s_sym[t][offs[l]] = i;
            offs[l]++;
        }
    }
    return true;
}

// Builds the lit/len and distance codes from `s_lens` (lanes 0 and 1 at once).
void build_pair(uint hlit, uint hdist) {
    barrier();
    if (lane == 0u && !build(LIT, 0u, hlit)) {
        s_fault = OVERSUBSCRIBED;
    }
    if (lane == 1u && !build(DIST, hlit, hdist)) {
        s_fault = OVERSUBSCRIBED;
    }
    barrier();
    if (s_fault != OK) {
        fault = s_fault;
    }
}

// Fails the tile with `reason` if any lane's `bad` is set (the lowest such lane's reason wins).
void check(bool bad, uint reason) {
    uint mask = ballot(bad);
    if (mask != 0u && fault == OK) {
        fault = shuffle(reason, findLSB(mask));
    }
}

// Makes every lane's writes to the output and to shared memory visible to the whole group.
void sync() {
    groupMemoryBarrier();
    barrier();
}

// Writes output byte `at`, never past the tile's output (a guard, not a check: the decoder has
// checked every range it writes before it writes it).
void put(uint at, uint v) {
    if (at < size) {
        dst.b[at] = uint8_t(v);
    }
}

// Output byte `at` of the tile (0 past its output: never read by a sound decode).
uint got(uint at) {
    return at < size ? uint(dst.b[at]) : 0u;
}

// The copy of the batch holding byte `k` of the batch's bytes: `single` when the batch is one
// copy, else the last lane whose first byte is at or before `k` (`s_copy_first` is ascending).
uint copy_of(uint k, uint single) {
    if (single != LANES) {
        return single;
    }
    uint c = 0u;
    for (uint step = 16u; step > 0u; step >>= 1) {
        c += s_copy_first[c + step] <= k ? step : 0u;
    }
    return c;
}

// Runs the copies of `mask`'s lanes (destination, distance, length in the s_copy arrays) as if
// one after another in lane order. Byte t of a copy reads byte t mod distance of its source, so
// a copy never reads its own output and every byte of a copy can move at once. A copy whose
// source overlaps the output of an earlier copy of the same round must wait for it; so the
// copies go in batches: each batch is the longest run, in lane order, of copies none of which
// reads another's output, and all bytes of a batch are spread over the group at once.
//
// Two shapes of the same loops. The wave32 build (NVIDIA) tests dependencies by walking only the
// earlier copies' bits and moves four bytes per lane per step. The shared-memory build, for any
// device, tests against all 32 lanes (a fixed count the compiler unrolls) and moves one byte per
// lane per step: with the wave32 shapes, lavapipe (Mesa 22.3, LLVM 15) decoded some valid tiles
// wrongly, even with the dependency walk's result unused, while the H100 decoded the same tiles
// exactly with both builds (the "vertex data" tiles of `stages/gpu/tests/decode.rs`;
// docs/gpu-decoder.md). These shapes cost the H100 about a third of its speed (18.3 against
// 27.6 GB/s at 512 MiB per submission), so the wave32 build keeps the others.
void copies(uint mask) {
    if (mask == 0u) {
        return;
    }
    // Earlier rounds' bytes, and this round's copy list, visible to every lane. (A round without
    // copies skips this: the next round with copies makes everything before it visible.)
    sync();
    // Bounded: every batch takes at least the lowest remaining copy.
    while (mask != 0u) {
        bool dependent = false;
        // Every earlier copy writes at or after the lowest one's destination: a source that
        // ends before it needs no closer look.
        uint lowest = s_copy_dst[findLSB(mask)];
        if ((mask & (1u << lane)) != 0u) {
            uint to = s_copy_dst[lane];
            uint d = s_copy_dist[lane];
            uint from = to - d;
            uint end = from + min(d, s_copy_len[lane]);
            uint earlier = end > lowest ? mask & ((1u << lane) - 1u) : 0u;
#if WAVE32
            for (; earlier != 0u; earlier &= earlier - 1u) {
                uint i = findLSB(earlier);
                uint at = s_copy_dst[i];
                dependent = dependent || (from < at + s_copy_len[i] && end > at);
            }
#else
            for (uint i = 0u; i < LANES; i++) {
                uint at = s_copy_dst[i];
                dependent = dependent || ((earlier & (1u << i)) != 0u && from < at + s_copy_len[i] && end > at);
            }
#endif
        }
        uint waits = ballot(dependent);
        uint batch = waits == 0u ? mask : mask & ((1u << findLSB(waits)) - 1u);
        uint total;
        uint first = exclusive_sum((batch & (1u << lane)) != 0u ? s_copy_len[lane] : 0u, total);
        s_copy_first[lane] = first;
        // A batch of one copy needs no search for the copy of a byte.
        uint single = bitCount(batch) == 1u ? findLSB(batch) : LANES;
        barrier();
#if WAVE32
        // Four bytes per lane per step, their loads issued before their stores.
        for (uint k0 = lane; k0 < total; k0 += 4u * LANES) {
            uint v[4];
            uint at[4];
            for (uint u = 0u; u < 4u; u++) {
                uint k = k0 + u * LANES;
                at[u] = 0xFFFFFFFFu;
                if (k < total) {
                    uint c = copy_of(k, single);
                    uint o = k - s_copy_first[c];
                    uint to = s_copy_dst[c];
                    uint d = s_copy_dist[c];
                    at[u] = to + o;
                    v[u] = got(to - d + (o < d ? o : o % d));
                }
            }
            for (uint u = 0u; u < 4u; u++) {
                if (at[u] != 0xFFFFFFFFu) {
                    put(at[u], v[u]);
                }
            }
        }
#else
        for (uint k = lane; k < total; k += LANES) {
            uint c = copy_of(k, single);
            uint o = k - s_copy_first[c];
            uint to = s_copy_dst[c];
            uint d = s_copy_dist[c];
            put(to + o, got(to - d + (o < d ? o : o % d)));
        }
#endif
        mask &= ~batch;
        if (mask != 0u) {
            sync();
        }
    }
    // Nobody reads the copy list any more when the next round writes it.
    barrier();
}

void stored_block() {
    PROF_START(t0);
    uint len = shuffle(lane == 0u ? take(16u) : 0u, 0u);
    if (pos + len > size) {
        fault = OUTPUT_OVERFLOW;
        PROF_ADD(4, t0);
        return;
    }
    for (uint k = 0u; k < len; k += LANES) {
        bool live = k + lane < len;
        if (live) {
            put(pos + k + lane, take(8u));
        }
        refill(live, 0u);
    }
    refill(true, len % LANES);
    pos += len;
    PROF_ADD(4, t0);
}

// A dynamic block's header: the precode, then the lit/len and distance code lengths.
void dynamic_header() {
    uint header = shuffle(lane == 0u ? take(14u) : 0u, 0u);
    refill(lane == 0u, 0u);
    uint hlit = (header & 31u) + 257u;
    uint hdist = ((header >> 5) & 31u) + 1u;
    uint hclen = (header >> 10) + 4u;
    if (lane < 19u) {
        s_lens[lane] = 0u;
    }
    barrier();
    if (lane < hclen) {
        s_lens[PRECODE_ORDER[lane]] = take(3u);
    }
    refill(lane < hclen, 0u);
    barrier();
    if (lane == 0u && !build(PRE, 0u, 19u)) {
        s_fault = OVERSUBSCRIBED;
    }
    barrier();
    if (s_fault != OK) {
        fault = s_fault;
        return;
    }

    uint total = hlit + hdist;
    uint n = 0u;
    uint last = 0u;
    // Every round settles at least one length, so `total` rounds bound the loop.
    for (uint round = 0u; n < total && fault == OK; round++) {
        if (round > total) {
            fault = STEP_LIMIT;
            break;
        }
        uint len;
        uint sym = decode(PRE, bits, len);
        uint rep = 1u;
        uint extra = 0u;
        if (sym == 16u) {
            extra = 2u;
            rep = 3u + (uint(bits >> len) & 3u);
        } else if (sym == 17u) {
            extra = 3u;
            rep = 3u + (uint(bits >> len) & 7u);
        } else if (sym == 18u) {
            extra = 7u;
            rep = 11u + (uint(bits >> len) & 127u);
        }
        uint sum;
        uint start = n + exclusive_sum(rep, sum);
        bool live = start < total;
        // A repeat-previous takes the value of the nearest lane below with another symbol, or
        // the last length of the rounds before.
        uint own = sym < 16u ? sym : 0u;
        uint others = ballot(sym != 16u) & ((1u << lane) - 1u);
        uint from = others == 0u ? 0u : findMSB(others);
        uint theirs = shuffle(own, from);
        uint value = sym != 16u ? own : (others != 0u ? theirs : last);
        bool invalid = live && len == 0u;
        bool no_previous = live && sym == 16u && start == 0u;
        bool overrun = live && start + rep > total;
        check(invalid || no_previous || overrun,
              invalid ? INVALID_CODE : BAD_REPEAT);
        if (fault != OK) {
            break;
        }
        if (live) {
            take(len + extra);
            for (uint i = 0u; i < rep; i++) {
                s_lens[start + i] = value;
            }
        }
        refill(live, 0u);
        uint settled = ballot(live);
        last = shuffle(value, findMSB(settled));
        // Active lanes are a prefix (starts only grow). When some lane is not, the lengths are
        // complete (the last live lane ended exactly at `total`: an overrun failed above).
        n = settled == 0xFFFFFFFFu ? n + sum : total;
    }
    if (fault != OK) {
        return;
    }
    if (truncated) {
        fault = TRUNCATED;
        return;
    }
    barrier();
    if (s_lens[256] == 0u) {
        fault = NO_END_OF_BLOCK;
        return;
    }
    build_pair(hlit, hdist);
}

// A Huffman block's data, in rounds: every lane that owes a match reads its distance, every
// other lane up to the first end of block reads a lit/len element.
void huffman_block() {
    pend_len = 0u;
    bool draining = false;
    // Every round but the last writes output or settles matches that did: 2 (size + 1) rounds
    // bound a block.
    for (uint round = 0u; ; round++) {
        if (round > 2u * size + 4u) {
            fault = STEP_LIMIT;
            return;
        }
        PROF_START(t_round);
#if PROFILE
        prof[7] += 256ul;
#endif
        bool pending = pend_len != 0u;
        uint len;
        uint sym;
        uint used = 0u;
        uint out_len = 0u;
        uint distance = 0u;
        bool stop = false;
        if (pending) {
            sym = decode(DIST, bits, len);
            if (len != 0u) {
                uint e = DEXTRA[sym];
                distance = DBASE[sym] + (uint(bits >> len) & ((1u << e) - 1u));
                used = len + e;
            }
        } else {
            sym = decode(LIT, bits, len);
            used = len;
            if (len == 0u || sym >= 256u) {
                stop = len == 0u || sym == 256u || sym > 285u;
                if (!stop) {
                    uint i = sym - 257u;
                    uint e = LEXTRA[i];
                    out_len = LBASE[i] + (uint(bits >> len) & ((1u << e) - 1u));
                    used = len + e;
                }
            } else {
                out_len = 1u;
            }
        }
        uint stops = draining ? 0u : ballot(!pending && stop);
        uint first_stop = stops == 0u ? LANES : findLSB(stops);
        bool live = !draining && !pending && lane <= first_stop;
        uint total;
        uint at = pos + exclusive_sum(live ? out_len : 0u, total);

        bool bad = false;
        uint reason = OK;
        if (live && stop && sym != 256u) {
            bad = true;
            reason = len == 0u ? INVALID_CODE : BAD_LENGTH_SYMBOL;
        } else if (live && !stop && at + out_len > size) {
            bad = true;
            reason = OUTPUT_OVERFLOW;
        } else if (pending && len == 0u) {
            bad = true;
            reason = INVALID_CODE;
        } else if (pending && distance > pend_dst) {
            bad = true;
            reason = DISTANCE_TOO_FAR;
        }
        check(bad, reason);
        if (fault != OK) {
            return;
        }

        if (live || pending) {
            take(used);
        }
        if (live && out_len == 1u && sym < 256u) {
            put(at, sym);
        }
        if (pending) {
            s_copy_dst[lane] = pend_dst;
            s_copy_dist[lane] = distance;
            s_copy_len[lane] = pend_len;
            pend_len = 0u;
        }
        uint copy_mask = ballot(pending);
        PROF_ADD(1, t_round);
        PROF_START(t_copies);
        copies(copy_mask);
        PROF_ADD(2, t_copies);
        if (live && !stop && out_len > 0u && sym > 256u) {
            pend_len = out_len;
            pend_dst = at;
        }
        pos += total;
        refill(live || pending, 0u);
        if (draining) {
            return;
        }
        if (first_stop < LANES) {
            // End of block: the lanes below it that just read a length settle it in one more
            // round (the end-of-block pass), then the block is over.
            draining = true;
            if (ballot(pend_len != 0u) == 0u) {
                return;
            }
        }
    }
}

void fixed_code() {
    for (uint i = lane; i < 320u; i += LANES) {
        s_lens[i] = i < 144u ? 8u : i < 256u ? 9u : i < 280u ? 7u : i < 288u ? 8u : 5u;
    }
    build_pair(288u, 32u);
}

uint decode_tile(Tile tile) {
    size = tile.dst_bytes;
    if (size > TILE_SIZE) {
        return SIZE_MISMATCH;
    }
    if ((tile.src_bytes & 3u) != 0u) {
        return MISALIGNED;
    }
    src = Words(tile.src);
    dst = Bytes(tile.dst);
    words = tile.src_bytes / 4u;
    cursor = 0u;
    window = word_at(lane);
    truncated = false;
    pos = 0u;
    fault = OK;
    bits = 0ul;
    count = 0u;
    pend_len = 0u;
    if (lane == 0u) {
        s_fault = OK;
    }
    refill(true, 0u);
    if (truncated) {
        return TRUNCATED;
    }
    // Each block reads at least 3 bits of the tile's input.
    uint blocks = 0u;
    for (;;) {
        if (blocks++ > 8u * tile.src_bytes) {
            return STEP_LIMIT;
        }
        uint header = shuffle(lane == 0u ? take(3u) : 0u, 0u);
        refill(lane == 0u, 0u);
        uint kind = header >> 1;
        if (kind == 0u) {
            stored_block();
        } else if (kind == 1u) {
            PROF_START(t_fixed);
            fixed_code();
            PROF_ADD(6, t_fixed);
            if (fault == OK) {
                huffman_block();
            }
        } else if (kind == 2u) {
            PROF_START(t_header);
            dynamic_header();
            PROF_ADD(5, t_header);
            if (fault == OK) {
                huffman_block();
            }
        } else {
            return BAD_BLOCK_TYPE;
        }
        if (fault != OK) {
            return fault;
        }
        if (truncated) {
            return TRUNCATED;
        }
        if ((header & 1u) != 0u) {
            break;
        }
    }
    if (pos != size) {
        return OUTPUT_SHORT;
    }
    if (cursor != words) {
        return TRAILING_DATA;
    }
    return OK;
}

void main() {
    lane = gl_LocalInvocationID.x;
    ballot_slot = 0u;
    row_slot = 0u;
    if (lane < 3u) {
        s_ballot[lane] = 0u;
    }
    barrier();
    Tiles tiles = Tiles(pc.tiles);
    Status status = Status(pc.status);
    for (uint i = gl_WorkGroupID.x; i < pc.count; i += gl_NumWorkGroups.x) {
#if PROFILE
        for (uint k = 0u; k < 8u; k++) {
            prof[k] = 0ul;
        }
        uint64_t t_tile = clockARB();
#endif
        uint result = decode_tile(tiles.t[i]);
        if (lane == 0u) {
            status.s[i] = result;
#if PROFILE
            prof[0] = clockARB() - t_tile;
            for (uint k = 0u; k < 8u; k++) {
                atomicAdd(status.s[pc.count + k], uint(prof[k] >> 8));
            }
#endif
        }
        // The next tile's shared state is written only after everyone is done with this one's.
        barrier();
    }
}
