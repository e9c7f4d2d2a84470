"""Property tests (hypothesis) on the macro renderer and validator.

Properties: rendering and validation never raise, whatever the template and the values (NUL
bytes, lone surrogates, braces and macro syntax inside values); each escape keeps its
promise (URL: only unreserved characters and %XX, reversible; JSON: parses back inside a
string literal; header: no CR, LF or NUL); values never get re-expanded as macros.
"""

from __future__ import annotations

import json
import re
from types import SimpleNamespace
from urllib.parse import unquote

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import examples
from tracker import enrichment, macros

FAST = settings(max_examples=examples(200), deadline=None, database=None)

# Any code point, lone surrogates included, with the characters that matter made likely.
chars = st.characters(exclude_categories=())
tricky = st.sampled_from(
    ["\x00", "\ud800", "\udfff", "{", "}", "{{", "}}", ":", "|", "=", ",", "*", " ", "&", "%",
     "\r\n", '"', "\\", "é", "😀", "{externalid}", "{ip:md5}", "{status:a=1,*=0|x}", "var:"]
)  # fmt: skip
values = st.lists(st.one_of(st.text(chars, max_size=8), tricky), max_size=6).map("".join)
names = st.sampled_from([*macros.CATALOGUE, "var:site", "var:", "bogus", "click-id"])
modifiers = st.lists(
    st.one_of(st.sampled_from(["raw", "md5", "sha1", "sha256", "approved=1,*=0", "x=", "sha512",
                               "a=1,a=2", " ", ""]), st.text(chars, max_size=5)),
    max_size=3,
)  # fmt: skip
macro_texts = st.builds(
    lambda name, mods, default: "{" + name + "".join(":" + m for m in mods) + default + "}",
    names,
    modifiers,
    st.one_of(st.just(""), values.map(lambda v: "|" + v)),
)
templates = st.lists(st.one_of(values, macro_texts), max_size=6).map("".join)
contexts = st.dictionaries(names, values, max_size=8)
escapes = st.sampled_from(list(macros.ESCAPES))


@FAST
@given(templates, contexts, escapes)
def test_render_never_raises_and_returns_text(template, context, escape):
    assert isinstance(macros.render(template, context, escape=escape), str)


@FAST
@given(templates, st.sampled_from(list(macros.ESCAPES)), st.none() | st.sets(values))
def test_validate_never_raises(template, context, known_vars):
    errors, warnings = macros.validate(template, context=context, known_vars=known_vars)
    assert all(isinstance(m, str) and m for m in errors + warnings)


@FAST
@given(st.text(chars))
def test_validate_never_raises_on_arbitrary_text(text):
    macros.validate(text)


def encodable(value: str) -> str:
    return value.encode("utf-8", "replace").decode("utf-8")


@FAST
@given(values)
def test_url_escape_is_unreserved_characters_and_reversible(value):
    rendered = macros.render("{externalid}", {"externalid": value})
    assert re.fullmatch(r"(?:[A-Za-z0-9_.~-]|%[0-9A-F]{2})*", rendered)
    assert not set(" &=?#/+{}") & set(rendered)
    assert unquote(rendered) == encodable(value)


@FAST
@given(values)
def test_json_escape_parses_inside_a_json_string(value):
    rendered = macros.render('{"v": "{externalid}"}', {"externalid": value}, escape="json")
    assert json.loads(rendered) == {"v": encodable(value)}


@FAST
@given(values)
def test_header_escape_has_no_line_breaks_or_nul(value):
    rendered = macros.render("X {externalid}", {"externalid": value}, escape="header")
    assert not set("\r\n\x00") & set(rendered)
    rendered.encode("utf-8")  # sendable


@FAST
@given(values, escapes)
def test_values_are_never_expanded_again(value, escape):
    context = {"externalid": value, "ip": "IP"}
    once = macros.render("{externalid:raw}", context, escape=escape)
    assert once == encodable(value)


@FAST
@given(values)
def test_mapping_with_catch_all_gives_only_listed_replacements(value):
    rendered = macros.render("{status:approved=1,*=0}", {"status": value})
    assert rendered == ("1" if value == "approved" else "0")


@FAST
@given(values, st.sampled_from(macros.HASHES))
def test_hashes_are_lower_case_hex_or_empty(value, name):
    rendered = macros.render(f"{{externalid:{name}}}", {"externalid": value})
    assert (rendered == "") if not value else re.fullmatch(r"[0-9a-f]{32,64}", rendered)


@FAST
@given(st.text(st.characters(exclude_characters="{}", exclude_categories=())), contexts)
def test_text_without_braces_is_unchanged(text, context):
    assert macros.render(text, context) == text


VISITOR_TEMPLATE = "".join(
    f"&{name}={{{name}}}" for name in [*macros.VISIT_FIELDS, "asn", "is_bot", "lander.id"]
)
ips = st.sampled_from(["8.8.8.8", "2001:4860:4860::8888", "10.0.0.1", "::1", "junk", "", None])


@FAST
@given(values, values, values, ips, escapes)
def test_an_enriched_visit_renders_under_every_escape(user_agent, language, referrer, ip, escape):
    fields = enrichment.visit_fields(ip, user_agent, language, referrer)
    context = macros.build_context(SimpleNamespace(pk="c1", **fields))
    rendered = macros.render(VISITOR_TEMPLATE, context, escape=escape)
    rendered.encode("utf-8")  # sendable
    if escape == "url":
        assert re.fullmatch(r"(?:&[a-z_.]+=(?:[A-Za-z0-9_.~-]|%[0-9A-F]{2})*)+", rendered)
