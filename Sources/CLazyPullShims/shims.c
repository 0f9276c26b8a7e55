#define _GNU_SOURCE
#include "CLazyPullShims.h"
#include <pthread.h>
#include <stdlib.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include <fcntl.h>
#include <spawn.h>
#include <malloc.h>
#include <sys/socket.h>

CURLcode lp_curl_setopt_long(CURL *h, CURLoption o, long v) { return curl_easy_setopt(h, o, v); }
CURLcode lp_curl_setopt_off(CURL *h, CURLoption o, curl_off_t v) { return curl_easy_setopt(h, o, v); }
CURLcode lp_curl_setopt_string(CURL *h, CURLoption o, const char *v) { return curl_easy_setopt(h, o, v); }
CURLcode lp_curl_setopt_pointer(CURL *h, CURLoption o, void *v) { return curl_easy_setopt(h, o, v); }
CURLcode lp_curl_setopt_data_cb(CURL *h, CURLoption o, lp_curl_data_cb cb) { return curl_easy_setopt(h, o, cb); }
CURLcode lp_curl_setopt_xferinfo_cb(CURL *h, lp_curl_xferinfo_cb cb) {
    return curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, cb);
}

CURLcode lp_curl_getinfo_long(CURL *h, CURLINFO i, long *v) { return curl_easy_getinfo(h, i, v); }
CURLcode lp_curl_getinfo_off(CURL *h, CURLINFO i, curl_off_t *v) { return curl_easy_getinfo(h, i, v); }
CURLcode lp_curl_getinfo_string(CURL *h, CURLINFO i, const char **v) { return curl_easy_getinfo(h, i, v); }

// One mutex per curl_lock_data value (the enum is small and dense).
#define LP_LOCK_KINDS 16
struct lp_share_locks { pthread_mutex_t m[LP_LOCK_KINDS]; };

static void lp_share_lock(CURL *h, curl_lock_data d, curl_lock_access a, void *u) {
    (void)h; (void)a;
    struct lp_share_locks *l = u;
    pthread_mutex_lock(&l->m[d % LP_LOCK_KINDS]);
}
static void lp_share_unlock(CURL *h, curl_lock_data d, void *u) {
    (void)h;
    struct lp_share_locks *l = u;
    pthread_mutex_unlock(&l->m[d % LP_LOCK_KINDS]);
}

// The lock table is kept alive for the process lifetime of the share handle.

CURLSH *lp_curl_share_new(void) {
    CURLSH *s = curl_share_init();
    if (!s) return NULL;
    struct lp_share_locks *l = calloc(1, sizeof *l);
    if (!l) { curl_share_cleanup(s); return NULL; }
    for (int i = 0; i < LP_LOCK_KINDS; i++) pthread_mutex_init(&l->m[i], NULL);
    curl_share_setopt(s, CURLSHOPT_LOCKFUNC, lp_share_lock);
    curl_share_setopt(s, CURLSHOPT_UNLOCKFUNC, lp_share_unlock);
    curl_share_setopt(s, CURLSHOPT_USERDATA, l);
    curl_share_setopt(s, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    curl_share_setopt(s, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
    curl_share_setopt(s, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
    return s;
}

void lp_curl_share_free(CURLSH *s) { if (s) curl_share_cleanup(s); }

int lp_deflate_init_gzip(z_stream *s, int level) {
    return deflateInit2(s, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
}

int lp_inflate_init2(z_stream *s, int window_bits) { return inflateInit2(s, window_bits); }

dev_t lp_makedev(unsigned int ma, unsigned int mi) { return makedev(ma, mi); }
unsigned int lp_major(dev_t d) { return major(d); }
unsigned int lp_minor(dev_t d) { return minor(d); }

int lp_syncfs(int fd) { return syncfs(fd); }

extern char **environ;

int lp_spawn_daemon(const char *path, char *const argv[], const char *log, pid_t *pid) {
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attributes;
    posix_spawn_file_actions_init(&actions);
    posix_spawnattr_init(&attributes);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    posix_spawn_file_actions_addclosefrom_np(&actions, 3);
    posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSID);
    int rc = posix_spawn(pid, path, &actions, &attributes, argv, environ);
    posix_spawnattr_destroy(&attributes);
    posix_spawn_file_actions_destroy(&actions);
    return rc;
}

void lp_tune_malloc(int arenas, int mmap_threshold, int trim_threshold) {
    mallopt(M_ARENA_MAX, arenas);
    mallopt(M_MMAP_THRESHOLD, mmap_threshold);
    mallopt(M_TRIM_THRESHOLD, trim_threshold);
}

int lp_accept_cloexec(int fd) { return accept4(fd, NULL, NULL, SOCK_CLOEXEC); }

struct fuse_session *lp_fuse_session_new(int argc, char **argv, const struct fuse_lowlevel_ops *ops,
                                         void *userdata) {
    struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
    struct fuse_session *se = fuse_session_new(&args, ops, sizeof *ops, userdata);
    fuse_opt_free_args(&args);
    return se;
}

int lp_fuse_session_loop_mt(struct fuse_session *se, unsigned int max_threads, unsigned int max_idle_threads) {
    struct fuse_loop_config *config = fuse_loop_cfg_create();
    if (!config) return -1;
    fuse_loop_cfg_set_clone_fd(config, 0);
    fuse_loop_cfg_set_max_threads(config, max_threads);
    fuse_loop_cfg_set_idle_threads(config, max_idle_threads);
    int rc = fuse_session_loop_mt(se, config);
    fuse_loop_cfg_destroy(config);
    return rc;
}

void lp_fuse_conn_configure(struct fuse_conn_info *conn, unsigned int max_background) {
    if (conn->capable & FUSE_CAP_READDIRPLUS) conn->want |= FUSE_CAP_READDIRPLUS;
    conn->want &= ~FUSE_CAP_READDIRPLUS_AUTO;
    if (conn->capable & FUSE_CAP_ASYNC_READ) conn->want |= FUSE_CAP_ASYNC_READ;
    if (conn->capable & FUSE_CAP_PARALLEL_DIROPS) conn->want |= FUSE_CAP_PARALLEL_DIROPS;
    if (conn->capable & FUSE_CAP_SPLICE_WRITE) conn->want |= FUSE_CAP_SPLICE_WRITE;
    if (conn->capable & FUSE_CAP_SPLICE_MOVE) conn->want |= FUSE_CAP_SPLICE_MOVE;
    if (conn->capable & FUSE_CAP_CACHE_SYMLINKS) conn->want |= FUSE_CAP_CACHE_SYMLINKS;
    conn->max_background = max_background;
    conn->congestion_threshold = max_background * 3 / 4;
}

unsigned int lp_fuse_conn_stateless_open(const struct fuse_conn_info *conn) {
    return ((conn->capable & FUSE_CAP_NO_OPEN_SUPPORT) ? 1u : 0u)
         | ((conn->capable & FUSE_CAP_NO_OPENDIR_SUPPORT) ? 2u : 0u);
}

int lp_fuse_reply_fd(fuse_req_t req, int fd, off_t offset, size_t length) {
    struct fuse_bufvec data = FUSE_BUFVEC_INIT(length);
    data.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK | FUSE_BUF_FD_RETRY;
    data.buf[0].fd = fd;
    data.buf[0].pos = offset;
    return fuse_reply_data(req, &data, FUSE_BUF_SPLICE_MOVE);
}

void lp_fuse_file_info_keep_cache(struct fuse_file_info *fi) { fi->keep_cache = 1; }

int lp_start_writeback(int fd) { return sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE); }
