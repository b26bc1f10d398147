"""Writes tests/fixtures/tokenizer_parity.tsv: captions with the token ids open_clip 3.3.0's tokenizer
(SimpleTokenizer, clean='lower', context_length 77) gives them, for tests/test_tokenizer.c.

Captions: realistic alt-text made from templates, many languages and scripts, emoji, numbers,
punctuation, HTML entities, curly quotes, ligatures, full-width forms, mojibake of several kinds
(what ftfy repairs and what it leaves), control characters, tabs and newlines, long captions that
get truncated, captions that are empty after cleaning, and byte strings that are not UTF-8. All
generated from a fixed seed, plus hand-picked hard cases.

File format, one caption per line: CAPTION<TAB>IDS. CAPTION is the caption's bytes with \\\\, \\t,
\\n, \\r and \\xHH escapes (invisible characters -- Unicode categories C* and Z* but the space --
and the bytes of non-UTF-8 captions are escaped);
IDS is open_clip's ids up to EOT (padding left out), or -1 when the bytes are not UTF-8 (open_clip
cannot take them). Lines starting with # are comments. No caption holds a NUL byte: tokenizer_encode
takes NUL-terminated text.

    /opt/refenv/bin/python scripts/make_tokenizer_fixture.py            # the committed fixture
    /opt/refenv/bin/python scripts/make_tokenizer_fixture.py --random 100000 --seed 7 --out /tmp/big.tsv
        (a larger random set for development: TRAIN_CLIP_TOKENIZER_FIXTURE=/tmp/big.tsv build/tests/test_tokenizer)
"""
import argparse
import os
import random
import unicodedata

import ftfy.bad_codecs  # noqa: F401  (sloppy-windows-* codecs, to make mojibake)
from open_clip.tokenizer import SimpleTokenizer

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

# ---------------------------------------------------------------- realistic alt-text
ADJ = ["red", "vintage", "modern", "beautiful", "small", "large", "wooden", "handmade", "cute", "old", "abstract",
       "minimalist", "rustic", "luxury", "colorful", "black and white", "organic", "stainless steel", "cozy"]
NOUN = ["car", "dog", "cat", "house", "living room", "kitchen", "wedding dress", "sneakers", "mountain", "beach",
        "coffee mug", "t-shirt", "backpack", "watch", "bicycle", "sofa", "logo", "poster", "necklace", "cake",
        "portrait", "city skyline", "garden", "laptop", "ring", "lamp", "chair", "bouquet", "puppy", "lake"]
PLACE = ["Paris", "New York", "Tokyo", "the Alps", "Central Park", "San Francisco", "London", "Bali",
         "Yosemite National Park", "Barcelona", "Lake Como", "Cape Town", "Reykjavík", "São Paulo", "Kraków"]
BRAND = ["Nike", "Adidas", "IKEA", "Apple", "Samsung", "Levi's", "McDonald's", "Canon", "LEGO", "Dr. Martens",
         "Ben & Jerry's", "H&M", "AT&T", "Procter & Gamble", "Häagen-Dazs", "Nestlé", "L'Oréal", "Citroën"]
TEMPLATES = [
    "A photo of a {adj} {noun} in {place}",
    "{Adj} {noun} on a white background",
    "Stock Photo - {adj} {noun}, isolated",
    "{brand} {Noun} - Size {size} | eBay",
    "{brand} Men's {Noun} ({color}) - ${price}",
    "Buy {adj} {noun} online at best price in India - {brand}.com",
    "IMG_{num4}.JPG",
    "DSC{num5}",
    "{Adj} {Noun} Wall Art Print, {w}\" x {h}\" Canvas",
    "Close-up of a {adj} {noun} at sunset, {place}, {year}",
    "{place} skyline at night #travel #{tag} #photography",
    "Our {adj} {noun} 😍🔥 #{tag}",
    "@{user}: can't believe how {adj} this {noun} is!!! 😂😂",
    "{Noun} for sale: {km} km, {year}, ${price} OBO",
    "How to Make a {Adj} {Noun} in {n} Easy Steps",
    "Temperature today: {deg}°C / {degf}°F in {place}",
    "{pct}% OFF {Adj} {Noun} – Limited Time Only!",
    "Model No. {model} — {Adj} {Noun} ({w}x{h} mm)",
    "{Noun} © {year} {brand}™. All rights reserved®",
    "Mr. & Mrs. Smith's {adj} {noun} — “the best day ever”",
    "I'm sure you'll love it: they're {adj}, we've tested them and it'd be great",
    "DON'T MISS: THE {ADJ} {NOUN} EVENT OF {year}!",
    "Illustration: {adj} {noun} vector icon • flat design • EPS 10",
    "{noun}, {noun2} & {noun3} … and more",
    "<b>{Adj}</b> {noun} &amp; {noun2}",
    "{Adj} {noun} | {place} | {year}-{mm}-{dd}",
    "Screenshot 2019-{mm}-{dd} at {hh}.{mi}.{ss} AM",
    "Figure {n}. {Adj} {noun} (n = {num4}, p < 0.05)",
    "{brand} ‘{Adj}’ {Noun} «{place}» edition",
    "www.{user}.com/{tag}/{num5}.html",
    "{Adj}-{noun} {num4} ft² apartment in {place} – 3 bd / 2 ba",
]
COLORS = ["Black/White", "Navy Blue", "Rose Gold", "Grey", "Olive Green"]
TAGS = ["tbt", "nofilter", "instagood", "foodporn", "love", "ootd", "nature", "art", "cats", "wanderlust"]
USERS = ["john_doe", "JaneSmith92", "the.photo.guy", "mia_k", "travel4ever"]


