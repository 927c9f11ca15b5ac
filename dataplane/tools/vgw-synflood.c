/* SPDX-License-Identifier: Apache-2.0
 * vgw-synflood: spoofed TCP SYNs at the highest rate the machine can send, for the lab's
 * `syn-flood` scenario (docs/lab.md). Not a general-purpose tool, and deliberately hard to misuse:
 *
 *   - source addresses are drawn at random from --src-net, and --src-net and --dst must both lie in
 *     the documentation / benchmark ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24,
 *     198.18.0.0/15): it cannot spoof or target a real address;
 *   - it refuses to send from the machine's initial network namespace (run it with
 *     `ip netns exec <ns>`), so frames can only enter links of a lab;
 *   - it always stops by itself: after --duration seconds (default 10, at most 3600) or --count
 *     frames, whichever comes first, or on SIGINT/SIGTERM.
 *
 * Frames: Ethernet + IPv4 + TCP SYN (random source address, source port, ISN and IP id; TCP options
 * MSS, SACK-permitted, timestamps and window scale with varied values, as Linux sends them, or
 * none with --no-options), both checksums valid. They leave through an AF_PACKET socket on --iface
 * with the qdisc bypassed: a TPACKET_V2 TX ring (default), or sendmmsg() batches (--mode mmsg).
 * --pcap FILE writes the frames to a pcap file instead (no interface, no privileges: the tests
 * check the packet building with it). --rate caps packets per second (0 = as fast as possible).
 *
 * At the end it prints one JSON line: frames sent, send errors, seconds, packets per second.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define ETH_HLEN_ 14u
#define IP_HLEN 20u
#define TCP_HLEN 20u
#define TCP_OPTLEN 20u
#define FRAME_MAX (ETH_HLEN_ + IP_HLEN + TCP_HLEN + TCP_OPTLEN)

#define RING_FRAME_SIZE 256u  /* >= TPACKET2_HDRLEN + FRAME_MAX, TPACKET_ALIGNMENT-aligned */
#define RING_BLOCK_SIZE 4096u
#define RING_FRAMES 8192u
#define BATCH_MAX 1024u
#define DURATION_MAX_S 3600.0
#define PCAP_COUNT_MAX 1000000u

struct opts {
    const char *iface;
    const char *pcap;
    const char *mode;
    uint8_t dst_mac[6], src_mac[6];
    bool have_dst_mac, have_src_mac;
    uint32_t dst;           /* host order */
    uint16_t dport;
    uint32_t src_net, src_mask; /* host order */
    unsigned src_plen;
    double rate, duration;
    uint64_t count;
    unsigned batch;
    uint64_t seed;
    bool options;
};

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
    stop_signal = sig;
}

__attribute__((format(printf, 1, 2), noreturn)) static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("vgw-synflood: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(2);
}

/* -- random numbers: splitmix64, good enough and fast ----------------------------------------- */

static uint64_t rng_state;

static uint64_t rnd(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* -- addresses ------------------------------------------------------------------------------- */

/* Documentation (RFC 5737) and benchmark (RFC 2544) ranges: the only ones this tool will use. */
static const struct {
    uint32_t net;
    unsigned plen;
} SAFE_RANGES[] = {
    {0xc0000200u, 24}, /* 192.0.2.0/24 */
    {0xc6336400u, 24}, /* 198.51.100.0/24 */
    {0xcb007100u, 24}, /* 203.0.113.0/24 */
    {0xc6120000u, 15}, /* 198.18.0.0/15 */
};

static uint32_t plen_mask(unsigned plen)
{
    return plen == 0 ? 0 : 0xffffffffu << (32 - plen);
}

static bool in_safe_range(uint32_t net, unsigned plen)
{
    for (size_t i = 0; i < sizeof SAFE_RANGES / sizeof SAFE_RANGES[0]; i++) {
        uint32_t m = plen_mask(SAFE_RANGES[i].plen);
        if (plen >= SAFE_RANGES[i].plen && (net & m) == SAFE_RANGES[i].net)
            return true;
    }
    return false;
}

static uint32_t parse_ip(const char *s, const char *what)
{
    struct in_addr a;
    if (inet_pton(AF_INET, s, &a) != 1)
        die("bad IPv4 address for %s", what);
    return ntohl(a.s_addr);
}

static void parse_cidr(const char *s, struct opts *o)
{
    char buf[64];
    const char *slash = strchr(s, '/');
    if (!slash || (size_t)(slash - s) >= sizeof buf)
        die("--src-net %s: expected a.b.c.d/len", s);
    memcpy(buf, s, (size_t)(slash - s));
    buf[slash - s] = '\0';
    char *end;
    long plen = strtol(slash + 1, &end, 10);
    if (*end || plen < 8 || plen > 32)
        die("--src-net %s: prefix length 8-32", s);
    o->src_plen = (unsigned)plen;
    o->src_mask = plen_mask(o->src_plen);
    o->src_net = parse_ip(buf, "--src-net") & o->src_mask;
}

static void parse_mac(const char *s, uint8_t mac[6], const char *what)
{
    unsigned v[6];
    char tail;
    if (sscanf(s, "%x:%x:%x:%x:%x:%x%c", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &tail) != 6)
        die("bad MAC address for %s", what);
    for (int i = 0; i < 6; i++) {
        if (v[i] > 0xff)
            die("bad MAC address for %s", what);
        mac[i] = (uint8_t)v[i];
    }
}

static double parse_num(const char *s, const char *what, double lo, double hi)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || v < lo || v > hi)
        die("bad value for %s", what);
    return v;
}

