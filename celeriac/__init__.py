"""Generated from proto/celeriac/v1 by `make proto`; do not edit."""
