"""Packet decoding: link layers, VLAN/MPLS, IPv4/IPv6 (+defragmentation), tunnels, TCP/UDP."""

from monitor.decode.decoder import Decoder

__all__ = ["Decoder"]
