#include "crc32c_hw.h"
#include <string.h>

#if defined(__x86_64__)
#include <cpuid.h>
#include <nmmintrin.h>

int dnp_crc32c_hw_available(void) {
    unsigned int a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    return (c & bit_SSE4_2) != 0;
}

__attribute__((target("sse4.2")))
uint32_t dnp_crc32c_hw_update(uint32_t state, const void *data, size_t len) {
    const unsigned char *p = data;
    uint64_t c = state;
    while (len >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = _mm_crc32_u64(c, v);
        p += 8;
        len -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (len--) c32 = _mm_crc32_u8(c32, *p++);
    return c32;
}

#elif defined(__aarch64__) && defined(__ARM_FEATURE_CRC32)
#include <arm_acle.h>

int dnp_crc32c_hw_available(void) { return 1; }

uint32_t dnp_crc32c_hw_update(uint32_t state, const void *data, size_t len) {
    const unsigned char *p = data;
    uint32_t c = state;
    while (len >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = __crc32cd(c, v);
        p += 8;
        len -= 8;
    }
    while (len--) c = __crc32cb(c, *p++);
    return c;
}

#else

int dnp_crc32c_hw_available(void) { return 0; }
uint32_t dnp_crc32c_hw_update(uint32_t state, const void *data, size_t len) { (void)data; (void)len; return state; }

#endif
