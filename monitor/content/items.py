"""What content decoders yield: archive members, text buffers and notices."""

from __future__ import annotations

from dataclasses import dataclass, field

NOTICE_KINDS = ("encrypted", "bomb", "depth", "members", "malformed", "truncated")


@dataclass(frozen=True)
class Member:
    """An archive member; the pipeline turns it into a child FileObject and extracts it again.

    ``path`` names it inside its container the way :class:`Text` ``where`` does (``zip:a/b.docx``).
    ``truncated``: a cap ended the member early, so ``data`` is only its beginning.
    """

    name: str
    data: bytes
    path: str
    truncated: bool = False


@dataclass(frozen=True, init=False)
class Text:
    """Searchable text from one place of a document (``zip:word/document.xml``, ``pdf:page3``).

    ``utf8``: ``text`` encoded in UTF-8 when the decoder had those bytes anyway (UTF-8 input, or
    text assembled from UTF-8 XML), so the detectors need not encode it again; None otherwise.
    Not part of equality: it is the same text.
    """

    text: str
    where: str
    utf8: bytes | None = field(default=None, compare=False, repr=False)

    def __init__(self, text: str, where: str, utf8: bytes | None = None) -> None:
        # The generated frozen __init__ sets each field through object.__setattr__; one dict
        # update is half the cost, and every text file makes one Text. Still frozen afterwards.
        self.__dict__.update(text=text, where=where, utf8=utf8)

    def encoded(self) -> bytes:
        """``text`` in UTF-8."""
        return self.utf8 if self.utf8 is not None else self.text.encode("utf-8")


@dataclass(frozen=True)
class Notice:
    """Something the sensor should know: ``kind`` is one of :data:`NOTICE_KINDS`.

    ``detail`` never carries document content or member names (it may reach logs).
    """

    kind: str
    detail: str


Item = Member | Text | Notice