/* -- packet building ------------------------------------------------------------------------- */

static uint32_t csum_add(uint32_t sum, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i + 1 < n; i += 2)
        sum += (uint32_t)p[i] << 8 | p[i + 1];
    if (n & 1)
        sum += (uint32_t)p[n - 1] << 8;
    return sum;
}

static uint16_t csum_fold(uint32_t sum)
{
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static const uint16_t MSS_VALUES[] = {536, 1220, 1360, 1400, 1440, 1460, 1460, 1460};

/* The part of every frame that never changes. */
static size_t frame_template(const struct opts *o, uint8_t *f)
{
    memset(f, 0, FRAME_MAX);
    memcpy(f, o->dst_mac, 6);
    memcpy(f + 6, o->src_mac, 6);
    put16(f + 12, ETHERTYPE_IP);
    uint8_t *ip = f + ETH_HLEN_;
    size_t tcplen = TCP_HLEN + (o->options ? TCP_OPTLEN : 0);
    ip[0] = 0x45;
    put16(ip + 2, (uint16_t)(IP_HLEN + tcplen));
    put16(ip + 6, 0x4000); /* DF, as Linux sends SYNs */
    ip[8] = 64;
    ip[9] = IPPROTO_TCP;
    put32(ip + 16, o->dst);
    uint8_t *tcp = ip + IP_HLEN;
    put16(tcp + 2, o->dport);
    tcp[12] = (uint8_t)((tcplen / 4) << 4);
    tcp[13] = 0x02; /* SYN */
    put16(tcp + 14, 64240);
    if (o->options) {
        uint8_t *opt = tcp + TCP_HLEN;
        opt[0] = 2, opt[1] = 4;   /* MSS */
        opt[4] = 4, opt[5] = 2;   /* SACK permitted */
        opt[6] = 8, opt[7] = 10;  /* timestamps (TSecr 0) */
        opt[16] = 1;              /* NOP */
        opt[17] = 3, opt[18] = 3; /* window scale */
    }
    return ETH_HLEN_ + IP_HLEN + tcplen;
}

/* Fill the per-frame fields of a copy of the template, and both checksums. */
static void frame_randomize(const struct opts *o, uint8_t *f, size_t len)
{
    uint8_t *ip = f + ETH_HLEN_, *tcp = ip + IP_HLEN;
    uint64_t r1 = rnd(), r2 = rnd();
    uint32_t host = (uint32_t)r1 & ~o->src_mask;
    if (o->src_plen <= 30) { /* neither the network nor the broadcast address of the range */
        uint32_t span = ~o->src_mask - 1;
        host = 1 + (uint32_t)(((uint64_t)(uint32_t)r1 * span) >> 32);
    }
    uint32_t src = o->src_net | host;
    uint16_t sport = (uint16_t)(1024 + (((r1 >> 32) & 0xffff) * (65536 - 1024) >> 16));
    put16(ip + 4, (uint16_t)(r1 >> 48));  /* IP id */
    put32(ip + 12, src);
    ip[10] = ip[11] = 0;
    put16(ip + 10, csum_fold(csum_add(0, ip, IP_HLEN)));
    put16(tcp, sport);
    put32(tcp + 4, (uint32_t)r2);         /* ISN */
    size_t tcplen = len - ETH_HLEN_ - IP_HLEN;
    if (tcplen > TCP_HLEN) {
        uint8_t *opt = tcp + TCP_HLEN;
        put16(opt + 2, MSS_VALUES[(r2 >> 32) & 7]);
        put32(opt + 8, (uint32_t)(r2 >> 35)); /* TSval */
        opt[19] = (uint8_t)((r2 >> 60) % 10); /* window scale 0-9 */
    }
    tcp[16] = tcp[17] = 0;
    uint8_t pseudo[12];
    memcpy(pseudo, ip + 12, 8);
    pseudo[8] = 0;
    pseudo[9] = IPPROTO_TCP;
    put16(pseudo + 10, (uint16_t)tcplen);
    put16(tcp + 16, csum_fold(csum_add(csum_add(0, pseudo, sizeof pseudo), tcp, tcplen)));
}

/* -- pacing and bounds ----------------------------------------------------------------------- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct run {
    double start, end_at;
    uint64_t sent, errors;
    const char *stopped_by;
};

/* How many frames to send next (0: stop). Sleeps first when a --rate cap says it is too early. */
static unsigned next_batch(const struct opts *o, struct run *r)
{
    if (stop_signal) {
        r->stopped_by = "signal";
        return 0;
    }
    if (o->count && r->sent + r->errors >= o->count) {
        r->stopped_by = "count";
        return 0;
    }
    double t = now_s();
    if (t >= r->end_at) {
        r->stopped_by = "duration";
        return 0;
    }
    uint64_t n = o->batch;
    if (o->rate > 0) {
        /* batches of about a millisecond's worth, each sent when the schedule reaches it */
        uint64_t per_ms = (uint64_t)(o->rate / 1000.0);
        n = per_ms < 1 ? 1 : per_ms < n ? per_ms : n;
        double due = r->start + (double)(r->sent + r->errors) / o->rate;
        if (due > r->end_at)
            due = r->end_at;
        if (due > t) {
            double d = due - t;
            struct timespec ts = {(time_t)d, (long)((d - (double)(time_t)d) * 1e9)};
            nanosleep(&ts, NULL);
        }
    }
    if (o->count && n > o->count - r->sent - r->errors)
        n = o->count - r->sent - r->errors;
    return (unsigned)n;
}

/* -- output: pcap file ----------------------------------------------------------------------- */

static void run_pcap(const struct opts *o, struct run *r)
{
    FILE *f = fopen(o->pcap, "wb");
    if (!f)
        die("cannot write %s", o->pcap);
    /* classic pcap, host byte order: magic, version 2.4, zone, sigfigs, snaplen, Ethernet */
    const uint32_t magic = 0xa1b2c3d4u, rest[4] = {0, 0, 65535, 1};
    const uint16_t version[2] = {2, 4};
    fwrite(&magic, sizeof magic, 1, f);
    fwrite(version, sizeof version, 1, f);
    fwrite(rest, sizeof rest, 1, f);
    uint8_t tmpl[FRAME_MAX], frame[FRAME_MAX];
    size_t len = frame_template(o, tmpl);
    unsigned n;
    while ((n = next_batch(o, r)) > 0) {
        for (unsigned i = 0; i < n; i++) {
            memcpy(frame, tmpl, len);
            frame_randomize(o, frame, len);
            uint32_t rec[4] = {(uint32_t)(r->sent / 1000000u), (uint32_t)(r->sent % 1000000u), (uint32_t)len,
                               (uint32_t)len};
            fwrite(rec, 1, sizeof rec, f);
            fwrite(frame, 1, len, f);
            r->sent++;
        }
    }
    if (fclose(f) != 0)
        die("cannot write %s", o->pcap);
}

/* -- output: AF_PACKET ----------------------------------------------------------------------- */

/* The kernel's initial network namespace has a fixed inode number (PROC_NET_INIT_INO, since 3.8);
 * where PID 1 is visible (a container's init), its namespace counts as the initial one too. */
#define NET_INIT_INO 0xeffffff9u

static void refuse_initial_netns(void)
{
    struct stat self, init;
    if (stat("/proc/self/ns/net", &self) != 0)
        die("cannot tell which network namespace this is (/proc/self/ns/net): refusing to send");
    bool initial = self.st_ino == NET_INIT_INO;
    if (stat("/proc/1/ns/net", &init) == 0 && self.st_ino == init.st_ino && self.st_dev == init.st_dev)
        initial = true;
    if (initial)
        die("refusing to send from the initial network namespace: run it with `ip netns exec <lab ns>`");
}

static int open_packet_socket(const struct opts *o, struct sockaddr_ll *to)
{
    int fd = socket(AF_PACKET, SOCK_RAW, 0); /* protocol 0: this socket receives nothing */
    if (fd < 0)
        die("socket(AF_PACKET): %s", strerror(errno));
    unsigned ifindex = if_nametoindex(o->iface);
    if (!ifindex)
        die("no interface %s in this namespace", o->iface);
    memset(to, 0, sizeof *to);
    to->sll_family = AF_PACKET;
    to->sll_protocol = htons(ETH_P_IP);
    to->sll_ifindex = (int)ifindex;
    to->sll_halen = 6;
    memcpy(to->sll_addr, o->dst_mac, 6);
    int one = 1;
    if (setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof one) != 0)
        fprintf(stderr, "vgw-synflood: PACKET_QDISC_BYPASS: %s (going through the qdisc)\n", strerror(errno));
    return fd;
}

