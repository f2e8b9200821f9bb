"""Exception tree.

LeakmonError
 +-- ConfigError      bad configuration or signature file (file, key, reason); exit code 2
 +-- NeedData         a parser needs more bytes (not an error: wait)
 +-- DecodeError      input is malformed (becomes an anomaly event + counter, never a crash)
 +-- LimitExceeded    a cap (memcap, depth, ratio) was hit (becomes an event + counter)
"""


class LeakmonError(Exception):
    pass


class ConfigError(LeakmonError):
    def __init__(self, file: str, key: str, reason: str) -> None:
        self.file, self.key, self.reason = file, key, reason
        super().__init__(f"{file}: {key}: {reason}" if key else f"{file}: {reason}")


class NeedData(LeakmonError):
    pass


class DecodeError(LeakmonError):
    pass


class LimitExceeded(LeakmonError):
    def __init__(self, cap: str, detail: str = "") -> None:
        self.cap = cap
        super().__init__(f"{cap}: {detail}" if detail else cap)
