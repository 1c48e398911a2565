"""Prometheus configuration for the local stack: scrape targets and Flywheel's rules."""
