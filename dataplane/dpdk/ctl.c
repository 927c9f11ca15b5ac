/* SPDX-License-Identifier: Apache-2.0
 * vgw-fwd control socket (docs/forwarder.md): a Unix stream socket, mode 0600 (0660 with a
 * socket group), carrying framed, versioned, length-bounded requests from peers whose uid is
 * root or ours (or whose gid is the socket group). Served on the control thread only; nothing a
 * client sends can stop forwarding: apply.c validates a change completely before anything
 * changes, and the core publishes it as one generation. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "apply.h"
#include "ctl.h"
#include "neigh.h"
#include "stats.h"
#include "vbuf.h"

#define CTL_MAGIC "VGWC"
#define CTL_VERSION 1u
#define CTL_HDR 16u
#define CTL_MAX_CLIENTS 16
#define CTL_IDLE_MS 60000u
#define CTL_MAX_SMALL 4096u
#define CTL_MAX_DELTA (4u << 20)
#define CTL_MAX_BUFFERED (128ull << 20) /* payload bytes buffered over all clients */
#define CTL_FRAMES_PER_POLL 16          /* per client, so one client cannot starve the slow path */

enum ctl_type {
    CTL_HELLO = 1,  /* -> JSON: protocol, pid, start time, generation, workers */
    CTL_APPLY = 2,  /* full "vgw-config 1" document -> "generation N" */
    CTL_DELTA = 3,  /* "vgw-delta 1" document -> "generation N" */
    CTL_STATS = 4,  /* -> JSON counters */
    CTL_CONFIG = 5, /* -> the applied document, canonical form */
    CTL_NEIGH = 6,  /* -> JSON neighbour table */
};
#define CTL_REPLY 0x80u
#define CTL_F_ERROR 0x0001u

pthread_mutex_t g_ctl_lock = PTHREAD_MUTEX_INITIALIZER;

/* ---- the socket ------------------------------------------------------------------------------ */

typedef struct ctl_client {
    int fd;
    uint8_t hdr[CTL_HDR];
    uint32_t hgot;
    char *buf;
    uint32_t need, got;
    uint8_t type;
    uint32_t id;
    uint64_t last_ms;
} ctl_client_t;

static int g_listen = -1;
static gid_t g_group;
static bool g_have_group;

/* Root, our own uid, or (with a socket group) that group as the peer's effective gid. */
static bool peer_allowed(int fd)
{
    struct ucred cr;
    socklen_t len = sizeof cr;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) != 0 || len != sizeof cr)
        return false;
    return cr.uid == 0 || cr.uid == geteuid() || (g_have_group && cr.gid == g_group);
}

static int resolve_group(const char *name, gid_t *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(name, &end, 10);
    if (*name && !*end && !errno && v < (1ul << 31)) {
        *out = (gid_t)v;
        return 0;
    }
    struct group *g = getgrnam(name);
    if (!g)
        return -1;
    *out = g->gr_gid;
    return 0;
}
static ctl_client_t g_clients[CTL_MAX_CLIENTS];
static uint64_t g_buffered; /* bytes of payload buffers allocated */

static void client_free_buf(ctl_client_t *c)
{
    if (c->buf) {
        g_buffered -= (uint64_t)c->need + 1;
        free(c->buf);
        c->buf = NULL;
    }
}

static void client_close(ctl_client_t *c)
{
    if (c->fd >= 0)
        close(c->fd);
    client_free_buf(c);
    memset(c, 0, sizeof *c);
    c->fd = -1;
}

static int write_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n) {
        ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1; /* includes the SO_SNDTIMEO timeout */
        }
        b += w, n -= (size_t)w;
    }
    return 0;
}

static int reply(ctl_client_t *c, uint8_t type, uint32_t id, bool error, const char *payload, size_t len)
{
    uint8_t h[CTL_HDR];
    memcpy(h, CTL_MAGIC, 4);
    h[4] = CTL_VERSION;
    h[5] = (uint8_t)(type | CTL_REPLY);
    uint16_t fl = htons(error ? CTL_F_ERROR : 0);
    memcpy(h + 6, &fl, 2);
    uint32_t l = htonl((uint32_t)len), i = htonl(id);
    memcpy(h + 8, &l, 4);
    memcpy(h + 12, &i, 4);
    if (write_all(c->fd, h, sizeof h) || (len && write_all(c->fd, payload, len)))
        return -1;
    return 0;
}

