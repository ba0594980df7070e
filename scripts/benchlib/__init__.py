"""Support code of scripts/bench: a flooding Account Manager, bus clients and baselines."""
