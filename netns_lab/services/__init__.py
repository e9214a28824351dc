"""Long-running processes that live inside the lab (netexec; later DNS, ingress, LB)."""