def alt_text(rng):
    noun = rng.choice(NOUN)
    adj = rng.choice(ADJ)
    fields = dict(
        adj=adj, Adj=adj.title(), ADJ=adj.upper(), noun=noun, Noun=noun.title(), NOUN=noun.upper(),
        noun2=rng.choice(NOUN), noun3=rng.choice(NOUN), place=rng.choice(PLACE), brand=rng.choice(BRAND),
        size=rng.choice(["7", "8.5", "10", "XL", "M", "42 EU"]), color=rng.choice(COLORS),
        price=f"{rng.randint(1, 999)}.{rng.randint(0, 99):02d}", num4=rng.randint(1000, 9999),
        num5=f"{rng.randint(0, 99999):05d}", w=rng.choice([8, 11, 16, 24, 36]), h=rng.choice([10, 14, 20, 36, 48]),
        year=rng.randint(1950, 2024), tag=rng.choice(TAGS), user=rng.choice(USERS), km=f"{rng.randint(1, 250)},000",
        n=rng.randint(2, 12), deg=rng.randint(-20, 40), degf=rng.randint(0, 104), pct=rng.choice([10, 25, 50, 70]),
        model=f"{rng.choice('ABCXZ')}{rng.randint(10, 999)}-{rng.randint(1, 99)}", mm=f"{rng.randint(1, 12):02d}",
        dd=f"{rng.randint(1, 28):02d}", hh=rng.randint(1, 12), mi=f"{rng.randint(0, 59):02d}", ss=f"{rng.randint(0, 59):02d}")
    return rng.choice(TEMPLATES).format(**fields)


