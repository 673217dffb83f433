"""Vendor sources: each turns one vendor account into normalized snapshots."""
