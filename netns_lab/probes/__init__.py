"""Real packets through real namespaces: socket probes, ping, captures, and the checks."""
