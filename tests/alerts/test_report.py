"""Report drafts: the safe template language, Japanese/English content per protocol, masking, user templates."""

from __future__ import annotations

import pytest

from alerts.incidents import IncidentManager
from alerts.report import Renderer, TemplateError, labels, md_escape, parse_template
from alerts.report import _render as render_nodes
from monitor.config import IncidentsConfig
from monitor.stats import Stats
from tests.alerts.incident_factories import alert_event, http_post_flow, make_config


def _render(src: str, ctx: dict) -> str:
    out: list[str] = []
    render_nodes(parse_template(src), [ctx], labels("en"), out, "t")
    return "".join(out)


def test_template_language():
    src = "{% for x in items %}[${x.a}]{% endfor %}{% if flag %}Y{% else %}N{% endif %}{% if not e %}E{% endif %}${v|opt}."
    assert _render(src, {"items": [{"a": 1}, {"a": "b|c"}], "flag": False, "e": [], "v": ""}) == "[1][b\\|c]NE."
    assert _render("${n}", {"n": None}) == "unknown"
    assert _render("${x|raw}", {"x": "*b*"}) == "*b*"
    with pytest.raises(TemplateError, match="unknown name"):
        _render("${nope}", {})
    with pytest.raises(TemplateError, match="never closed"):
        parse_template("{% if a %}x")
    with pytest.raises(TemplateError, match="unknown tag"):
        parse_template("{% import os %}")


def test_untrusted_values_are_inert_markdown():
    assert md_escape("evil.example|<script>\n# h1 [x](y)") == "evil.example\\|\\<script\\> \\# h1 \\[x\\](y)"
    assert len(md_escape("a" * 1000)) == 401


def _first(tmp_path, app, where="http.request.body", lang="ja", **kw):
    cfg = make_config(tmp_path, incidents=IncidentsConfig(db="db/l.db", language=lang, **kw))
    mgr = IncidentManager(cfg, Stats(), None, None, None, None)
    flow, _ = http_post_flow()
    flow.app_proto = next(iter(app))
    mgr(alert_event(flow, 1_700_000_000.0, app=app, where=where))
    mgr.wait_idle()
    inc = mgr.db.query()[0]["id"]
    rep = mgr.db.get(inc)["first_report"]
    return rep, mgr.renderer.markdown(rep)


def test_smtp_first_report_has_mail_facts_and_masks_the_matched_subject(tmp_path):
    app = {"smtp": {"helo": "pc-sekkei-01", "mail_from": "<taro@corp.example>", "rcpt_to": ["<x@free.example>"]},
           "email": {"subject": "見積 ■■■ 送付", "from": "taro@corp.example"}}
    rep, md = _first(tmp_path, app, where="email.subject")
    assert rep["transaction"]["mail_from"] == "<taro@corp.example>"
    assert "| メール宛先（RCPT TO） | \\<x@free.example\\> |" in md
    assert "| SMTP HELO | pc-sekkei-01 |" in md
    assert "| 件名 | ［検知箇所のためマスク］ |" in md and "見積 ■■■ 送付" not in md
    assert "プロトコル | smtp（TCP）" in md


def test_ftp_first_report_names_the_file(tmp_path):
    app = {"ftp": {"command": "STOR", "command_data": "drawing-0042.dwg"}}
    rep, md = _first(tmp_path, app, where="ftp-data")
    assert rep["transaction"]["ftp_file"] == "drawing-0042.dwg"
    assert "| FTP コマンド / ファイル名 | STOR drawing-0042.dwg |" in md


def test_english_first_report(tmp_path):
    rep, md = _first(tmp_path, {"http": {"url": "/u", "hostname": "h.example", "http_method": "PUT"}}, lang="en")
    assert "immediately (直ちに) everything known so far" in md
    assert "| HTTP method / URL | PUT h.example/u |" in md
    assert "detected and recorded only" in md and "Person responsible" not in md
    assert "| 責任者 | 山田 太郎 | 情報セキュリティ室 | 03-0000-0001 | yamada@example.co.jp |" in md


def test_user_template_folder_and_labels_override(tmp_path):
    tdir = tmp_path / "tpl"
    tdir.mkdir()
    (tdir / "first_report.ja.md").write_text("社内様式 ${incident_id} ${host.ip} ${action.text}\n")
    (tdir / "labels.ja.json").write_text('{"action": {"allowed": "通知のみ"}}')
    rep, md = _first(tmp_path, {"http": {}}, templates="tpl")
    assert md == f"社内様式 {rep['incident_id']} 10.77.0.1 通知のみ\n"
    # the detail report falls back to the built-in template
    assert Renderer(str(tdir), "ja")._templates["detail_report"][0].endswith("alerts/templates/detail_report.ja.md")


def test_a_broken_user_template_fails_at_startup(tmp_path):
    tdir = tmp_path / "tpl"
    tdir.mkdir()
    (tdir / "first_report.ja.md").write_text("${host.nonexistent}")
    cfg = make_config(tmp_path, incidents=IncidentsConfig(db="db/l.db", templates="tpl"))
    with pytest.raises(TemplateError, match=r"unknown name \$\{host.nonexistent\}"):
        IncidentManager(cfg, Stats(), None, None, None, None)