static int reply_err(fwd_t *f, ctl_client_t *c, uint8_t type, uint32_t id, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int reply_err(fwd_t *f, ctl_client_t *c, uint8_t type, uint32_t id, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    f->ctl[CTL_CNT_CTL_ERRORS]++;
    return reply(c, type, id, true, msg, strlen(msg));
}

static void handle_request(fwd_t *f, ctl_client_t *c)
{
    char err[768];
    struct vbuf b = {0};
    f->ctl[CTL_CNT_CTL_FRAMES]++;
    switch (c->type) {
    case CTL_HELLO:
        vb_printf(&b, "{\"protocol\":%u,\"pid\":%d,\"start_unix_ns\":%llu,\"generation\":%llu,\"workers\":%u}",
                  CTL_VERSION, (int)getpid(), (unsigned long long)f->start_unix_ns,
                  (unsigned long long)vgw_dp_generation(f->dp), f->nworkers);
        break;
    case CTL_APPLY:
        if (fwd_apply_document(f, c->buf, c->got, err, sizeof err) != 0) {
            reply_err(f, c, c->type, c->id, "%s", err);
            return;
        }
        vb_printf(&b, "generation %llu", (unsigned long long)vgw_dp_generation(f->dp));
        break;
    case CTL_DELTA:
        if (fwd_apply_delta(f, c->buf, c->got, err, sizeof err) != 0) {
            reply_err(f, c, c->type, c->id, "%s", err);
            return;
        }
        vb_printf(&b, "generation %llu", (unsigned long long)vgw_dp_generation(f->dp));
        break;
    case CTL_STATS:
        pthread_mutex_lock(&g_ctl_lock);
        stats_json(f, &b);
        pthread_mutex_unlock(&g_ctl_lock);
        break;
    case CTL_CONFIG: {
        size_t len = 0;
        char *text = vgw_cfg_serialize(f->cfg, &len);
        if (!text)
            b.oom = true;
        else
            vb_put(&b, text, len);
        free(text);
        break;
    }
    case CTL_NEIGH:
        neigh_dump_json(f, &b);
        break;
    default:
        break;
    }
    if (b.oom)
        reply_err(f, c, c->type, c->id, "out of memory");
    else
        reply(c, c->type, c->id, false, b.p ? b.p : "", b.len);
    vb_free(&b);
}

/* Reads what is available; returns -1 when the client must be closed. */
static int client_read(fwd_t *f, ctl_client_t *c)
{
    for (int frames = 0; frames < CTL_FRAMES_PER_POLL;) {
        if (c->hgot < CTL_HDR) {
            ssize_t r = recv(c->fd, c->hdr + c->hgot, CTL_HDR - c->hgot, MSG_DONTWAIT);
            if (r == 0)
                return -1;
            if (r < 0)
                return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? 0 : -1;
            c->hgot += (uint32_t)r;
            if (c->hgot < CTL_HDR)
                continue;
            uint32_t len, id;
            memcpy(&len, c->hdr + 8, 4);
            memcpy(&id, c->hdr + 12, 4);
            len = ntohl(len), id = ntohl(id);
            c->type = c->hdr[5];
            c->id = id;
            if (memcmp(c->hdr, CTL_MAGIC, 4)) {
                reply_err(f, c, 0, id, "bad magic: expected \"VGWC\" frames (docs/forwarder.md)");
                return -1;
            }
            if (c->hdr[4] != CTL_VERSION) {
                reply_err(f, c, c->type, id, "unsupported protocol version %u (this forwarder speaks %u)", c->hdr[4],
                          CTL_VERSION);
                return -1;
            }
            uint32_t max = c->type == CTL_APPLY ? VGW_CFG_MAX_BYTES
                           : c->type == CTL_DELTA ? CTL_MAX_DELTA
                                                  : CTL_MAX_SMALL;
            if (c->type < CTL_HELLO || c->type > CTL_NEIGH) {
                reply_err(f, c, c->type, id, "unknown request type %u", c->type);
                return -1;
            }
            if (len > max) {
                reply_err(f, c, c->type, id, "frame too large: %u bytes (max %u for this request)", len, max);
                return -1;
            }
            if (g_buffered + len + 1 > CTL_MAX_BUFFERED) {
                reply_err(f, c, c->type, id, "busy: too much request data in flight, retry");
                return -1;
            }
            c->need = len, c->got = 0;
            c->buf = malloc((size_t)len + 1);
            if (c->buf)
                g_buffered += (uint64_t)len + 1;
            if (!c->buf) {
                reply_err(f, c, c->type, id, "out of memory");
                return -1;
            }
        }
        if (c->got < c->need) {
            ssize_t r = recv(c->fd, c->buf + c->got, c->need - c->got, MSG_DONTWAIT);
            if (r == 0)
                return -1;
            if (r < 0)
                return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? 0 : -1;
            c->got += (uint32_t)r;
            if (c->got < c->need)
                continue;
        }
        c->buf[c->got] = 0;
        handle_request(f, c);
        client_free_buf(c);
        c->hgot = 0, c->need = c->got = 0;
        frames++;
    }
    return 0; /* more may be pending: poll() reports the socket readable again */
}

int ctl_open(fwd_t *f)
{
    for (int i = 0; i < CTL_MAX_CLIENTS; i++)
        g_clients[i].fd = -1;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(f->socket_path) >= sizeof sa.sun_path) {
        fprintf(stderr, "vgw-fwd: socket path too long\n");
        return -1;
    }
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", f->socket_path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    /* A live forwarder already on this path? Refuse rather than steal its socket. */
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) {
        fprintf(stderr, "vgw-fwd: %s is in use by a running forwarder\n", f->socket_path);
        close(fd);
        return -1;
    }
    close(fd);
    struct stat st;
    if (lstat(f->socket_path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            fprintf(stderr, "vgw-fwd: %s exists and is not a socket\n", f->socket_path);
            return -1;
        }
        unlink(f->socket_path); /* stale, from a forwarder that died */
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    g_have_group = f->socket_group[0] != 0;
    if (g_have_group && resolve_group(f->socket_group, &g_group) != 0) {
        fprintf(stderr, "vgw-fwd: socket-group %s: no such group\n", f->socket_group);
        close(fd);
        return -1;
    }
    mode_t old = umask(0177);
    int rc = bind(fd, (struct sockaddr *)&sa, sizeof sa);
    umask(old);
    if (rc || (g_have_group && chown(f->socket_path, (uid_t)-1, g_group)) ||
        chmod(f->socket_path, g_have_group ? 0660 : 0600) || listen(fd, 16)) {
        fprintf(stderr, "vgw-fwd: control socket %s: %s\n", f->socket_path, strerror(errno));
        close(fd);
        return -1;
    }
    g_listen = fd;
    return 0;
}