static void iface_mac(const char *iface, uint8_t mac[6])
{
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", iface);
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0 || ioctl(fd, SIOCGIFHWADDR, &ifr) != 0)
        die("cannot read the MAC address of %s", iface);
    memcpy(mac, ifr.ifr_hwaddr.sa_data, 6);
    close(fd);
}

static void run_ring(const struct opts *o, struct run *r, int fd, struct sockaddr_ll *to)
{
    int v = TPACKET_V2;
    if (setsockopt(fd, SOL_PACKET, PACKET_VERSION, &v, sizeof v) != 0)
        die("PACKET_VERSION: %s", strerror(errno));
    struct tpacket_req req = {
        .tp_block_size = RING_BLOCK_SIZE,
        .tp_block_nr = RING_FRAMES / (RING_BLOCK_SIZE / RING_FRAME_SIZE),
        .tp_frame_size = RING_FRAME_SIZE,
        .tp_frame_nr = RING_FRAMES,
    };
    if (setsockopt(fd, SOL_PACKET, PACKET_TX_RING, &req, sizeof req) != 0)
        die("PACKET_TX_RING: %s", strerror(errno));
    size_t ring_len = (size_t)req.tp_block_size * req.tp_block_nr;
    uint8_t *ring = mmap(NULL, ring_len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (ring == MAP_FAILED)
        die("mmap(TX ring): %s", strerror(errno));
    struct sockaddr_ll bind_to = {.sll_family = AF_PACKET, .sll_protocol = 0, .sll_ifindex = to->sll_ifindex};
    if (bind(fd, (struct sockaddr *)&bind_to, sizeof bind_to) != 0)
        die("bind: %s", strerror(errno));
    const size_t data_off = TPACKET2_HDRLEN - sizeof(struct sockaddr_ll);
    uint8_t tmpl[FRAME_MAX];
    size_t len = frame_template(o, tmpl);
    unsigned cur = 0, n;
    while ((n = next_batch(o, r)) > 0) {
        unsigned filled = 0;
        for (; filled < n; filled++) {
            struct tpacket2_hdr *h = (struct tpacket2_hdr *)(ring + (size_t)cur * RING_FRAME_SIZE);
            uint32_t st = __atomic_load_n(&h->tp_status, __ATOMIC_ACQUIRE);
            if (st == TP_STATUS_WRONG_FORMAT) { /* refused by the kernel last time round */
                r->errors++;
                r->sent--;
            } else if (st != TP_STATUS_AVAILABLE) {
                break; /* still owned by the kernel: send what we have */
            }
            uint8_t *frame = (uint8_t *)h + data_off;
            memcpy(frame, tmpl, len);
            frame_randomize(o, frame, len);
            h->tp_len = (uint32_t)len;
            __atomic_store_n(&h->tp_status, TP_STATUS_SEND_REQUEST, __ATOMIC_RELEASE);
            cur = (cur + 1) % RING_FRAMES;
        }
        /* blocking: returns when the kernel has taken every requested frame */
        if (sendto(fd, NULL, 0, 0, (struct sockaddr *)to, sizeof *to) < 0 && errno != EINTR) {
            if (errno == ENOBUFS || errno == EAGAIN) {
                r->sent += filled; /* the ring holds them; they go with the next call */
                continue;
            }
            die("sendto(TX ring): %s", strerror(errno));
        }
        r->sent += filled;
    }
    /* let the last frames leave, then count the ones the kernel refused */
    for (int tries = 0; tries < 100; tries++) {
        if (sendto(fd, NULL, 0, MSG_DONTWAIT, (struct sockaddr *)to, sizeof *to) >= 0 || errno != ENOBUFS)
            break;
    }
    for (unsigned i = 0; i < RING_FRAMES; i++) {
        struct tpacket2_hdr *h = (struct tpacket2_hdr *)(ring + (size_t)i * RING_FRAME_SIZE);
        uint32_t st = __atomic_load_n(&h->tp_status, __ATOMIC_ACQUIRE);
        if (st == TP_STATUS_WRONG_FORMAT || st == TP_STATUS_SEND_REQUEST) {
            r->errors++;
            r->sent--;
        }
    }
    munmap(ring, ring_len);
}

static void run_mmsg(const struct opts *o, struct run *r, int fd, struct sockaddr_ll *to)
{
    static uint8_t frames[BATCH_MAX][FRAME_MAX];
    static struct iovec iov[BATCH_MAX];
    static struct mmsghdr msgs[BATCH_MAX];
    uint8_t tmpl[FRAME_MAX];
    size_t len = frame_template(o, tmpl);
    for (unsigned i = 0; i < BATCH_MAX; i++) {
        iov[i] = (struct iovec){.iov_base = frames[i], .iov_len = len};
        msgs[i].msg_hdr = (struct msghdr){.msg_name = to, .msg_namelen = sizeof *to, .msg_iov = &iov[i],
                                          .msg_iovlen = 1};
    }
    unsigned n;
    while ((n = next_batch(o, r)) > 0) {
        for (unsigned i = 0; i < n; i++) {
            memcpy(frames[i], tmpl, len);
            frame_randomize(o, frames[i], len);
        }
        unsigned done = 0;
        while (done < n) {
            int k = sendmmsg(fd, msgs + done, n - done, 0);
            if (k < 0) {
                if (errno == EINTR && stop_signal)
                    break;
                if (errno == EINTR)
                    continue;
                r->errors++; /* e.g. ENOBUFS: this frame is lost, go on with the next */
                done++;
                continue;
            }
            done += (unsigned)k;
            r->sent += (unsigned)k;
        }
    }
}

/* -- main ------------------------------------------------------------------------------------ */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: vgw-synflood --dst IP --dport PORT --src-net CIDR --dst-mac MAC\n"
            "                    (--iface IF [--src-mac MAC] [--mode ring|mmsg] | --pcap FILE --count N)\n"
            "                    [--rate PPS] [--duration S] [--count N] [--batch N] [--seed N] [--no-options]\n"
            "Spoofed TCP SYNs for the VGW lab (docs/lab.md). Addresses must be in 192.0.2.0/24,\n"
            "198.51.100.0/24, 203.0.113.0/24 or 198.18.0.0/15; it sends only from a non-initial network\n"
            "namespace and stops after --duration (default 10 s, max 3600) or --count frames.\n");
}

