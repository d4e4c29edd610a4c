"""The README's commands run as shown, and the README and docs/ link only to what exists.

Every fenced block right after a ``<!-- ci: run -->`` line in README.md is run: a ``bash`` block
line by line (``\\`` continues a line, ``pip`` lines are skipped: the test runs in the installed
checkout), a ``python`` block as one program. They run from a folder laid out like the checkout
(its top-level entries linked in, ``../shared/data`` pointing at the real data), so what they
write stays in a temporary folder. Only commands that need no training data are marked; they
need the real ``dlib_faces`` photos and skip without them.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mtcnn.config import data_root

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
MARK = "<!-- ci: run -->"
MAX_README_LINES = 250


def marked_blocks(text: str) -> list[tuple[str, str]]:
    """``(language, body)`` of every fenced block that follows the marker (blank lines allowed)."""
    return re.findall(r"<!-- ci: run -->[ \t]*\n(?:[ \t]*\n)*```(\w+)[ \t]*\n(.*?)\n```", text, re.S)


def shell_commands(body: str) -> list[str]:
    """The commands of a bash block: continuation lines joined, blank, comment and pip lines left out."""
    lines = body.replace("\\\n", " ").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith(("#", "pip "))]


def readme_commands() -> list[tuple[str, str]]:
    """``("bash", command)`` and ``("python", program)`` in README order."""
    out: list[tuple[str, str]] = []
    for language, body in marked_blocks(README.read_text(encoding="utf-8")):
        if language in ("bash", "sh", "shell"):
            out.extend(("bash", c) for c in shell_commands(body))
        elif language == "python":
            out.append(("python", body))
        else:
            raise AssertionError(f"README: a '{MARK}' block in '{language}', which this test cannot run")
    return out


COMMANDS = readme_commands()


def _command_id(item: tuple[str, str]) -> str:
    kind, text = item
    if kind == "python":
        return "python-block"
    words = [w for w in text.split("#")[0].split()[1:] if not w.startswith("../")]
    return " ".join(words[:3])[:60]


def test_readme_is_short():
    assert len(README.read_text(encoding="utf-8").splitlines()) <= MAX_README_LINES


def test_the_marked_commands_cover_what_a_new_user_runs():
    # A marker lost in an edit must not silently stop these commands from being checked.
    shell = [text for kind, text in COMMANDS if kind == "bash"]
    for needed in ("tools/detect.py", "tools/export.py --format onnx", "tools/export.py --format torchscript",
                   "tools/benchmark.py --help", "tools/evaluate.py detection"):
        assert any(needed in c for c in shell), f"no README command marked '{MARK}' runs {needed}"
    assert any(kind == "python" for kind, _ in COMMANDS), f"the README's Python example is not marked '{MARK}'"
    assert "pip install -e \".[test,onnx]\" && python -m pytest" in README.read_text(encoding="utf-8"), (
        "CI (.ci/run) runs the README's test command; keep it in the README")


@pytest.fixture(scope="module")
def checkout_copy(tmp_path_factory) -> Path:
    """A folder laid out like the checkout beside its data: ``<tmp>/checkout/*`` link to the real
    top-level entries and ``<tmp>/shared/data`` to the data, so ``../shared/data`` resolves and
    outputs stay in ``<tmp>/checkout``."""
    data = data_root()
    if not (data / "dlib_faces" / "bald_guys.jpg").is_file():
        pytest.skip(f"the README's commands read dlib's photos: {data / 'dlib_faces'} not found (set MTCNN_DATA)")
    base = tmp_path_factory.mktemp("readme")
    (base / "shared").mkdir()
    (base / "shared" / "data").symlink_to(data.resolve(), target_is_directory=True)
    work = base / "checkout"
    work.mkdir()
    for entry in ROOT.iterdir():
        if entry.name not in (".git", ".venv", ".pytest_cache"):
            (work / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    return work


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    # `python` in a command is this interpreter; the package comes from the checkout either way.
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.pop("MTCNN_WEIGHTS", None)  # the README's commands run the shipped weights
    return env


@pytest.mark.data
@pytest.mark.parametrize("item", COMMANDS, ids=[_command_id(c) for c in COMMANDS])
def test_readme_command_runs(item, checkout_copy):
    kind, text = item
    if "onnx" in text and importlib.util.find_spec("onnxruntime") is None:
        pytest.skip('onnxruntime is not installed (pip install -e ".[onnx]")')
    if kind == "bash":
        run = subprocess.run(["bash", "-c", text], cwd=checkout_copy, env=_environment(),
                             capture_output=True, text=True, timeout=300)
    else:
        run = subprocess.run([sys.executable, "-"], input=text, cwd=checkout_copy, env=_environment(),
                             capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"README command failed ({run.returncode}):\n{text}\n--- stdout\n{run.stdout[-3000:]}\n--- stderr\n{run.stderr[-3000:]}"
    assert "Traceback" not in run.stderr, run.stderr[-3000:]


# --- links ------------------------------------------------------------------------------------

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _prose(text: str) -> str:
    """The text without fenced code blocks and inline code, where brackets are not links."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def _anchors(markdown: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown file (lower case, punctuation dropped, spaces to -)."""
    seen: dict[str, int] = {}
    anchors = set()
    for line in re.sub(r"```.*?```", "", markdown.read_text(encoding="utf-8"), flags=re.S).splitlines():
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page):
    broken = []
    for target in LINK.findall(_prose(page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: {file} does not exist")
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            broken.append(f"{target}: no heading '#{anchor}' in {file.name}")
    assert not broken, f"{page.name}: broken links:\n" + "\n".join(broken)


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_docs_name_no_machine_paths(page):
    # Commands must work from a fresh clone: placeholders ({gen}, {data}, {runs}, {webfaces}) or
    # relative paths (../gen, ../shared/data), never this project's machines' folders.
    lines = [f"{i}: {line}" for i, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1) if "/work/" in line]
    assert not lines, "\n".join(lines)