void ctl_poll(fwd_t *f, int timeout_ms)
{
    struct pollfd pf[CTL_MAX_CLIENTS + 1];
    int idx[CTL_MAX_CLIENTS + 1];
    int n = 0;
    pf[n].fd = g_listen, pf[n].events = POLLIN, idx[n++] = -1;
    for (int i = 0; i < CTL_MAX_CLIENTS; i++)
        if (g_clients[i].fd >= 0)
            pf[n].fd = g_clients[i].fd, pf[n].events = POLLIN, idx[n++] = i;
    int r = poll(pf, (nfds_t)n, timeout_ms);
    uint64_t now = fwd_now_ms();
    if (r > 0) {
        for (int k = 0; k < n; k++) {
            if (!pf[k].revents)
                continue;
            if (idx[k] < 0) {
                int cfd = accept4(g_listen, NULL, NULL, SOCK_CLOEXEC);
                if (cfd < 0)
                    continue;
                int slot = -1;
                for (int i = 0; i < CTL_MAX_CLIENTS; i++)
                    if (g_clients[i].fd < 0) {
                        slot = i;
                        break;
                    }
                if (slot < 0) {
                    close(cfd); /* too many clients */
                    continue;
                }
                if (!peer_allowed(cfd)) {
                    f->ctl[CTL_CNT_CTL_REJECTED]++;
                    close(cfd);
                    continue;
                }
                struct timeval tv = {.tv_sec = 2, .tv_usec = 0};
                setsockopt(cfd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
                g_clients[slot].fd = cfd;
                g_clients[slot].last_ms = now;
                continue;
            }
            ctl_client_t *c = &g_clients[idx[k]];
            c->last_ms = now;
            if (client_read(f, c) != 0)
                client_close(c);
        }
    }
    for (int i = 0; i < CTL_MAX_CLIENTS; i++)
        if (g_clients[i].fd >= 0 && now - g_clients[i].last_ms > CTL_IDLE_MS)
            client_close(&g_clients[i]);
}

void ctl_close(fwd_t *f)
{
    for (int i = 0; i < CTL_MAX_CLIENTS; i++)
        if (g_clients[i].fd >= 0)
            client_close(&g_clients[i]);
    if (g_listen >= 0) {
        close(g_listen);
        g_listen = -1;
        unlink(f->socket_path);
    }
}
