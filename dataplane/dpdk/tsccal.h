/* A shorter TSC calibration at start, for a shorter forwarding gap on restart.
 *
 * DPDK 22.11's EAL, on a CPU that does not state its TSC frequency (every AMD CPU and most virtual
 * machines), measures it against CLOCK_MONOTONIC_RAW across a 100 ms nanosleep() inside
 * rte_eal_init: a quarter of the time a restarted forwarder does not forward (docs/forwarder.md,
 * "Restarts"). DPDK 23.07 and later measure across 20 ms. vgw-fwd itself never reads the TSC rate
 * (its clocks are CLOCK_MONOTONIC); the EAL and the drivers use it for delays and alarms, where a
 * 20 ms measurement is as good as upstream's own. So while tsccal_begin() .. tsccal_end() brackets
 * rte_eal_init, this process's nanosleep() of exactly 100 ms sleeps 20 ms; every other sleep, and
 * every sleep outside the bracket, is what was asked for. On DPDK 24.11 nothing asks for 100 ms. */
#ifndef VGW_FWD_TSCCAL_H
#define VGW_FWD_TSCCAL_H

void tsccal_begin(void);
void tsccal_end(void);

#endif
