"""The VGW lab: a complete VGW in network namespaces on one machine (docs/lab.md)."""