# ---------------------------------------------------------------- other languages and scripts
MULTILINGUAL = [
    "Une belle journée à la plage, près de Nice — l'été dernier",
    "Crème brûlée façon grand-mère, à déguster sans modération",
    "Größe: 42 – Straße in München, Österreich und die Schweiz",
    "El niño juega en el jardín; ¿dónde está mamá? ¡Aquí!",
    "Coração de São João, ação e emoção — Pão de Açúcar",
    "Perché è così difficile? Caffè e città all'alba",
    "Zażółć gęślą jaźń — Łódź, Gdańsk, Kraków",
    "Příliš žluťoučký kůň úpěl ďábelské ódy",
    "İSTANBUL'DA GÜZEL BİR GÜN — ığdır, şişli, çağlayan",
    "ΟΔΟΣ ΑΘΗΝΑΣ: Η ΚΑΛΗ ΖΩΗ ΣΤΗΝ ΕΛΛΑΔΑ",
    "Καλημέρα κόσμε, ένα όμορφο σπίτι στη Σαντορίνη",
    "Красивый закат над морем в Сочи, 2019 год",
    "Київ — столиця України; їжак і ґанок",
    "Москва́ — столи́ца Росси́и",
    "مرحبا بالعالم، صورة لقطة جميلة ٢٠٢٣",
    "שלום עולם — תמונה של חתול",
    "नमस्ते दुनिया, एक सुंदर बिल्ली की तस्वीर",
    "สวัสดีชาวโลก ภาพแมวน่ารัก",
    "一只可爱的猫坐在沙发上，2023年摄于北京。",
    "東京タワーの夜景（ライトアップ）とスカイツリー",
    "ｶﾀｶﾅ ﾃﾞｽ ｶﾞｷﾞｸﾞ — halfwidth katakana",
    "서울의 아름다운 야경, 남산타워",
    "Tiếng Việt có dấu: Hà Nội, Huế, Đà Nẵng, phở bò",
    "Ελληνικά με τόνους: άέήίόύώ ΐΰ",
    "Ꭰ Cherokee ᏣᎳᎩ and Georgian ქართული and Armenian Հայերեն",
    "Ethiopic ሰላም ዓለም, Tamil வணக்கம், Bengali নমস্কার",
    "Mongolian ᠮᠣᠩᠭᠣᠯ and Tibetan བོད་ཡིག",
    "Emoji: 👨‍👩‍👧‍👦 family, 👍🏽 thumbs, 🇫🇷🇯🇵 flags, 1️⃣ keycap, ❤️ heart",
    "🐶🐱🐭🐹🐰🦊🐻🐼 animals!!! 🎉🎉🎉",
    "Math: ∑ x² ≤ ∞, ∫₀¹ f(x) dx ≈ 0.5, √2 ≠ π",
    "Currency: €20, £15, ¥1000, ₹500, ₩10000, ₿0.01",
    "Numbers: ½ ¼ ¾ ⅓ ① ② Ⅻ ٣ ৩ ๓ 三 ²³",
    "Arrows → ← ↑ ↓ ⇒ and boxes ┌─┐ │ └─┘ ░▒▓█",
    "Kaomoji (╯°□°)╯︵ ┻━┻ and ¯\\_(ツ)_/¯ and ( ͡° ͜ʖ ͡°)",
    "Superscripts x² y³ H₂O CO₂ and ordinals 1ª 2º",
    "NFD input: Cafe\u0301, nai\u0308ve, Ame\u0301lie, n\u0303",
    "Stacked marks: a\u0301\u0302\u0303 e\u0327\u0301 o\u031b\u0300",
    "Dotless and dotted: I ı İ i — Turkish İzmir and DİYARBAKIR",
    "German ẞ capital sharp s and ß — STRASSE vs Straße",
    "Final sigma: ΟΔΥΣΣΕΥΣ, ΣΟΦΙΑ, Σ, ΑΣ., ΑΣ'Α",
    "Long s: it'ſ the ſame, Ångström",
    "Sigma next to case-ignorables and ordinals: ΑΣ·Β ΑΣ· ·Σ ºΣ ΣªΑ ΑΣ\u0301 Σ\u00ad ΑΣ'Β Α.Σ",
    "Ypogegrammeni: ᾳ α\u0345 a\u0345b 1\u0345 2 !\u0345? \u0345",
    "Titlecase ǅ ǈ ǋ ǲ and Kelvin sign K, Ohm Ω, Angstrom Å",
    "Zero-width: a\u200bb\u200cc\u200dd\u2060e and soft\u00adhyphen",
    "Bidi marks: \u200eleft\u200f right \u202aembedded\u202c",
    "Private use \ue000\uf8ff and specials \ufffc\ufffd",
    "Supplementary: 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝐁𝐨𝐥𝐝 𝟙𝟚𝟛 and 🄰🄱 and 𐍈",
    "Variation selectors: ☺︎ ☺️ 〰️ and tags 🏴󠁧󠁢󠁳󠁣󠁴󠁿",
]

