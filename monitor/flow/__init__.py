"""Flows and TCP reassembly: the flow table, Community ID, address sets, per-direction streams."""
