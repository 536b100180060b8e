#version 460
// dsr's tile hash check: XXH3-64 (seed 0, the default secret) of decoded tiles in GPU memory,
// compared with the hashes an archive's table of contents holds for them (docs/archive.md).
//
// One workgroup of 8 invocations per tile (workgroups loop over the list): invocation i keeps
// XXH3's accumulator i over the tile's 64-byte stripes, as the reference's scalar loop does for
// all eight; invocation 0 merges them, or hashes a tile of 240 bytes or fewer alone. Every read
// is inside the tile's range: its address and length come from the list the host wrote, and
// nothing in the tile's bytes steers a read. Each tile's status word ends 0 (the hash matches)
// or 1 (it does not).
//
// Built with: glslc --target-env=vulkan1.2 -O shaders/tilehash.comp -o shaders/tilehash.spv

#extension GL_EXT_buffer_reference : require
#extension GL_EXT_buffer_reference2 : require
#extension GL_EXT_shader_explicit_arithmetic_types_int8 : require
#extension GL_EXT_shader_explicit_arithmetic_types_int64 : require

layout(local_size_x = 8) in;

struct Tile {
    uint64_t addr;
    uint len;
    uint pad;
    uint64_t expected;
};

layout(buffer_reference, std430, buffer_reference_align = 8) readonly buffer Tiles { Tile t[]; };
layout(buffer_reference, std430, buffer_reference_align = 4) writeonly buffer Status { uint s[]; };
layout(buffer_reference, std430, buffer_reference_align = 1) readonly buffer Bytes { uint8_t b[]; };
layout(buffer_reference, std430, buffer_reference_align = 8) readonly buffer Words { uint64_t w[]; };

layout(push_constant) uniform Push {
    uint64_t tiles;
    uint64_t status;
    uint count;
} pc;

const uint64_t P32_1 = 0x9E3779B1ul;
const uint64_t P32_2 = 0x85EBCA77ul;
const uint64_t P32_3 = 0xC2B2AE3Dul;
const uint64_t P64_1 = 0x9E3779B185EBCA87ul;
const uint64_t P64_2 = 0xC2B2AE3D27D4EB4Ful;
const uint64_t P64_3 = 0x165667B19E3779F9ul;
const uint64_t P64_4 = 0x85EBCA77C2B2AE63ul;
const uint64_t P64_5 = 0x27D4EB2F165667C5ul;

// XXH3's default secret, 192 bytes as little-endian words.
const uint SECRET[48] = uint[48](
    0x396cfeb8u, 0xbe4ba423u, 0x2c81017cu, 0x1cad21f7u, 0xe96dd4deu, 0xdb979083u, 0xa4a44072u, 0x1f67b3b7u,
    0x4ee679cbu, 0x78e5c0ccu, 0x7dd05a82u, 0x2172ffccu, 0x744608b8u, 0x8e2443f7u, 0xe69035e0u, 0x4c263a81u,
    0xbb52283cu, 0xcb00c391u, 0x8b65d088u, 0xa32e531bu, 0x97486471u, 0x4ef90da2u, 0x46ef1938u, 0xd8acdea9u,
    0x3f76faa8u, 0x3f349ce3u, 0xc7bbdcf9u, 0x1d4f0bc7u, 0x4be0518au, 0x3159b4cdu, 0xc97e9fc8u, 0x647378d9u,
    0x83acc5eau, 0xc3ebd334u, 0xffa081c5u, 0xeb6313fau, 0x51dd0d17u, 0x49daf0b7u, 0x265516d3u, 0x9e68d429u,
    0x58be162bu, 0xfca1477du, 0xd1b8f88fu, 0xce31d07au, 0x8f3acb45u, 0x28041695u, 0xcafbd7afu, 0x7e404bbbu);

uint secret_byte(uint at) {
    return (SECRET[at >> 2] >> ((at & 3u) * 8u)) & 0xFFu;
}

