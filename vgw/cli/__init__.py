"""vgwctl, the operator CLI."""
