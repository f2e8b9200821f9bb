"""Regenerate the small real documents under tests/data/docs/ with real producers.

    python3 pcaps/make_docs.py            # needs LibreOffice (soffice) and a Japanese font

The sources are flat ODF files written here (text, spreadsheet, presentation) that carry the
marker 「保護すべき情報」 in the body, a header/footer, a footnote, a comment and speaker notes.
LibreOffice converts them into the formats real users send: docx, doc, odt, pdf, xlsx, xls, ods,
pptx, odp. Containers (zip-in-zip, encrypted zip, tar.gz) are built with Python's zipfile/tarfile
and Info-ZIP ``zip -P`` so their structure is what real tools write. Tests use the committed
outputs; CI never runs this script. Packages (Debian 12), installed only for this generator:
``libreoffice-writer-nogui libreoffice-calc-nogui libreoffice-impress-nogui fonts-ipafont
fonts-noto-cjk pango1.0-tools`` and, from PyPI, ``msoffcrypto-tool``.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "docs"
MARKER = "保護すべき情報"

# Sentences the tests look for, one per place in the document.
BODY = f"本文書は{MARKER}を含む。取扱いには注意すること。"
BODY2 = "試験用の装備品仕様書、第三版。"
HEADER = f"ヘッダー：{MARKER}（社外秘）"
FOOTER = "フッター：防衛装備庁向け"
FOOTNOTE = "脚注：契約番号ＡＢＣ－１２３"
COMMENT = "コメント：この段落を確認"
CELL = f"{MARKER}：射程データ"
CELL2 = "レーダー諸元表"
SLIDE_TITLE = f"{MARKER}の概要"
SLIDE_BODY = "スライド本文：試作機の性能"
NOTES = "発表者ノート：口外禁止"

_NS = (
    'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
    'xmlns:style="urn:oasis:names:tc:opendocument:xmlns:style:1.0" '
    'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" '
    'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" '
    'xmlns:draw="urn:oasis:names:tc:opendocument:xmlns:drawing:1.0" '
    'xmlns:presentation="urn:oasis:names:tc:opendocument:xmlns:presentation:1.0" '
    'xmlns:fo="urn:oasis:names:tc:opendocument:xmlns:xsl-fo-compatible:1.0" '
    'xmlns:svg="urn:oasis:names:tc:opendocument:xmlns:svg-compatible:1.0" '
    'xmlns:dc="http://purl.org/dc/elements/1.1/" '
    'xmlns:meta="urn:oasis:names:tc:opendocument:xmlns:meta:1.0"'
)

FODT = f"""<?xml version="1.0" encoding="UTF-8"?>
<office:document {_NS} office:version="1.3" office:mimetype="application/vnd.oasis.opendocument.text">
 <office:meta><dc:title>試験文書</dc:title></office:meta>
 <office:font-face-decls>
  <style:font-face style:name="IPAMincho" svg:font-family="IPAMincho"/>
 </office:font-face-decls>
 <office:styles>
  <style:default-style style:family="paragraph">
   <style:text-properties style:font-name="IPAMincho" style:font-name-asian="IPAMincho" fo:language="ja" fo:country="JP"/>
  </style:default-style>
 </office:styles>
 <office:automatic-styles>
  <style:page-layout style:name="pm1"><style:page-layout-properties fo:page-width="21cm" fo:page-height="29.7cm"/>
   <style:header-style/><style:footer-style/></style:page-layout>
 </office:automatic-styles>
 <office:master-styles>
  <style:master-page style:name="Standard" style:page-layout-name="pm1">
   <style:header><text:p>{HEADER}</text:p></style:header>
   <style:footer><text:p>{FOOTER}</text:p></style:footer>
  </style:master-page>
 </office:master-styles>
 <office:body><office:text>
  <text:h text:outline-level="1">試験文書</text:h>
  <text:p>{BODY}<text:note text:id="ftn1" text:note-class="footnote"><text:note-citation>1</text:note-citation><text:note-body><text:p>{FOOTNOTE}</text:p></text:note-body></text:note></text:p>
  <text:p><office:annotation><dc:creator>tester</dc:creator><text:p>{COMMENT}</text:p></office:annotation>{BODY2}</text:p>
 </office:text></office:body>