static void parse_args(int argc, char **argv, struct opts *o)
{
    static const struct option long_opts[] = {
        {"iface", required_argument, NULL, 'i'},   {"dst-mac", required_argument, NULL, 'M'},
        {"src-mac", required_argument, NULL, 'm'}, {"dst", required_argument, NULL, 'd'},
        {"dport", required_argument, NULL, 'p'},   {"src-net", required_argument, NULL, 's'},
        {"rate", required_argument, NULL, 'r'},    {"duration", required_argument, NULL, 't'},
        {"count", required_argument, NULL, 'c'},   {"batch", required_argument, NULL, 'b'},
        {"seed", required_argument, NULL, 'S'},    {"mode", required_argument, NULL, 'o'},
        {"pcap", required_argument, NULL, 'w'},    {"no-options", no_argument, NULL, 'n'},
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0},
    };
    *o = (struct opts){.mode = "ring", .duration = 10.0, .batch = 256, .options = true};
    o->seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    bool have_dst = false, have_dport = false, have_src = false;
    int c;
    while ((c = getopt_long(argc, argv, "i:", long_opts, NULL)) != -1) {
        switch (c) {
        case 'i': o->iface = optarg; break;
        case 'M': parse_mac(optarg, o->dst_mac, "--dst-mac"); o->have_dst_mac = true; break;
        case 'm': parse_mac(optarg, o->src_mac, "--src-mac"); o->have_src_mac = true; break;
        case 'd': o->dst = parse_ip(optarg, "--dst"); have_dst = true; break;
        case 'p': o->dport = (uint16_t)parse_num(optarg, "--dport", 1, 65535); have_dport = true; break;
        case 's': parse_cidr(optarg, o); have_src = true; break;
        case 'r': o->rate = parse_num(optarg, "--rate", 0, 1e9); break;
        case 't': o->duration = parse_num(optarg, "--duration", 0.001, DURATION_MAX_S); break;
        case 'c': o->count = (uint64_t)parse_num(optarg, "--count", 1, 1e12); break;
        case 'b': o->batch = (unsigned)parse_num(optarg, "--batch", 1, BATCH_MAX); break;
        case 'S': o->seed = (uint64_t)parse_num(optarg, "--seed", 0, 1.8e19); break;
        case 'o': o->mode = optarg; break;
        case 'w': o->pcap = optarg; break;
        case 'n': o->options = false; break;
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); exit(2);
        }
    }
    if (optind != argc || !have_dst || !have_dport || !have_src || !o->have_dst_mac) {
        usage(stderr);
        exit(2);
    }
    if (!in_safe_range(o->src_net, o->src_plen))
        die("--src-net must lie inside 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24 or 198.18.0.0/15");
    if (!in_safe_range(o->dst, 32))
        die("--dst must lie inside 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24 or 198.18.0.0/15");
    if ((o->dst & o->src_mask) == o->src_net)
        die("--dst lies inside --src-net");
    if (strcmp(o->mode, "ring") != 0 && strcmp(o->mode, "mmsg") != 0)
        die("--mode %s: ring or mmsg", o->mode);
    if (o->pcap) {
        if (!o->count || o->count > PCAP_COUNT_MAX)
            die("--pcap needs --count (at most %u)", PCAP_COUNT_MAX);
        if (!o->have_src_mac)
            parse_mac("02:00:00:00:00:01", o->src_mac, "--src-mac");
    } else if (!o->iface) {
        die("--iface or --pcap is required");
    }
}

