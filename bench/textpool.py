"""Varied benign Japanese and English text for the benchmark generator (bench/gen.py).

A precision check is only as fair as the text it replays: a handful of fixed sentences
repeated over a gigabyte tests a handful of sentences. This module builds sentences from
templates and a vocabulary of a few hundred words per language (business mail, news,
manuals, software documentation, chat), with numbers in ASCII, full-width and kanji digits,
full-width and half-width katakana, and deliberate *near misses* of the shipped example
markers (注意事項, 取り扱いに注意, 保護すべき資産, 社外の方, JDA-2024-117, "confidential"
without "JDA "), so a matcher that fires on a neighbour of a marker is caught.

Everything is drawn from the caller's ``random.Random``: the same seed gives the same text on
every machine (no text is read from the host, whose documentation files differ).

Benign means benign: every sentence is checked, after NFKC and case folding, against the
shipped example markers (signatures/markers.yaml) and rejected if it contains one; every
sentence ends with a sentence mark, so no marker can form across a sentence boundary.
"""

from __future__ import annotations

import random
import re
import unicodedata

# The shipped example markers (signatures/markers.yaml), NFKC + casefolded. Text containing
# one of them is not benign; the generator redraws such a sentence.
_FORBIDDEN = ("保護すべき情報", "「注意」", "取扱注意", "社外秘", "jda confidential", "leakmon-canary")
_FORBIDDEN_RE = re.compile(r"jda-[0-9]{4}-[0-9]{5}")

# ------------------------------------------------------------------ Japanese vocabulary

JA_PEOPLE = ["田中", "鈴木", "佐藤", "高橋", "渡辺", "伊藤", "山本", "中村", "小林", "加藤", "吉田", "山田",
             "佐々木", "山口", "松本", "井上", "木村", "林", "斎藤", "清水", "森", "池田", "橋本", "石川"]
JA_TITLES = ["部長", "課長", "係長", "主任", "様", "さん", "先生", "担当", "室長", "社長"]
JA_ORGS = ["営業部", "総務部", "経理部", "人事部", "技術部", "品質保証部", "購買部", "設計課", "製造課",
           "情報システム部", "広報室", "法務部", "研究開発センター", "物流センター", "第二工場", "大阪支店",
           "名古屋営業所", "福岡事務所", "札幌出張所", "本社"]
JA_DOCS = ["会議資料", "議事録", "見積書", "請求書", "納品書", "発注書", "報告書", "企画書", "提案書",
           "仕様書", "設計書", "試験成績書", "取扱説明書", "契約書", "日程表", "作業手順書", "点検記録",
           "出張報告", "月次報告", "年間計画", "予算案", "アンケート結果", "社内報", "研修資料"]
JA_EVENTS = ["打ち合わせ", "定例会議", "説明会", "研修", "懇親会", "展示会", "工場見学", "監査", "棚卸し",
             "品質会議", "安全大会", "新年会", "歓迎会", "面談", "製品発表会", "保守作業", "避難訓練", "健康診断"]
JA_PLACES = ["東京駅", "新大阪駅", "本社三階", "第一会議室", "大会議室", "応接室", "横浜", "名古屋", "京都",
             "札幌", "福岡", "仙台", "広島", "神戸", "川崎工場", "つくば研究所", "オンライン", "品川のホテル"]
JA_KATAKANA = ["システム", "サーバー", "ネットワーク", "データベース", "クラウド", "ソフトウェア", "アップデート",
               "パスワード", "メールアドレス", "スケジュール", "プロジェクト", "ミーティング", "プレゼンテーション",
               "マニュアル", "セミナー", "キャンペーン", "サンプル", "テスト", "レポート", "デザイン",
               "カタログ", "パンフレット", "プリンター", "ノートパソコン", "タブレット", "アプリ", "ログイン",
               "バックアップ", "セキュリティ", "メンテナンス", "コスト", "リスク", "スタッフ", "ユーザー"]
JA_HANKAKU = ["ｼｽﾃﾑ", "ｻｰﾊﾞｰ", "ﾃｽﾄ", "ﾃﾞｰﾀ", "ﾒｰﾙ", "ﾌｧｲﾙ", "ﾊﾟｽﾜｰﾄﾞ", "ｱｯﾌﾟﾃﾞｰﾄ"]
JA_PRODUCTS = ["新型ポンプ", "制御基板", "小型モーター", "冷却装置", "計測器", "センサー部品", "電源ユニット",
               "検査装置", "部品キット", "梱包資材", "試作品", "交換部品", "測定治具", "ケーブル一式"]