uint secret32(uint at) {
    if ((at & 3u) == 0u) {
        return SECRET[at >> 2];
    }
    return secret_byte(at) | secret_byte(at + 1u) << 8 | secret_byte(at + 2u) << 16 | secret_byte(at + 3u) << 24;
}

uint64_t secret64(uint at) {
    return packUint2x32(uvec2(secret32(at), secret32(at + 4u)));
}

// The tile's bytes: through 8-byte words where the tile is 8-byte aligned, bytes otherwise.
uint64_t g_addr;
bool g_aligned;

uint load8(uint at) {
    return uint(Bytes(g_addr).b[at]);
}

uint load32(uint at) {
    return load8(at) | load8(at + 1u) << 8 | load8(at + 2u) << 16 | load8(at + 3u) << 24;
}

uint64_t load64(uint at) {
    if (g_aligned && (at & 7u) == 0u) {
        return Words(g_addr).w[at >> 3];
    }
    return packUint2x32(uvec2(load32(at), load32(at + 4u)));
}

uint64_t mul32(uint a, uint b) {
    uint hi, lo;
    umulExtended(a, b, hi, lo);
    return packUint2x32(uvec2(lo, hi));
}

// The 128-bit product of a and b, its halves xored.
uint64_t mul128_fold64(uint64_t a, uint64_t b) {
    uvec2 x = unpackUint2x32(a), y = unpackUint2x32(b);
    uint64_t p00 = mul32(x.x, y.x), p01 = mul32(x.x, y.y), p10 = mul32(x.y, y.x), p11 = mul32(x.y, y.y);
    uint64_t mid = (p00 >> 32) + (p01 & 0xFFFFFFFFul) + (p10 & 0xFFFFFFFFul);
    uint64_t lo = (p00 & 0xFFFFFFFFul) | (mid << 32);
    uint64_t hi = p11 + (p01 >> 32) + (p10 >> 32) + (mid >> 32);
    return lo ^ hi;
}

uint64_t rotl64(uint64_t v, uint r) {
    return (v << r) | (v >> (64u - r));
}

uint64_t xxh64_avalanche(uint64_t h) {
    h ^= h >> 33;
    h *= P64_2;
    h ^= h >> 29;
    h *= P64_3;
    h ^= h >> 32;
    return h;
}

uint64_t xxh3_avalanche(uint64_t h) {
    h ^= h >> 37;
    h *= 0x165667919E3779F9ul;
    h ^= h >> 32;
    return h;
}

uint64_t strong_avalanche(uint64_t h, uint len) {
    h ^= rotl64(h, 49) ^ rotl64(h, 24);
    h *= 0x9FB21C651E98DF25ul;
    h ^= (h >> 35) + uint64_t(len);
    h *= 0x9FB21C651E98DF25ul;
    h ^= h >> 28;
    return h;
}

uint byte_swap(uint v) {
    return (v >> 24) | ((v >> 8) & 0xFF00u) | ((v << 8) & 0xFF0000u) | (v << 24);
}

uint64_t mix16(uint at, uint secret) {
    return mul128_fold64(load64(at) ^ secret64(secret), load64(at + 8u) ^ secret64(secret + 8u));
}

