/* SPDX-License-Identifier: Apache-2.0
 * The flood-protection counters of vgw-fwd as the outside sees them (STATS, telemetry): per
 * service and per LIP, summed over workers, never going backwards.
 *
 * Per service: the core counts per service uid (vgw_worker_svc_counters), and a uid is given to
 * another service once its service is removed. Each counter slot of svcmap.c is therefore bound to
 * one (service name, uid) pair: a binding starts from the uid's counts at that moment (so it never
 * inherits another service's), and reports what the uid counted since. When the same service (same
 * slot, name and (protocol, VIP, port)) gets a new uid -- removed and added again in one delta --
 * what the old uid counted is kept and counting continues from the new uid. A rename or a new
 * service starts from zero. Every read folds the uid's current sums into the binding's totals; a
 * sum that went down (the core cleared a reused uid) counts from zero again instead of going back.
 * syn_proxy_active is a gauge: the number of workers on which the proxy answers SYNs.
 *
 * Per LIP: the core keeps per worker how often a new connection found no free port on a LIP
 * (vgw_worker_lip_exhaustion, up to VGW_LIP_TRACK_MAX LIPs each); sums over workers are folded the
 * same way, so a LIP's count never goes backwards, also when the core forgets it.
 *
 * prot_service and prot_lips run with g_ctl_lock held (the control thread's STATS, the telemetry
 * thread); prot_sync and prot_fini take it. The core's per-service read looks at the current
 * generation, so the control thread publishes (and frees) generations under the lock too. */
#ifndef VGW_FWD_PROTECT_H
#define VGW_FWD_PROTECT_H

#include <stdint.h>

#include "fwd.h"

int prot_init(prot_ctl_t *p);
void prot_fini(prot_ctl_t *p);
/* After a generation is published and svcmap_sync ran: binds each service slot to its uid. Takes
 * g_ctl_lock. */
void prot_sync(fwd_t *f);
/* One slot's counters (VGW_SCNT_MAX values, names from vgw_svc_counter_name); zeros for a slot
 * without a service. */
void prot_service(fwd_t *f, uint32_t slot, uint64_t *out);
/* The per-LIP totals, sorted by address; returns how many (at most max) are written to out. Only
 * LIPs with a count above zero. */
uint32_t prot_lips(fwd_t *f, vgw_lip_count_t *out, uint32_t max);

#endif