JA_TOPICS = ["品質改善", "コスト削減", "働き方改革", "環境対策", "省エネルギー", "業務効率化", "安全管理",
             "顧客満足度", "在庫管理", "人材育成", "情報共有", "新規事業", "海外展開", "価格改定", "防災対策",
             "個人情報の取り扱い", "情報セキュリティ", "ペーパーレス化", "テレワーク", "設備投資"]
JA_WEATHER = ["晴れ", "曇り", "雨", "晴れのち曇り", "曇り時々雨", "雪", "雨のち晴れ"]
JA_WEEKDAYS = ["月曜日", "火曜日", "水曜日", "木曜日", "金曜日", "土曜日", "日曜日"]
JA_TIMES = ["本日", "明日", "明後日", "昨日", "先週", "来週", "今月末", "来月", "今年度中", "午前中", "夕方",
            "週明け", "年内", "上期", "下期"]
JA_REQUESTS = ["ご確認のほどよろしくお願いいたします", "ご検討いただけますと幸いです", "ご返信をお待ちしております",
               "お手数ですがご対応をお願いします", "ご不明な点があればお知らせください", "ご出席をお願いいたします",
               "よろしくお願い申し上げます", "取り急ぎご連絡まで"]
JA_TRENDS = ["増加", "減少", "改善", "悪化", "横ばい"]
# Neighbours of the shipped markers: a matcher that fires on these is imprecise.
JA_NEAR_MISS = [
    "注意事項をよく読んでから作業を開始してください。",
    "取り扱いに注意が必要な薬品は専用の棚に保管します。",
    "取扱説明書は製品の箱に同梱されています。",
    "路面の凍結にご注意ください。",
    "個人情報の保護に関する方針を改定しました。",
    "保護すべき資産の一覧を更新しました。",
    "社外の方との打ち合わせでは名刺をご用意ください。",
    "社外向けの資料は広報室の確認を受けてから公開します。",
    "秘密保持契約を取引先と締結しました。",
    "情報の取扱いについては規程を参照してください。",
    "注意報が解除されるまで屋外の作業は中止します。",
    "保護者説明会は体育館で行います。",
    "社外取締役による講演会を開催します。",
    "注意喚起のメールが情報システム部から届きました。",
    "【注意】迷惑メールの添付ファイルは開かないでください。",
    "『注意一秒、けが一生』という標語を掲げました。",
]
JA_TEMPLATES = [
    "{time}の{event}は{place}で{hour}から行います。",
    "{org}の{person}より{doc}を受領しました。",
    "{doc}を添付いたしますので、{request}。",
    "{product}の{doc}について、{person}から改めてご連絡いたします。",
    "{time}の{event}は{weekday}の{hour}に変更となりました。",
    "{topic}に関する{doc}を{org}で取りまとめています。",
    "{kata}の{kata2}に伴い、{weekday}の夜間は利用できません。",
    "{hankaku}の更新は{time}に完了する予定です。",
    "天気予報によると{time}は{weather}、気温は{temp}度前後とのことです。",
    "{product}の出荷数は前年比{pct}%の{trend}となりました。",
    "{place}から徒歩{minutes}分の会場で{event}を開催します。",
    "{person}が{org}に着任しました。{request}。",
    "{event}の参加者は{count}名で、{topic}について活発な意見交換がありました。",
    "{kata}に関する問い合わせが{count}件ありました。",
    "{doc}の提出期限は{month}月{day}日です。",
    "{org}では{topic}の一環として{kata}を導入しました。",
    "{product}を{count}台、{place}まで配送してください。",
    "{person}の{doc}によると、{topic}の効果は{pct}%程度と見込まれます。",
    "{time}、{place}の{kata}が一時的に停止しましたが、現在は復旧しています。",
    "見積番号{code}の{product}について、単価を{price}円でご提示いたします。",
    "{event}の資料は{kata}に保存してありますので、{request}。",
    "{weekday}は{event}のため、{org}は不在となります。",
    "第{count}回{event}の議題は{topic}と{topic2}です。",
    "{person}から{kata}の{doc}が届いたので、内容を確認しています。",
]

# ------------------------------------------------------------------ English vocabulary

EN_NAMES = ["Alice", "Bob", "Carol", "David", "Emma", "Frank", "Grace", "Henry", "Irene", "Jack", "Karen",
            "Liam", "Maria", "Noah", "Olivia", "Paul", "Quinn", "Rachel", "Sam", "Tina", "Victor", "Wendy",
            "Kenji", "Yuki", "Haruto", "Sakura"]
EN_TEAMS = ["sales", "finance", "legal", "procurement", "quality", "platform", "security", "design", "support",
            "logistics", "marketing", "research", "infrastructure", "facilities", "compliance", "payroll"]