# ---------------------------------------------------------------- what ftfy and html.unescape change
HARD = [
    # HTML entities
    "Tom &amp; Jerry", "Tom &AMP; Jerry", "caf&eacute; &EACUTE;CLAIR P&EACUTE;REZ", "BUNDESSTRA&SZLIG;E",
    "&ntilde; &Ntilde; &NTILDE; &nTILDE;", "it&#x2019;s &#8220;quoted&#8221; &#X41;&#0065;",
    "&lt;tag&gt; &quot;x&quot; &apos;y&apos;", "&amp;amp; double &amp;lt; escaped &amp;#39;",
    "&copy2024 &copy; &COPY; &reg &trade; &hellip; &mdash; &ndash; &nbsp;x",
    "&notit; &notin; &not &noti &ampx &amp", "&Jscr;ohn &HilbertSpace;ancock &checkmark; &fjlig;",
    "&#0; &#x110000; &#55296; &#128; &#150; &#x9f; &#13; &#1; &#xFDD0; &#xFFFE; &#127;",
    "&#12ab; &#xZZ; &#; &#x; &; & ; &&amp;", "&thisisnotanentityatallbutitislong; &abcdefghijklmnopqrstuvwxyzabcdefgh;",
    "a < b &amp; c &gt; d", "x &lt; y\n&amp; z < w\n&eacute;", "&#x1F600; &#128512; &#xd83d;&#xde00;",
    "&nbsp;&nbsp;", "&zwnj;&zwj;&shy;", "&NotEqualTilde; &nGt; &bne;", "&amp;nbsp;&amp;nbsp;hello",
    # curly quotes, ligatures, widths
    "‘single’ “double” ‚low‛ „low‟ ʼmodifier", "ﬁne ﬂour, eﬀort, oﬃce, baﬄe, ﬅ, ﬆ, Ĳssel ĳs, ǆ ǅ Ǆ ǉ ǌ",
    "ＬＯＵＤ　ＮＯＩＳＥＳ！ １２３ ＡＢＣ ａｂｃ", "ｶﾀｶﾅ ﾊﾟﾋﾟ ﾞ ﾟ ￣ ￤ ￥ ￦ ￨ ￮ ｡ ｢ ｣", "Ｕﾀｰﾝ and ㄱ ﾡ ￂ",
    # line breaks, tabs, control characters, terminal escapes
    "line one\nline two\r\nline three\rline four", "tab\tseparated\tvalues\t", "\u2028para\u2029graph\u0085next",
    "\x1b[36;44mI'm blue\x1b[0m da ba dee", "bell\x07 escape\x1b[ vt\x0b ff\x0c del\x7f",
    "\ufeffBOM at start", "a\u206ab\ufff9c\ufffcd", "\x1c\x1d\x1e\x1f file separators",
    # mojibake ftfy repairs
    "âœ” No problems", "sÃ³ que nÃ£o", "voilÃ le travail", "Ã la mode and Ã s vezes", "caf\u00c3\u00a9 au lait",
    "Ã\xa0 la carte", "The Mona Lisa doesnÃƒÂ¢Ã¢â€šÂ¬Ã¢â€žÂ¢t have eyebrows.", "â€œquotedâ€\x9d textâ€¦",
    "â€œ like this â€�", "Ð¿Ñ€Ð¸Ð²ÐµÑ‚ Ð¼Ð¸Ñ€", "ÐŸÑ€Ð¸Ð²ÐµÑ‚", "Ã¼ber Ã¤hnliche GrÃ¶ÃŸe",
    "&macr;\\_(ã\x83\x84)_/&macr;", "Ã¢â‚¬Å“doubleÃ¢â‚¬Â\x9d", "Ø§Ù„Ø¹Ø±Ø¨ÙŠØ©", "Ã©tÃ© Ã  Paris",
    "Broken text&hellip; it&#x2019;s ﬂubberiﬁc!", "Ã\x83Â©", "EspaÃ±ol, portuguÃªs, franÃ§ais",
    "Ã¢â‚¬â€\x9d em dash", "pÃ¡gina", "Ã\u00a0", "schÃ¶n", "â€¢ bullet â€“ dash", "Ã¯Â»Â¿BOM mojibake",
    "\x80\x81\x8d\x9f C1 controls", "price \x80 20", "ÃƒÂ©", "ã\x81\x82ã\x81\x84", "í\xa0½í¸\x80 cesu",
    "mixed: cafÃ© and café", "Le cÅ“ur", "Ã¡Ã©Ã\xadÃ³Ãº", "LÃ¶wenbrÃ¤u KellerÂ®", "MÃ¼nchen â€” Bayern",
    "âˆ’20 Â°C", "Â£100 Â€", "â€˜smartâ€™", "Ãœbung", "NiÃ±o", "Ã‡a va", "â„¢ trademark",
    # mojibake-looking text ftfy leaves alone (or should)
    "Ã is a letter", "ÂÃÎÐ", "Ł€", "×²", "√±", "ВЂ", "ГўВЂВ™s ok", "ΒΓ€Β", "ā€", "β€™",
    "à²", "Œuvre", "œ1", "Ø Ø Ù Ù", "‚Äì", "‚âà", "≈°", "╔═╗Ö", "ÆØÅ æøå", "Ñandú",
    # the split regex
    "<start_of_text> and <end_of_text>", "<START_OF_TEXT>x<END_OF_TEXT>", "a.<start_of_text>b", "<ſtart_of_text>",
    "'s 't 're 've 'm 'll 'd 'S 'T 'RE 'VE 'M 'LL 'D", "it'ſ Iſ 'ſ", "''s '''t",
    "rock'n'roll o'clock y'all ma'am", "e-mail: john.doe+tag@example.com", "https://example.com/a_b-c?d=1&e=2#f",
    "C++ C# F# .NET node.js", "3.14159 1,000,000 10^6 1e-3 0x1F", "______ ----- ..... !!!!! ?????",
    "__init__.py snake_case kebab-case CamelCase", "a1b2c3 abc123def 123abc", "a\u0301\u0302 x\u20dd",
    "9/11 24/7 50/50 1:1 16:9 4K 8K 1080p", "#hashtag @mention $TSLA %percent ^caret *star",
    # empty after cleaning, or nearly
    "", " ", "\t\n\r ", "\u3000", "&nbsp;", "\x01\x02", "\ufeff", "\x1b[0m", "&#32;", "\u00a0\u2003\u2009",
    "\u200b", ".", "a", "1", "😀", "&#0;", "&amp;", "'", "''",
]

