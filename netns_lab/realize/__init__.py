"""The only code that creates or deletes kernel objects (netlink through pyroute2)."""
