// sync_file_range(2), which glibc declares only under _GNU_SOURCE, out of Swift's reach.
#ifndef DNPIPES_WRITEBACK_H
#define DNPIPES_WRITEBACK_H
#include <stdint.h>

/// Starts writing back the dirty pages of `length` bytes of `fd` from `offset`, without waiting for them.
/// Returns 0, or -1 with errno set. Durability still needs fdatasync: this only lets the disk start early.
int dnp_start_writeback(int fd, int64_t offset, int64_t length);

#endif