# ---------------------------------------------------------------- random captions for stress
POOL = (
    list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") * 3 + list(" " * 40) +
    list(".,;:!?'\"-_()[]{}<>/\\|@#$%^&*+=~`") + list("àáâãäåæçèéêëìíîïðñòóôõöøùúûüýþÿ") +
    list("ÀÁÂÃÄÅÆÇÈÉÊËÌÍÎÏÐÑÒÓÔÕÖ×ØÙÚÛÜÝÞß") + list("¡¢£¤¥¦§¨©ª«¬\xad®¯°±²³´µ¶·¸¹º»¼½¾¿\xa0") +
    [chr(c) for c in range(0x80, 0xA0)] + list("€‚ƒ„…†‡ˆ‰Š‹ŒŽ‘’“”•–—˜™š›œžŸ") +
    list("абвгдеёжзийклмнопрстуфхцчшщъыьэюяАБВГДЕЁЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯЂЃЉЊЌЋЏђѓљњќћџЎўЈҐґЄєЇїІі") +
    list("αβγδεζηθικλμνξοπρσςτυφχψωΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩάέήίόύώΐΰ") +
    list("ĀāĂăĄąĆćČčĎďĐđĒēĘęĚěĞğĢģĪīĮįİıĶķĹĺĻļĽľŁłŃńŅņŇňŌōŐőŒœŔŕŘřŚśŞşŠšŢţŤťŪūŮůŰűŲųŹźŻżŽž") +
    list("的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年") + list("あいうえおかきくけこアイウエオカキクケコｱｲｳｴｵﾞﾟ") +
    list("가나다라마바사아자차카타파하") + list("ابتثجحخدذرزسشصضطظعغفقكلمنهوي") + list("אבגדהוזחטיכלמנסעפצקרשת") +
    list("ﬁﬂﬀﬃﬄĳǆ") + list("ＡＢＣａｂｃ０１２！？　") + list("😀😂❤️👍🏽🎉🔥✨🇺🇸") +
    ["\u0301", "\u0308", "\u0327", "\u200b", "\u200d", "\ufeff", "\u2028", "\t", "\n", "\r", "\x1b", "\x01", "\x7f",
     "\ufffd", "\x1a", "\u3000", "\u2019", "\u201c", "\u201d", "&", "&amp;", "&lt;", "&eacute;", "&#233;", "&#x2019;",
     "&nbsp;", "&copy", "Ã", "Â", "â€", "Ð", "Ñ", "ſ", "<start_of_text>", "'s", "'ll"]
)
MOJIBAKE_ENCODINGS = ["latin-1", "sloppy-windows-1252", "windows-1252", "sloppy-windows-1251", "sloppy-windows-1250",
                      "sloppy-windows-1253", "sloppy-windows-1254", "sloppy-windows-1257", "iso-8859-2", "mac_roman", "cp437"]


def mojibake(rng, text):
    """text's UTF-8 read as a single-byte encoding (sometimes twice, lossily, or with nbsp -> space)."""
    for _ in range(rng.choice([1, 1, 1, 2])):
        enc = rng.choice(MOJIBAKE_ENCODINGS)
        text = text.encode("utf-8").decode(enc, errors="replace")
    if rng.random() < 0.2:
        text = text.replace("\xa0", " ")
    return text


