/* SPDX-License-Identifier: Apache-2.0
 * /vgw/... commands on DPDK's telemetry socket (telemetry.c). */
#ifndef VGW_FWD_TELEMETRY_H
#define VGW_FWD_TELEMETRY_H

int fwd_telemetry_register(void);

#endif
