"""Which items of a followed manifest this client wants: path rules and a size cap.

A rule is a glob on the item's path: `Movies/Kids/**` includes, `!*.iso`
excludes. `*` and `?` stay inside one path segment, `**` crosses them; a rule
without a `/` matches the last segment anywhere (`*.iso`), one with a `/` is
anchored at the start; a rule also covers what lies under a folder it names
(`Movies/Kids` = `Movies/Kids/**`). An item is wanted when it matches an include
rule (or there is none), matches no exclude rule, and its size is within the cap.

Rules come from three places, all of which hold: `--select` / MESHMEDIA_SELECT and
`--max-size` / MESHMEDIA_MAX_SIZE (every manifest), and `selection.json` in the
state dir, which `meshmedia select` edits (rules for every manifest under "*",
or for one manifest URL). The daemon reads the file again when it changes.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshmedia.bounded import ReadError, load_json
from meshmedia.errors import ConfigError
from meshmedia.private_files import write_private

log = logging.getLogger(__name__)

FILE_NAME = "selection.json"
EVERY = "*"  # the key of rules for every manifest in selection.json
MAX_RULES = 1000


def _glob_regex(glob: str) -> re.Pattern[str]:
    out, i = [], 0
    while i < len(glob):
        if glob.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif glob[i] == "*":
            out.append("[^/]*")
            i += 1
        elif glob[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(glob[i]))
            i += 1
    return re.compile("".join(out) + "(?:/.*)?", re.DOTALL)


@dataclass(frozen=True)
class Rule:
    """One include (or, with a leading `!`, exclude) glob."""

    text: str
    exclude: bool
    regex: re.Pattern[str] = field(compare=False, repr=False)

    @classmethod
    def parse(cls, text: str) -> Rule:
        """`Movies/Kids/**` or `!*.iso`; ConfigError for an empty or unusable rule."""
        exclude = text.startswith("!")
        glob = text[1:] if exclude else text
        glob = glob.strip().strip("/")
        if not glob or "\x00" in glob or len(text) > 1024:
            raise ConfigError(
                "select", f"{text!r} is not a rule; expected e.g. Movies/** or !*.iso"
            )
        if "/" not in glob:
            glob = "**/" + glob
        return cls(text, exclude, _glob_regex(glob))

    def matches(self, path: str) -> bool:
        """True when the item path falls under this rule's glob."""
        return self.regex.fullmatch(path) is not None


@dataclass(frozen=True)
class Choice:
    """The rules and size cap that hold for one manifest."""

    rules: tuple[Rule, ...] = ()
    max_size: int = 0  # bytes; 0 = no cap

    def skip_reason(self, path: str, size: int | None) -> str | None:
        """Why the item is not wanted, or None when it is."""
        if self.max_size and size is not None and size > self.max_size:
            return f"not selected: {size} bytes is over the size cap of {self.max_size}"
        for rule in self.rules:
            if rule.exclude and rule.matches(path):
                return f"not selected: excluded by {rule.text}"
        includes = [rule for rule in self.rules if not rule.exclude]
        if includes and not any(rule.matches(path) for rule in includes):
            return (
                "not selected: matches no include rule (" + " ".join(r.text for r in includes) + ")"
            )
        return None

    def describe(self) -> dict[str, Any]:
        """As JSON, for /status."""
        return {"rules": [rule.text for rule in self.rules], "max_size": self.max_size}


def parse_rules(texts: Iterable[str]) -> tuple[Rule, ...]:
    """Parse each rule (ConfigError naming the first bad one)."""
    return tuple(Rule.parse(text) for text in texts)


class Selection:
    """The rules from the settings and from `selection.json`, read again when it changes."""

    def __init__(self, state_dir: Path, rules: Iterable[str] = (), max_size: int = 0) -> None:
        """Settings' rules (every manifest) and the file in `state_dir`."""
        self.path = Path(state_dir) / FILE_NAME
        self._base = Choice(parse_rules(rules), max_size)
        self._file: dict[str, Choice] = {}
        self._stamp: tuple[int, int] | None = None
        self.reload()

    def reload(self) -> bool:
        """Read the file again when it changed since the last look; True when it did."""
        try:
            st = os.stat(self.path)
            stamp: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            self._file = read_file(self.path) if stamp else {}
        except ConfigError as exc:
            log.error("%s; keeping the rules read before", exc)
            return False
        log.info(
            "selection from %s: %s", self.path, {k: v.describe() for k, v in self._file.items()}
        )
        return True

    def choice(self, url: str) -> Choice:
        """The rules and cap that hold for the manifest at `url`."""
        parts = [self._base, self._file.get(EVERY, Choice()), self._file.get(url, Choice())]
        caps = [part.max_size for part in parts if part.max_size]
        return Choice(tuple(r for part in parts for r in part.rules), min(caps) if caps else 0)


def read_file(path: Path) -> dict[str, Choice]:
    """Parse selection.json: {"*" or URL: {"rules": [...], "max_size": bytes}}."""
    try:
        doc = load_json(path.read_bytes())
    except (OSError, ReadError) as exc:
        raise ConfigError("select", f"cannot read {path}: {exc}") from None
    if not isinstance(doc, Mapping):
        raise ConfigError("select", f"{path} is not a JSON object")
    choices = {}
    for key, entry in doc.items():
        rules = entry.get("rules", []) if isinstance(entry, Mapping) else None
        cap = entry.get("max_size", 0) if isinstance(entry, Mapping) else None
        if not isinstance(rules, list) or not all(isinstance(r, str) for r in rules):
            raise ConfigError("select", f"{path}: {key}: rules must be a list of text")
        if not isinstance(cap, int) or isinstance(cap, bool) or cap < 0 or len(rules) > MAX_RULES:
            raise ConfigError("select", f"{path}: {key}: max_size must be bytes, 0 or more")
        choices[str(key)] = Choice(parse_rules(rules), cap)
    return choices


def edit_file(
    state_dir: Path,
    url: str | None,
    *,
    add: Iterable[str] = (),
    remove: Iterable[str] = (),
    max_size: int | None = None,
    clear: bool = False,
) -> dict[str, Any]:
    """Change the rules of `url` (None: every manifest) in selection.json; the new document."""
    path = Path(state_dir) / FILE_NAME
    key = url or EVERY
    current: dict[str, dict[str, Any]] = (
        {k: v.describe() for k, v in read_file(path).items()} if path.exists() else {}
    )
    entry: dict[str, Any] = (
        {"rules": [], "max_size": 0} if clear else current.get(key, {"rules": [], "max_size": 0})
    )
    added = [rule.text for rule in parse_rules(add)]
    gone = set(remove)
    entry["rules"] = [r for r in entry["rules"] if r not in gone and r not in added] + added
    if max_size is not None:
        entry["max_size"] = max_size
    current[key] = entry
    current = {k: v for k, v in current.items() if v["rules"] or v["max_size"]}
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(FILE_NAME + ".new")
    write_private(temp, (json.dumps(current, indent=2, sort_keys=True) + "\n").encode())
    os.replace(temp, path)  # a daemon reading it never sees half a file
    return current