</office:document>
"""

FODS = f"""<?xml version="1.0" encoding="UTF-8"?>
<office:document {_NS} office:version="1.3" office:mimetype="application/vnd.oasis.opendocument.spreadsheet">
 <office:body><office:spreadsheet>
  <table:table table:name="諸元">
   <table:table-row><table:table-cell office:value-type="string"><text:p>{CELL2}</text:p></table:table-cell>
    <table:table-cell office:value-type="float" office:value="42"><text:p>42</text:p></table:table-cell></table:table-row>
   <table:table-row><table:table-cell office:value-type="string"><text:p>{CELL}</text:p></table:table-cell>
    <table:table-cell office:value-type="string"><text:p>{CELL2}</text:p></table:table-cell></table:table-row>
  </table:table>
 </office:spreadsheet></office:body>
</office:document>
"""

FODP = f"""<?xml version="1.0" encoding="UTF-8"?>
<office:document {_NS} office:version="1.3" office:mimetype="application/vnd.oasis.opendocument.presentation">
 <office:body><office:presentation>
  <draw:page draw:name="page1">
   <draw:frame presentation:class="title" svg:x="2cm" svg:y="1cm" svg:width="20cm" svg:height="3cm">
    <draw:text-box><text:p>{SLIDE_TITLE}</text:p></draw:text-box></draw:frame>
   <draw:frame presentation:class="outline" svg:x="2cm" svg:y="5cm" svg:width="20cm" svg:height="10cm">
    <draw:text-box><text:p>{SLIDE_BODY}</text:p></draw:text-box></draw:frame>
   <presentation:notes><draw:frame presentation:class="notes" svg:x="2cm" svg:y="14cm" svg:width="17cm" svg:height="10cm">
    <draw:text-box><text:p>{NOTES}</text:p></draw:text-box></draw:frame></presentation:notes>
  </draw:page>
 </office:presentation></office:body>
