// CRC-32C with the CPU's own instruction (SSE 4.2 on x86-64, the CRC extension on ARMv8). Swift cannot reach
// these instructions, and they checksum several times faster than the table-driven code in DNPipesEmbedded,
// which remains the reference and the fallback.
#ifndef DNPIPES_CRC32C_HW_H
#define DNPIPES_CRC32C_HW_H
#include <stddef.h>
#include <stdint.h>

/// Whether this CPU has the instruction (checked once at run time).
int dnp_crc32c_hw_available(void);

/// Continues a CRC-32C over `len` bytes. `state` is the running register (the inverted checksum), as in
/// the table-driven version; only call when dnp_crc32c_hw_available() returned 1.
uint32_t dnp_crc32c_hw_update(uint32_t state, const void *data, size_t len);

#endif