def random_caption(rng):
    kind = rng.random()
    if kind < 0.25:
        return alt_text(rng)
    if kind < 0.45:
        return mojibake(rng, rng.choice([alt_text(rng), rng.choice(MULTILINGUAL)]))
    if kind < 0.55:  # part mojibake, part clean
        return alt_text(rng) + " " + mojibake(rng, rng.choice(MULTILINGUAL)) + " " + rng.choice(MULTILINGUAL)
    if kind < 0.65:
        return unicodedata.normalize(rng.choice(["NFD", "NFKD"]), rng.choice(MULTILINGUAL + [alt_text(rng)]))
    return "".join(rng.choice(POOL) for _ in range(rng.randint(1, 60)))


def long_captions(rng):
    out = [" ".join(alt_text(rng) for _ in range(12)),
           "word " * 100, "a" * 500, "ab" * 300, "1234567890" * 20, "!?" * 200, "antidisestablishmentarianism " * 30,
           "supercalifragilisticexpialidocious" * 8, "😀" * 100, "猫" * 200, "Ã©" * 150, "&amp;" * 80,
           "the " * 75 + "end", "x " * 74, "x " * 75, "x " * 76, "x " * 77,
           " ".join(rng.choice(MULTILINGUAL) for _ in range(6)), "é" * 1000 + " end", "🇫🇷" * 60,
           "pneumonoultramicroscopicsilicovolcanoconiosis" * 20, ("a" * 70 + " ") * 20]
    return out


INVALID_UTF8 = [b"\xff", b"abc\xc3", b"\xc0\xaf slash", b"\xed\xa0\x80 surrogate", b"\xf4\x90\x80\x80 too big",
                b"caf\xe9 latin-1", b"\xe2\x82 truncated", b"ok \x80 lone continuation", b"\xf8\x88\x80\x80\x80",
                b"\xc3\xa9\xc3", b"\xef\xbf", b"A\xe0\x80\xafB overlong 3"]


def escape(raw, valid):
    out = []
    text = raw.decode("utf-8") if valid else None
    if valid:
        for ch in text:
            cp = ord(ch)
            if ch == "\\":
                out.append("\\\\")
            elif ch == "\t":
                out.append("\\t")
            elif ch == "\n":
                out.append("\\n")
            elif ch == "\r":
                out.append("\\r")
            elif ch != " " and unicodedata.category(ch)[0] in "CZ":  # invisible: controls, formats, spaces
                out.append("".join(f"\\x{b:02x}" for b in ch.encode("utf-8")))
            else:
                out.append(ch)
    else:
        for b in raw:
            ch = chr(b)
            if ch == "\\":
                out.append("\\\\")
            elif 0x20 <= b < 0x7F:
                out.append(ch)
            else:
                out.append(f"\\x{b:02x}")
    text = "".join(out)
    return "\\x23" + text[1:] if text.startswith("#") else text  # a leading # would read as a comment


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "tokenizer_parity.tsv"))
    ap.add_argument("--random", type=int, default=0, help="write this many random captions instead of the fixture")
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    if args.random:
        captions = [random_caption(rng) for _ in range(args.random)]
    else:
        captions = ([alt_text(rng) for _ in range(260)] + MULTILINGUAL + HARD + long_captions(rng) +
                    [mojibake(rng, rng.choice(MULTILINGUAL + [alt_text(rng)])) for _ in range(80)] +
                    [random_caption(rng) for _ in range(150)])
    raws = [c.encode("utf-8") if isinstance(c, str) else c for c in captions]
    if not args.random:
        raws += INVALID_UTF8
    tok = SimpleTokenizer()
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8", newline="\n") as f:
        f.write("# open_clip 3.3.0 SimpleTokenizer (clean='lower', context_length 77) on these captions;\n")
        f.write("# made by scripts/make_tokenizer_fixture.py. CAPTION<TAB>IDS up to EOT, or -1 for non-UTF-8.\n")
        for raw in raws:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                f.write(f"{escape(raw, False)}\t-1\n")
                continue
            ids = tok([text], context_length=77)[0].tolist()
            while ids and ids[-1] == 0:
                ids.pop()
            f.write(f"{escape(raw, True)}\t{' '.join(map(str, ids))}\n")
    print(f"wrote {os.path.normpath(args.out)}: {len(raws)} captions")


if __name__ == "__main__":
    main()
