"""The one JSON reader of network input (bounded.load_json): its limits, and that it is
linear: it runs no regular expression that can backtrack over the input."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from meshmedia import bounded
from meshmedia.bounded import ReadError, load_json
from meshmedia.errors import ManifestError
from meshmedia.http.messages import HttpError
from meshmedia.http.routes import parse_json_body
from meshmedia.manifest import parse_manifest

# Regular expressions that may see the input: a repeated character class matches in
# one pass (json's own WHITESPACE, bounded's lone-surrogate search).
LINEAR = {json.decoder.WHITESPACE.pattern, bounded._SURROGATE.pattern}


def patterns_run_by(call: Callable[[], Any]) -> set[str]:
    """The regular expressions (their patterns) that `call` runs from meshmedia, json or
    re (not pytest's import hook, matching file names), by a profile hook."""
    seen: set[str] = set()
    callers = (str(Path(bounded.__file__).parent), str(Path(json.__file__).parent))
    callers += (str(Path(re.__file__).parent), __file__)

    def profile(frame: Any, event: str, arg: Any) -> None:
        owner = getattr(arg, "__self__", None)
        caller = frame.f_code.co_filename
        if event == "c_call" and isinstance(owner, re.Pattern) and caller.startswith(callers):
            seen.add(owner.pattern)

    sys.setprofile(profile)
    try:
        call()
    except (ReadError, HttpError, ManifestError):
        pass
    finally:
        sys.setprofile(None)
    return seen


HOSTILE = [
    '"' + '\\"' * 20_000,  # review 12, finding 5: unterminated, escaped quotes
    '{"items": [' + '"\\"",' * 5_000 + "]}",  # terminated ones
    "[" * 50_000,
    '{"a": "' + "\\\\" * 20_000 + '"}',
]


@pytest.mark.parametrize("text", HOSTILE, ids=["quotes", "strings", "brackets", "backslashes"])
def test_no_parser_of_network_json_runs_a_backtracking_expression(text: str) -> None:
    body = text.encode()
    assert patterns_run_by(lambda: parse_json_body(body)) <= LINEAR
    assert patterns_run_by(lambda: load_json(body)) <= LINEAR
    assert patterns_run_by(lambda: parse_manifest(body)) <= LINEAR


def test_the_profile_hook_sees_an_expression_run_on_the_input() -> None:
    assert patterns_run_by(lambda: re.sub(r'"(?:[^"\\]|\\.)*"', "", HOSTILE[0])) == {
        r'"(?:[^"\\]|\\.)*"'
    }


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('"' + '\\"' * 20_000, "not JSON: Unterminated string"),
        ("[" * 50_000, "nested deeper than 32 levels"),
        ("[" * 33 + "]" * 33, "nested deeper than 32 levels"),
        ('{"n": ' + "9" * 20 + "}", "a number of 20 digits (at most 19)"),
        ('{"n": -' + "9" * 20 + "}", "a number of 20 digits (at most 19)"),
        ('{"n": 1e999}', "the number 1e999 is out of range"),
        ('{"n": -Infinity}', "-Infinity is not a JSON number"),
        ('{"n": NaN}', "NaN is not a JSON number"),
    ],
)
def test_the_curator_and_the_client_refuse_the_same_documents(text: str, reason: str) -> None:
    with pytest.raises(ReadError, match=re.escape(reason)):
        load_json(text.encode())
    with pytest.raises(HttpError, match=re.escape(reason)) as refused:
        parse_json_body(text.encode())
    assert refused.value.status == 400
    with pytest.raises(ManifestError, match=re.escape(reason)):
        parse_manifest(text.encode())


def test_what_is_within_the_limits_is_read() -> None:
    doc = {"n": -(10**18), "x": 1.5e300, "deep": [[[[{"a": '\\"' * 3}]]]], "s": "é"}
    body = json.dumps(doc).encode()
    assert load_json(body) == doc
    assert parse_json_body(body) == doc
    assert load_json(b"\xef\xbb\xbf" + body) == doc  # a BOM is allowed
    assert load_json("[" * 32 + "]" * 32) is not None