int main(int argc, char **argv)
{
    struct opts o;
    parse_args(argc, argv, &o);
    rng_state = o.seed;
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    struct run r = {.stopped_by = "duration"};
    const char *mode = o.pcap ? "pcap" : o.mode;
    if (o.pcap) {
        r.start = now_s();
        r.end_at = r.start + o.duration;
        run_pcap(&o, &r);
    } else {
        refuse_initial_netns();
        struct sockaddr_ll to;
        int fd = open_packet_socket(&o, &to);
        if (!o.have_src_mac)
            iface_mac(o.iface, o.src_mac);
        r.start = now_s();
        r.end_at = r.start + o.duration;
        if (strcmp(o.mode, "ring") == 0)
            run_ring(&o, &r, fd, &to);
        else
            run_mmsg(&o, &r, fd, &to);
        close(fd);
    }
    double secs = now_s() - r.start;
    char src[INET_ADDRSTRLEN], dst[INET_ADDRSTRLEN];
    struct in_addr a = {.s_addr = htonl(o.src_net)}, b = {.s_addr = htonl(o.dst)};
    inet_ntop(AF_INET, &a, src, sizeof src);
    inet_ntop(AF_INET, &b, dst, sizeof dst);
    printf("{\"tool\": \"vgw-synflood\", \"mode\": \"%s\", \"iface\": \"%s\", \"src_net\": \"%s/%u\", "
           "\"dst\": \"%s:%u\", \"rate_cap_pps\": %.0f, \"sent\": %" PRIu64 ", \"errors\": %" PRIu64
           ", \"duration_s\": %.3f, \"pps\": %.0f, \"stopped_by\": \"%s\"}\n",
           mode, o.iface ? o.iface : "", src, o.src_plen, dst, o.dport, o.rate, r.sent, r.errors, secs,
           secs > 0 ? (double)r.sent / secs : 0.0, r.stopped_by);
    return 0;
}
