"""Mutation testing of the modules that hold meshmedia's promises, one module at a time.

    .venv/bin/python tools/mutation.py                  # every module, 20 min budget each
    .venv/bin/python tools/mutation.py placement format --budget 600
    .venv/bin/python tools/mutation.py --list           # the modules and their tests
    .venv/bin/python tools/mutation.py --hand tools/mutants/place.json  # hand-checked mutants

Each module is mutated by mutmut (3.x) in a scratch copy of the checkout (the
worktree is never touched) against its own small, fast, in-process test subset
(mutmut's mutants live in its `mutants/` folder; a test that runs meshmedia as a
child process would run the unmutated code, so those tests are not in a subset).
One mutant runs at a time by default (`--children`): the machine is shared.
Prints, per module, killed / survived / timeout / not run and the score over the
mutants that ran; `--survivors` lists each surviving mutant's name and diff,
which native_notes/testing.md then kills or explains as equivalent.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Target:
    """One module and the tests that must kill its mutants."""

    name: str
    path: str
    tests: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    """Environment for its tests (e.g. tests.helpers' MESHMEDIA_TEST_WAIT_SCALE)."""


TARGETS = (
    Target(
        "placement",
        "meshmedia/client/placement.py",
        (
            "tests/client/test_placement.py",
            "tests/client/test_properties.py",
            "tests/client/test_client.py",
        ),
    ),
    Target(
        "place",
        "meshmedia/client/place.py",
        (
            "tests/client/test_place.py",
            "tests/client/test_client.py",
            "tests/client/test_hostile_client.py",
        ),
    ),
    Target(
        "format",
        "meshmedia/manifest/format.py",
        (
            "tests/manifest/test_format.py",
            # not tests/manifest/test_paths.py: it counts calls by function name (a
            # profile hook), which mutmut's trampolines rename; its stats run failed
            "tests/manifest/test_manifest.py",
            "tests/client/test_properties.py",
        ),
    ),
    Target(
        "bounded",
        "meshmedia/bounded.py",
        (
            "tests/test_bounded.py",
            "tests/test_bounded_reads.py",  # the HTTP readers, against a real server
            "tests/groups/test_tls_hostile.py",  # the pinned-certificate adapter
        ),
    ),
    Target(
        "auth", "meshmedia/http/auth.py", ("tests/http/test_auth.py", "tests/http/test_server.py")
    ),
    Target(
        "routes",
        "meshmedia/http/routes.py",
        (
            "tests/http/test_routes.py",
            "tests/http/test_server.py",
            "tests/http/test_http_hostile.py",
            "tests/curator/test_hostile_curator.py::"
            "test_a_write_that_cannot_reach_the_disk_is_not_acknowledged",
            "tests/curator/test_hostile_curator.py::test_seed_answers_only_once_its_item_is_on_disk",
            # an in-process Curator off loopback: members, /join's refusals, reports
            "tests/groups/test_private_access.py",
        ),
    ),
    Target(
        "watcher",
        "meshmedia/curator/watcher.py",
        ("tests/curator/test_watcher.py",),
        # Its tests wait 20-30 s for a publish that a broken mutant never makes; a quarter
        # of that is still 5-7.5 s, over six times the longest wait of an unmutated run
        # (0.75 s of 89, load 2.2), so a mutant is "killed" by what it does, not the load.
        env=(("MESHMEDIA_TEST_WAIT_SCALE", "0.25"),),
    ),
    Target(
        "resume",
        "meshmedia/engine/resume.py",
        (
            "tests/engine/test_resume.py",
            "tests/engine/test_engine.py::test_a_finished_download_restarts_without_rehash",
            "tests/engine/test_engine.py::test_truncated_seed_file_is_rechecked",
            "tests/engine/test_engine.py::test_relocate_keeps_seeding_and_survives_restart",
        ),
    ),
    Target(
        "signing",
        "meshmedia/manifest/signing.py",
        ("tests/manifest/test_signing.py",),
    ),
)


def scratch_copy(target: Target, where: Path) -> Path:
    """The checkout's package, tests and config in `where`, set up to mutate one module."""
    for name in ("meshmedia", "tests"):
        shutil.copytree(ROOT / name, where / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.cfg", "setup.py", "pyproject.toml"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, where / name)
    tests = [t for t in target.tests if (ROOT / t.split("::")[0]).exists()]
    options = {
        "source_paths": ["meshmedia"],
        "only_mutate": [target.path],
        # -n 0: one process (pyproject's addopts ask xdist for two workers).
        "pytest_add_cli_args": [
            *("-p", "no:cacheprovider", "-n", "0", "-x", "-q", "-m", "not system"),
        ],
        "pytest_add_cli_args_test_selection": tests,
        "use_git_change_detection": False,
        # The wording of a log line is not a promise (what a user must see is a Problem
        # or an HTTP reason, and those are mutated); see native_notes/testing.md.
        "do_not_mutate_patterns": [r"^\s*(log|self\.log)\.(debug|info|warning|error|exception)\("],
    }
    with (where / "pyproject.toml").open("a", encoding="utf-8") as out:
        out.write("\n[tool.mutmut]\n")
        for key, value in options.items():
            out.write(f"{key} = {json.dumps(value)}\n")
    return where


def stop_hung_workers(mutmut_pid: int, wall: float) -> None:
    """SIGXCPU to each mutant worker of `mutmut_pid` running longer than `wall` seconds.

    mutmut limits a worker's CPU seconds only; a mutant that makes a test block (the
    watcher's close() joining a worker that never stops) used no CPU and held the run
    for good: why only 38 of the watcher's 417 mutants ran in 720 s. mutmut counts a
    worker ended by SIGXCPU as a timeout, i.e. killed, as for its own limit.
    """
    clock_ticks = os.sysconf("SC_CLK_TCK")
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == mutmut_pid and uptime - int(fields[19]) / clock_ticks > wall:
            print(f"  stopping a hung mutant worker ({wall:.0f} s): {entry.name}", flush=True)
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGXCPU)


def run_module(
    target: Target,
    budget: float,
    children: int,
    survivors: bool,
    *,
    wall: float = 120.0,
    keep: Path | None = None,
) -> dict[str, int]:
    """mutmut run for one module within `budget` seconds; the count of each outcome.

    With `keep`, the scratch copy is `keep/<module>` and stays: a later run with the same
    `keep` goes on where a budget stopped this one (mutmut leaves a mutant that has a
    result alone), as long as the module's source did not change in between.
    """
    with contextlib.ExitStack() as stack:
        if keep is None:
            tmp = stack.enter_context(
                tempfile.TemporaryDirectory(prefix=f"meshmedia-mutation-{target.name}-")
            )
            where = scratch_copy(target, Path(tmp))
        else:
            where = keep / target.name
            if not (where / "pyproject.toml").exists():
                where.mkdir(parents=True, exist_ok=True)
                scratch_copy(target, where)
            elif (where / target.path).read_bytes() != (ROOT / target.path).read_bytes():
                raise SystemExit(f"{where} holds another version of {target.path}: remove it")
        # mutmut puts mutants/ first in its own sys.path; a child process runs unmutated code
        env = {**os.environ, "PYTHONPATH": str(where), "CI": "", **dict(target.env)}
        mutmut = [sys.executable, "-m", "mutmut"]
        started = time.monotonic()
        log = (where / "mutmut.log").open("a")
        run = subprocess.Popen(
            [*mutmut, "run", "--max-children", str(children)],
            cwd=where, env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        finished = True
        while run.poll() is None:
            if time.monotonic() - started > budget:
                run.kill()
                run.wait()
                finished = False
                break
            stop_hung_workers(run.pid, wall)
            time.sleep(2)
        log.close()
        took = time.monotonic() - started
        listing = subprocess.run(
            [*mutmut, "results", "--all", "true"],
            cwd=where, env=env, capture_output=True, text=True, check=False,
        ).stdout  # fmt: skip
        counts: dict[str, int] = {}
        lost: list[str] = []
        for line in listing.splitlines():
            name, _, status = line.strip().rpartition(": ")
            if not name:
                continue
            counts[status] = counts.get(status, 0) + 1
            if status == "survived":
                lost.append(name)
        counts["seconds"] = round(took)
        if not counts.get("killed") and not counts.get("survived"):
            print((where / "mutmut.log").read_text()[-3000:], file=sys.stderr)
        counts["finished"] = int(finished)
        if survivors:
            for name in lost:
                diff = subprocess.run(
                    [*mutmut, "show", name], cwd=where, env=env,
                    capture_output=True, text=True, check=False,
                ).stdout  # fmt: skip
                print(diff.rstrip(), flush=True)
        return counts


def run_hand(cases_file: Path) -> None:
    """Apply each textual mutant of `cases_file` to a scratch copy, run its tests, report.

    A case is {"name", "file", "old", "new", "tests"}: `old` (the first occurrence)
    becomes `new` in `file`. For survivors read by hand and tests written after the
    mutmut run (mutmut never saw them), and for code mutmut cannot reach (run at import).
    """
    cases = json.loads(cases_file.read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory(prefix="meshmedia-hand-") as tmp:
        where = Path(tmp)
        for name in ("meshmedia", "tests"):
            shutil.copytree(ROOT / name, where / name, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy2(ROOT / "pyproject.toml", where / "pyproject.toml")
        env = {**os.environ, "PYTHONPATH": str(where), "CI": ""}
        for case in cases:
            path = where / case["file"]
            original = path.read_text(encoding="utf-8")
            if case["old"] not in original:
                print(f"{case['name']:28} not found (the code changed)", flush=True)
                continue
            path.write_text(original.replace(case["old"], case["new"], 1), encoding="utf-8")
            try:
                result = subprocess.run(
                    [sys.executable, "-m", "pytest", "-q", "-x", "-n", "0",
                     "-p", "no:cacheprovider", "-p", "no:warnings", *case["tests"]],
                    cwd=where, env=env, capture_output=True, text=True, check=False,
                )  # fmt: skip
            finally:
                path.write_text(original, encoding="utf-8")
            outcome = "killed" if result.returncode != 0 else "SURVIVED"
            print(f"{case['name']:28} {outcome}", flush=True)


def score(counts: dict[str, int]) -> str:
    """killed (timeouts count as killed, as mutmut does) over the mutants that ran."""
    killed = counts.get("killed", 0) + counts.get("timeout", 0)
    ran = killed + counts.get("survived", 0) + counts.get("suspicious", 0)
    return f"{100 * killed / ran:.1f}%" if ran else "n/a"


def main() -> None:
    """Run the chosen modules one after the other and print a line per module."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help="names from --list (default: all)")
    parser.add_argument("--budget", type=float, default=1200, help="seconds per module")
    parser.add_argument("--children", type=int, default=1, help="mutants run in parallel")
    parser.add_argument(
        "--wall", type=float, default=120, help="seconds a mutant may run (SIGXCPU after)"
    )
    parser.add_argument("--survivors", action="store_true", help="print each survivor's diff")
    parser.add_argument("--list", action="store_true", help="list the modules and tests")
    parser.add_argument("--hand", type=Path, help="a JSON file of textual mutants to check")
    parser.add_argument(
        "--keep", type=Path, help="keep each module's scratch copy here; a later run resumes"
    )
    args = parser.parse_args()
    if args.hand:
        run_hand(args.hand)
        return
    chosen = [t for t in TARGETS if not args.modules or t.name in args.modules]
    if args.list:
        for target in TARGETS:
            print(f"{target.name:10} {target.path:34} {' '.join(target.tests)}")
        return
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    for target in chosen:
        counts = run_module(
            target, args.budget, args.children, args.survivors, wall=args.wall, keep=args.keep
        )
        outcomes = " ".join(f"{k}={v}" for k, v in sorted(counts.items()))
        print(f"{target.name:10} score {score(counts):>6}  {outcomes}", flush=True)


if __name__ == "__main__":
    main()