</office:document>
"""

# (source, LibreOffice export filter, output name)
CONVERSIONS = [
    ("sample.fodt", "docx:MS Word 2007 XML", "sample.docx"),
    ("sample.fodt", "doc:MS Word 97", "sample.doc"),
    ("sample.fodt", "odt:writer8", "sample.odt"),
    ("sample.fodt", "pdf:writer_pdf_Export", "sample.pdf"),
    ("sample-cid.fodt", "pdf:writer_pdf_Export", "sample-cid.pdf"),
    ("sample.fods", "xlsx:Calc MS Excel 2007 XML", "sample.xlsx"),
    ("sample.fods", "xls:MS Excel 97", "sample.xls"),
    ("sample.fods", "ods:calc8", "sample.ods"),
    ("sample.fodp", "pptx:Impress MS PowerPoint 2007 XML", "sample.pptx"),
    ("sample.fodp", "odp:impress8", "sample.odp"),
    # A PDF with a document-open password (RC4/AES standard security handler, /Encrypt in the trailer).
    ("sample.fodt", 'pdf:writer_pdf_Export:{"EncryptFile":{"type":"boolean","value":"true"},'
     '"DocumentOpenPassword":{"type":"string","value":"password"}}', "encrypted.pdf"),
]


def convert(work: Path) -> None:
    (work / "sample.fodt").write_text(FODT, encoding="utf-8")
    # Noto Sans CJK is a CFF (OpenType/PostScript) font: LibreOffice embeds it as a CID-keyed
    # Type0 font with Identity-H codes and a ToUnicode CMap, the other way real producers write
    # Japanese PDFs (IPA Mincho, a TrueType font, comes out as simple fonts with ToUnicode).
    (work / "sample-cid.fodt").write_text(FODT.replace("IPAMincho", "Noto Sans CJK JP"), encoding="utf-8")
    (work / "sample.fods").write_text(FODS, encoding="utf-8")
    (work / "sample.fodp").write_text(FODP, encoding="utf-8")
    env = dict(os.environ, HOME=str(work))  # a throwaway LibreOffice profile
    for src, filt, out in CONVERSIONS:
        ext = filt.split(":", 1)[0]
        (work / "o").mkdir(exist_ok=True)
        for old in (work / "o").iterdir():
            old.unlink()
        subprocess.run(
            ["soffice", "--headless", "--norestore", "--convert-to", filt, "--outdir", str(work / "o"),
             str(work / src)],
            check=True, env=env, stdout=subprocess.DEVNULL, timeout=180,
        )
        shutil.copyfile(work / "o" / (Path(src).stem + "." + ext), OUT / out)


CAIRO_TEXT = f"{BODY}\nカイロ（cairo）で作成したPDF。\nPlain ASCII line 42."


def cairo_pdf() -> None:
    # cairo (through pango-view) embeds TrueType fonts as CID-keyed Type0 fonts (CIDFontType2,
    # Identity-H) with a ToUnicode CMap and FlateDecode streams, like browsers and many apps.
    subprocess.run(["pango-view", "--no-display", "--font", "IPAMincho 14", "--text", CAIRO_TEXT,
                    "-o", str(OUT / "sample-cairo.pdf")], check=True, timeout=60)


def encrypted_ooxml() -> None:
    # Office's "Encrypt with Password" (ECMA-376 agile encryption: an OLE2 file holding
    # EncryptionInfo and EncryptedPackage), made with msoffcrypto-tool (pip, generator only).
    try:
        from msoffcrypto.format.ooxml import OOXMLFile
    except ImportError:
        print("msoffcrypto-tool missing: keeping the committed encrypted.docx", file=sys.stderr)
        return
    with open(OUT / "sample.docx", "rb") as f, open(OUT / "encrypted.docx", "wb") as out:
        OOXMLFile(f).encrypt("password", out)


def containers(work: Path) -> None:
    docx = (OUT / "sample.docx").read_bytes()
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("report/sample.docx", docx)
        z.writestr("report/readme.txt", f"{MARKER}の説明書\n".encode())
    outer = io.BytesIO()
    with zipfile.ZipFile(outer, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("inner.zip", inner.getvalue())
        z.writestr("memo.txt", "外側のメモ\n".encode())
    (OUT / "nested.zip").write_bytes(outer.getvalue())

    # Info-ZIP's traditional PKWARE encryption (flag bit 0), as users make with `zip -e`.
    (work / "secret.txt").write_text(f"{MARKER}：暗号化済み\n", encoding="utf-8")
    enc = OUT / "encrypted.zip"
    enc.unlink(missing_ok=True)
    subprocess.run(["zip", "-q", "-j", "-P", "password", str(enc), str(work / "secret.txt")], check=True)

    tgz = io.BytesIO()
    with tarfile.open(fileobj=tgz, mode="w:gz", format=tarfile.PAX_FORMAT) as t:
        for name in ("sample.odt", "sample.pdf"):
            t.add(OUT / name, arcname=f"docs/{name}")
    (OUT / "docs.tar.gz").write_bytes(tgz.getvalue())


def main() -> int:
    if shutil.which("soffice") is None:
        print("soffice not found: apt-get install libreoffice-writer-nogui libreoffice-calc-nogui "
              "libreoffice-impress-nogui fonts-ipafont fonts-noto-cjk pango1.0-tools", file=sys.stderr)
        return 1
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        convert(Path(tmp))
        cairo_pdf()
        encrypted_ooxml()
        containers(Path(tmp))
    for p in sorted(OUT.iterdir()):
        print(f"{p.stat().st_size:8d}  {p.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
