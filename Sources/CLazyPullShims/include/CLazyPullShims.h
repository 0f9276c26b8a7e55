#ifndef CLAZYPULL_SHIMS_H
#define CLAZYPULL_SHIMS_H

// Typed, non-variadic C entry points for the macro and variadic parts of
// libcurl and zlib, which Swift cannot call directly.

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>
#include <curl/curl.h>
#include <zlib.h>
#include <sys/types.h>
#include <sys/xattr.h>
#include <sys/mount.h>
#include <stdint.h>
#include <stddef.h>

typedef size_t (*lp_curl_data_cb)(char *ptr, size_t size, size_t nmemb, void *userdata);
typedef int (*lp_curl_xferinfo_cb)(void *userdata, curl_off_t dltotal, curl_off_t dlnow,
                                   curl_off_t ultotal, curl_off_t ulnow);

CURLcode lp_curl_setopt_long(CURL *handle, CURLoption option, long value);
CURLcode lp_curl_setopt_off(CURL *handle, CURLoption option, curl_off_t value);
CURLcode lp_curl_setopt_string(CURL *handle, CURLoption option, const char *value);
CURLcode lp_curl_setopt_pointer(CURL *handle, CURLoption option, void *value);
CURLcode lp_curl_setopt_data_cb(CURL *handle, CURLoption option, lp_curl_data_cb cb);
CURLcode lp_curl_setopt_xferinfo_cb(CURL *handle, lp_curl_xferinfo_cb cb);

CURLcode lp_curl_getinfo_long(CURL *handle, CURLINFO info, long *value);
CURLcode lp_curl_getinfo_off(CURL *handle, CURLINFO info, curl_off_t *value);
CURLcode lp_curl_getinfo_string(CURL *handle, CURLINFO info, const char **value);

/// A curl share handle whose connection cache, DNS cache and TLS sessions are
/// shared between threads, guarded by one mutex per data kind.
CURLSH *lp_curl_share_new(void);
void lp_curl_share_free(CURLSH *share);

/// `deflateInit2` is a macro: a gzip (RFC 1952) member writer at `level`.
int lp_deflate_init_gzip(z_stream *stream, int level);

/// `inflateInit2` is a macro; `window_bits` 15+32 auto-detects gzip and zlib.
int lp_inflate_init2(z_stream *stream, int window_bits);

dev_t lp_makedev(unsigned int major, unsigned int minor);
unsigned int lp_major(dev_t dev);
unsigned int lp_minor(dev_t dev);

/// A low-level FUSE session from an argv of mount options (`fuse_session_new`).
struct fuse_session *lp_fuse_session_new(int argc, char **argv, const struct fuse_lowlevel_ops *ops,
                                         void *userdata);
/// The multi-threaded loop with a loop config (a macro over versioned symbols in libfuse).
int lp_fuse_session_loop_mt(struct fuse_session *se, unsigned int max_threads, unsigned int max_idle_threads);
/// Capabilities of an immutable layer: readdirplus always (not adaptive), async and
/// parallel reads, large background queue. Applied in `init`.
void lp_fuse_conn_configure(struct fuse_conn_info *conn, unsigned int max_background);
/// Whether the kernel lets a file system without per-open state skip OPEN/RELEASE (bit 0,
/// FUSE_CAP_NO_OPEN_SUPPORT) and OPENDIR/RELEASEDIR (bit 1, FUSE_CAP_NO_OPENDIR_SUPPORT).
unsigned int lp_fuse_conn_stateless_open(const struct fuse_conn_info *conn);

/// Replies to a read with `length` bytes at `offset` of `fd`, spliced into /dev/fuse when
/// the kernel allows it (no copy through user space), read and copied otherwise.
int lp_fuse_reply_fd(fuse_req_t req, int fd, off_t offset, size_t length);

/// Sets `keep_cache` (a bitfield) on an open reply.
void lp_fuse_file_info_keep_cache(struct fuse_file_info *fi);

/// Starts writeback of a file's dirty pages without waiting (`sync_file_range(2)` with
/// SYNC_FILE_RANGE_WRITE), so the final sync of a pull has less left to do.
int lp_start_writeback(int fd);

/// `syncfs(2)` needs _GNU_SOURCE, which Swift's Glibc module does not define.
int lp_syncfs(int fd);

/// Starts `argv[0]` detached from its starter: a new session (`setsid`), stdin from
/// /dev/null, stdout and stderr appended to `log`, every other descriptor closed.
/// Returns 0 and the child's pid, or an errno value.
int lp_spawn_daemon(const char *path, char *const argv[], const char *log, pid_t *pid);

/// glibc malloc settings for a long-lived process with many threads: `arenas` arenas,
/// allocations of `mmap_threshold` bytes or more always mapped and unmapped (a fixed
/// threshold, so memory goes back to the system after a burst of large buffers), and up to
/// `trim_threshold` bytes kept at the top of the heap (no shrink and regrow per request).
void lp_tune_malloc(int arenas, int mmap_threshold, int trim_threshold);

/// `accept4(2)` with SOCK_CLOEXEC (a _GNU_SOURCE function).
int lp_accept_cloexec(int fd);

#endif