// XXH3-64 of 240 bytes or fewer, by one invocation.
uint64_t hash_short(uint len) {
    if (len == 0u) {
        return xxh64_avalanche(secret64(56u) ^ secret64(64u));
    }
    if (len <= 3u) {
        uint combo = load8(0u) << 16 | load8(len >> 1) << 24 | load8(len - 1u) | len << 8;
        return xxh64_avalanche(uint64_t(combo) ^ uint64_t(secret32(0u) ^ secret32(4u)));
    }
    if (len <= 8u) {
        uint64_t flip = secret64(8u) ^ secret64(16u);
        uint64_t value = uint64_t(load32(len - 4u)) + (uint64_t(load32(0u)) << 32);
        return strong_avalanche(value ^ flip, len);
    }
    if (len <= 16u) {
        uint64_t lo = load64(0u) ^ (secret64(24u) ^ secret64(32u));
        uint64_t hi = load64(len - 8u) ^ (secret64(40u) ^ secret64(48u));
        uvec2 halves = unpackUint2x32(lo);
        uint64_t swapped = packUint2x32(uvec2(byte_swap(halves.y), byte_swap(halves.x)));
        return xxh3_avalanche(uint64_t(len) + swapped + hi + mul128_fold64(lo, hi));
    }
    uint64_t acc = uint64_t(len) * P64_1;
    if (len <= 128u) {
        if (len > 32u) {
            if (len > 64u) {
                if (len > 96u) {
                    acc += mix16(48u, 96u);
                    acc += mix16(len - 64u, 112u);
                }
                acc += mix16(32u, 64u);
                acc += mix16(len - 48u, 80u);
            }
            acc += mix16(16u, 32u);
            acc += mix16(len - 32u, 48u);
        }
        acc += mix16(0u, 0u);
        acc += mix16(len - 16u, 16u);
        return xxh3_avalanche(acc);
    }
    for (uint i = 0u; i < 8u; i++) {
        acc += mix16(16u * i, 16u * i);
    }
    acc = xxh3_avalanche(acc);
    uint rounds = len / 16u;
    for (uint i = 8u; i < rounds; i++) {
        acc += mix16(16u * i, 16u * (i - 8u) + 3u);
    }
    acc += mix16(len - 16u, 136u - 17u);
    return xxh3_avalanche(acc);
}

shared uint64_t accs[8];

// Invocation `lane`'s part of one 64-byte stripe at `at`, keyed by the secret at `key`: XXH3
// adds stripe word i to accumulator i^1 and the product of its keyed halves to accumulator i.
uint64_t stripe(uint at, uint key, uint lane) {
    uint64_t mine = load64(at + 8u * lane);
    uint64_t other = load64(at + 8u * (lane ^ 1u));
    uvec2 keyed = unpackUint2x32(mine ^ secret64(key + 8u * lane));
    return other + mul32(keyed.x, keyed.y);
}

void main() {
    uint lane = gl_LocalInvocationID.x;
    uint64_t init[8] = uint64_t[8](P32_3, P64_1, P64_2, P64_3, P64_4, P32_2, P64_5, P32_1);
    for (uint t = gl_WorkGroupID.x; t < pc.count; t += gl_NumWorkGroups.x) {
        Tile tile = Tiles(pc.tiles).t[t];
        g_addr = tile.addr;
        g_aligned = (tile.addr & 7ul) == 0ul;
        uint len = tile.len;
        uint64_t hash = 0ul;
        if (len <= 240u) {
            if (lane == 0u) {
                hash = hash_short(len);
            }
        } else {
            uint64_t acc = init[lane];
            // Blocks of 16 stripes (1 KiB), each followed by a scramble.
            uint blocks = (len - 1u) / 1024u;
            for (uint b = 0u; b < blocks; b++) {
                for (uint s = 0u; s < 16u; s++) {
                    acc += stripe(b * 1024u + s * 64u, s * 8u, lane);
                }
                acc ^= acc >> 47;
                acc ^= secret64(128u + 8u * lane);
                acc *= P32_1;
            }
            uint stripes = ((len - 1u) - 1024u * blocks) / 64u;
            for (uint s = 0u; s < stripes; s++) {
                acc += stripe(blocks * 1024u + s * 64u, s * 8u, lane);
            }
            acc += stripe(len - 64u, 192u - 64u - 7u, lane);
            accs[lane] = acc;
            barrier();
            if (lane == 0u) {
                hash = uint64_t(len) * P64_1;
                for (uint k = 0u; k < 4u; k++) {
                    hash += mul128_fold64(accs[2u * k] ^ secret64(11u + 16u * k), accs[2u * k + 1u] ^ secret64(11u + 16u * k + 8u));
                }
                hash = xxh3_avalanche(hash);
            }
            barrier();
        }
        if (lane == 0u) {
            Status(pc.status).s[t] = hash == tile.expected ? 0u : 1u;
        }
    }
}
