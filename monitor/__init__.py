"""leakmon: a rule-based network data-leak monitor.

Data flows one way: capture -> decode -> flow/reassembly -> app-layer -> content decoders
-> detectors -> policy -> alerts (EVE, incidents, metrics).
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