EN_ADJ = ["quarterly", "updated", "preliminary", "revised", "annual", "internal", "shared", "final", "draft",
          "detailed", "brief", "new", "current", "previous", "regional", "technical", "monthly", "public",
          "optional", "default", "temporary", "experimental", "deprecated", "secure", "redundant", "legacy"]
EN_NOUNS = ["report", "schedule", "budget", "proposal", "invoice", "contract", "estimate", "agenda", "manual",
            "checklist", "roadmap", "release", "build", "dashboard", "database", "server", "backup", "policy",
            "survey", "forecast", "inventory", "shipment", "order", "workshop", "migration", "prototype",
            "module", "function", "parameter", "buffer", "socket", "thread", "session", "certificate",
            "configuration", "template", "spreadsheet", "presentation", "ticket", "deployment", "warehouse"]
EN_VERBS = [("review", "reviewed"), ("update", "updated"), ("approve", "approved"), ("send", "sent"),
            ("prepare", "prepared"), ("check", "checked"), ("publish", "published"), ("archive", "archived"),
            ("schedule", "scheduled"), ("cancel", "cancelled"), ("sign", "signed"), ("test", "tested"),
            ("deploy", "deployed"), ("migrate", "migrated"), ("restart", "restarted"), ("configure", "configured"),
            ("document", "documented"), ("measure", "measured"), ("discuss", "discussed"), ("finish", "finished")]
EN_TIMES = ["yesterday", "this morning", "last week", "on Monday", "on Tuesday", "by Friday", "next month",
            "before the holidays", "at the end of the quarter", "tomorrow afternoon", "earlier today",
            "after lunch", "over the weekend", "in March", "in the second half"]
EN_PLACES = ["Tokyo", "Osaka", "Yokohama", "Nagoya", "Sapporo", "the main office", "the Kawasaki plant",
             "the lab", "the data centre", "Building 3", "the customer site", "Singapore", "Berlin", "Austin"]
EN_REASONS = ["the supplier changed the delivery date", "two reviewers are on leave",
              "the previous figures were incomplete", "the customer asked for more detail",
              "the old server is being retired", "we need the numbers for the board meeting",
              "the test environment was rebuilt", "the price list changed on the first"]
EN_UNITS = ["units", "orders", "requests", "tickets", "megabytes", "hours", "pallets", "licences", "visitors"]
EN_PERIODS = ["day", "week", "month", "quarter", "year", "shift"]
EN_FUNCS = ["open", "read", "write", "close", "parse", "encode", "decode", "flush", "connect", "select",
            "compress", "hash", "sort", "join", "split", "format", "load", "dump", "fetch", "retry"]
EN_ARGS = ["a timeout in seconds", "a bytes-like object", "the file name", "an optional callback",
           "a list of paths", "the buffer size", "keyword arguments", "a mapping of headers", "a context manager"]
EN_NEAR_MISS = [
    "This message is confidential and intended only for the named recipient.",
    "Confidentiality notice: if you received this email in error, please delete it.",
    "Please quote reference JDA-2024-117 in your reply.",
    "The JDA annual conference will be held in Osaka this year.",
    "Order JDA-12345-6789 shipped on Tuesday.",
    "The JDA's confidential review process takes about two weeks.",
    "Mark the folder as confidential before you share it.",
    "Handle with care: the package contains glass.",
    "Internal use only drafts should not be forwarded to partners.",
    "The caution label on the cabinet was replaced.",
]
EN_TEMPLATES = [
    "{Name} from the {team} team {verb_past} the {adj} {noun} {time}.",
    "Please {verb} the {adj} {noun} {time}; {reason}.",
    "The {noun} handled {count} {unit} per {period}, up {pct}% on last {period}.",
    "The {adj} {noun} was {verb_past} in {place} {time}.",
    "Could you {verb} the {noun} for {Name}? {Name2} will {verb2} it {time}.",
    "Call {func}() with {arg} to {func2} the {noun}.",
    "If the {noun} is {adj}, {func}() raises an error instead of returning None.",
    "Thanks, {Name}: the {adj} {noun} works for us and we will {verb} it {time}.",
    "Version {major}.{minor}.{patch} fixes a bug in the {noun} {noun2} and improves {noun3} handling.",
    "We moved the {event} to {place} because {reason}.",
    "{Name} reported that the {noun} in {place} is {adj} again.",
    "The {team} review of the {noun} found {count} issues, {count2} of them minor.",
    "Attendance at the {event} was {count}, the highest since {year}.",
    "Temperatures in {place} will reach {temp} degrees {time}.",
    "Ticket {code} was closed after the {noun} was {verb_past}.",
    "Our {adj} {noun} costs {price} yen per {period} including support.",
]
EN_EVENTS = ["workshop", "offsite", "kickoff", "training", "audit", "webinar", "town hall", "planning session",
             "safety drill", "trade show", "code review", "design review"]

