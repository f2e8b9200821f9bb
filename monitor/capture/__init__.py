"""Capture sources: pcap/pcapng replay and live AF_PACKET capture, both yielding RawPacket."""
