/* A forwarder restarted at once (a supervisor's restart after kill -9, an upgrade) can start while
 * its predecessor is still exiting: the kernel takes tens of milliseconds to tear down a DPDK
 * process (its memory, its packet rings), and until then the predecessor's locks on the EAL's
 * runtime files and on the connection-state files are held. The EAL would fail ("Cannot allocate
 * memzone list") and the connection state be refused as in use. So the forwarder leaves its pid in
 * the EAL runtime directory, and the next one waits, before it initialises the EAL, for a
 * predecessor that is exiting; a predecessor that is running is another forwarder with the same
 * file prefix, and refused with a clear message. */
#ifndef VGW_FWD_PREDECESSOR_H
#define VGW_FWD_PREDECESSOR_H

#include <stdint.h>

/* The EAL runtime directory the EAL arguments (argv up to "--") select: root's /var/run/dpdk/<prefix>
 * or, for others, $XDG_RUNTIME_DIR/dpdk/<prefix> (/tmp without it), as the EAL computes it; empty
 * when the EAL keeps no runtime files (--in-memory, --no-shconf). Returns 0, or -1 if it does not fit. */
int fwd_eal_runtime_dir(int argc, char **argv, char *out, uint32_t size);

/* Before rte_eal_init: wait up to timeout_ms for the forwarder whose pid file is in the runtime
 * directory to finish exiting. 0: none, or it has exited; -1: it is running (another forwarder with
 * this file prefix) or still exiting after the timeout, said on stderr. */
int fwd_wait_predecessor(int argc, char **argv, uint32_t timeout_ms);

/* After rte_eal_init: leave this process's pid for the next one (best effort). */
void fwd_write_pidfile(const char *runtime_dir);

#endif