_KANJI_DIGITS = "〇一二三四五六七八九"


def _kanji_number(n: int) -> str:
    """Small numbers the way Japanese prose writes them (十五, 二十三, 百二)."""
    if n >= 100:
        h, r = divmod(n, 100)
        return ("" if h == 1 else _KANJI_DIGITS[h]) + "百" + (_kanji_number(r) if r else "")
    t, u = divmod(n, 10)
    out = ("" if t <= 1 else _KANJI_DIGITS[t]) + ("十" if t else "")
    return out + (_KANJI_DIGITS[u] if u else "") if n else "〇"


def _ja_number(rng: random.Random, n: int) -> str:
    style = rng.random()
    if style < 0.5:
        return str(n)
    if style < 0.8:  # full-width digits, common in Japanese documents
        return str(n).translate(str.maketrans("0123456789", "０１２３４５６７８９"))
    return _kanji_number(n) if 0 <= n < 1000 else str(n)


def benign(sentence: str) -> bool:
    """False if the sentence contains one of the shipped example markers in any width or case."""
    folded = unicodedata.normalize("NFKC", sentence).casefold()
    return not any(f in folded for f in _FORBIDDEN) and not _FORBIDDEN_RE.search(folded)


def ja_sentence(rng: random.Random) -> str:
    if rng.random() < 0.04:
        return rng.choice(JA_NEAR_MISS)
    c = rng.choice
    fields = {
        "time": c(JA_TIMES), "event": c(JA_EVENTS), "place": c(JA_PLACES), "org": c(JA_ORGS),
        "person": c(JA_PEOPLE) + c(JA_TITLES), "doc": c(JA_DOCS), "request": c(JA_REQUESTS),
        "product": c(JA_PRODUCTS), "weekday": c(JA_WEEKDAYS), "topic": c(JA_TOPICS), "topic2": c(JA_TOPICS),
        "kata": c(JA_KATAKANA), "kata2": c(JA_KATAKANA), "hankaku": c(JA_HANKAKU), "weather": c(JA_WEATHER),
        "trend": c(JA_TRENDS),
        "hour": f"{_ja_number(rng, rng.randint(9, 18))}時" + ("半" if rng.random() < 0.3 else ""),
        "temp": _ja_number(rng, rng.randint(-5, 35)),
        "pct": _ja_number(rng, rng.randint(1, 60)), "minutes": _ja_number(rng, rng.randint(2, 15)),
        "count": _ja_number(rng, rng.randint(2, 250)), "month": _ja_number(rng, rng.randint(1, 12)),
        "day": _ja_number(rng, rng.randint(1, 28)), "price": f"{rng.randint(3, 9000) * 10:,}",
        "code": f"Q{rng.randint(2019, 2026)}-{rng.randint(1, 9999):04d}",
    }
    return c(JA_TEMPLATES).format(**fields)


def en_sentence(rng: random.Random) -> str:
    if rng.random() < 0.04:
        return rng.choice(EN_NEAR_MISS)
    c = rng.choice
    verb, verb_past = c(EN_VERBS)
    fields = {
        "Name": c(EN_NAMES), "Name2": c(EN_NAMES), "team": c(EN_TEAMS), "adj": c(EN_ADJ), "noun": c(EN_NOUNS),
        "noun2": c(EN_NOUNS), "noun3": c(EN_NOUNS), "verb": verb, "verb_past": verb_past, "verb2": c(EN_VERBS)[0],
        "time": c(EN_TIMES), "place": c(EN_PLACES), "reason": c(EN_REASONS), "unit": c(EN_UNITS),
        "period": c(EN_PERIODS), "func": c(EN_FUNCS), "func2": c(EN_FUNCS), "arg": c(EN_ARGS), "event": c(EN_EVENTS),
        "count": rng.randint(2, 5000), "count2": rng.randint(1, 9), "pct": rng.randint(1, 80),
        "major": rng.randint(0, 9), "minor": rng.randint(0, 40), "patch": rng.randint(0, 30),
        "year": rng.randint(1998, 2025), "temp": rng.randint(-5, 38), "price": f"{rng.randint(1, 500) * 1000:,}",
        "code": f"{c(['OPS', 'INC', 'REQ', 'CHG', 'BUG'])}-{rng.randint(100, 99999)}",
    }
    return c(EN_TEMPLATES).format(**fields)


def sentence_pool(rng: random.Random, n: int, ja: bool) -> list[str]:
    """``n`` sentences (mostly distinct) of one language, every one checked benign."""
    make = ja_sentence if ja else en_sentence
    out: list[str] = []
    while len(out) < n:
        s = make(rng)
        if benign(s):
            out.append(s)
    return out
