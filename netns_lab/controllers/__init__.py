"""Pure cluster logic (IPAM, scheduling, naming): model in, plan out; no kernel access."""
